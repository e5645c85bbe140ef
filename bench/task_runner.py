"""Run one pipeline task in this process and report it: ``python -m bench.task_runner <task> '<json>'``.

The tasks are the plain functions of ``ecomsync.tasks`` that the DAGs call, with the shipped
``config/pipeline.yml``. The last stdout line is ``BENCH-RESULT {"result", "wall_s", "max_rss_mb"}``:
the task's own summary, its wall time, and this process's peak resident set size.
"""
from __future__ import annotations

import json
import logging
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.processes import RESULT_PREFIX
from ecomsync import tasks
from ecomsync.config import load_config
from ecomsync.extract import ExtractRequest

# The sandboxes' tokens (sandbox/bigcommerce.py, square.py, activecampaign.py).
BIGCOMMERCE_TOKEN = "sandbox-bc-token-{store_hash}"
SQUARE_TOKEN = "sandbox-square-token"
ACTIVECAMPAIGN_TOKEN = "sandbox-ac-token"


def extract_store(wh_url: str, bc_url: str, store_hash: str, mode: str, run_id: str) -> dict:
    config = load_config()
    credentials = tasks.Credentials(bc_url, BIGCOMMERCE_TOKEN.format(store_hash=store_hash))
    return tasks.extract_store(config, config.store(store_hash), credentials,
                               ExtractRequest(mode=mode, run_id=run_id), wh_url)


def extract_location(wh_url: str, square_url: str, location: dict, mode: str, run_id: str) -> dict:
    return tasks.extract_location(load_config(), location, tasks.Credentials(square_url, SQUARE_TOKEN),
                                  ExtractRequest(mode=mode, run_id=run_id), wh_url)


def transform(wh_url: str, full_refresh: bool) -> dict:
    # DBT_TARGET_PATH (set by the caller) keeps run_results.json apart from other runs in the checkout.
    return tasks.transform(load_config(), wh_url, full_refresh=full_refresh)


def load_crm(wh_url: str, ac_url: str, run_id: str, mode: str, requests_per_second: float) -> dict:
    config = load_config()
    config = replace(config, crm=replace(config.crm, requests_per_second=requests_per_second))
    return tasks.load_crm(config, tasks.Credentials(ac_url, ACTIVECAMPAIGN_TOKEN), wh_url, run_id=run_id, mode=mode)


TASKS: dict[str, Callable[..., Any]] = {"extract_store": extract_store, "extract_location": extract_location,
                                        "transform": transform, "load_crm": load_crm}


def peak_rss_mb() -> float:
    """This process's peak RSS. ``ru_maxrss`` survives execve on Linux, so a child would report at least
    its parent's RSS at fork time; VmHWM belongs to the new address space only."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    task, arguments = argv[0], json.loads(argv[1])
    started = time.monotonic()
    result = TASKS[task](**arguments)
    wall = time.monotonic() - started
    print(RESULT_PREFIX + json.dumps({"result": result, "wall_s": round(wall, 3), "max_rss_mb": peak_rss_mb()},
                                     default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
