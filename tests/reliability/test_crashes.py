"""Crashes (issue 9, item 2): the extract and the CRM load are killed with SIGKILL at a random request
(several seeds), then run again. The warehouse and the CRM then equal an uninterrupted run's exactly:
nothing doubled, nothing skipped."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pipeline_harness import (
    Sandboxes,
    crm_state,
    differences,
    duplicates,
    extract_all,
    run_pipeline,
    settings_for,
    warehouse_state,
)

from ecomsync.tasks import load_crm, transform

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEEDS = (1, 2, 3)
SOURCE_APIS = ("bigcommerce", "square")


@pytest.fixture(scope="module")
def uninterrupted(local_pg, tmp_path_factory):
    """The reference run, and how many requests its extract and its load made."""
    sandboxes = Sandboxes()
    name = f"test_rel_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    try:
        settings = settings_for(sandboxes.urls, tmp_path_factory.mktemp("reference"))
        run_pipeline(settings, url, "reference")
        yield {"warehouse": warehouse_state(url), "crm": crm_state(sandboxes),
               "extract_requests": sandboxes.request_count(*SOURCE_APIS),
               "load_requests": sandboxes.request_count("activecampaign")}
    finally:
        sandboxes.close()
        local_pg.drop_database(name)


def kill_after_requests(sandboxes: Sandboxes, apis: tuple[str, ...], requests: int, arguments: dict) -> int:
    """Start the stage in a subprocess and SIGKILL it once the sandboxes have answered ``requests`` requests."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "plugins"), str(ROOT)])}
    worker = subprocess.Popen([sys.executable, str(HERE / "crash_worker.py"), json.dumps(arguments)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while worker.poll() is None and time.monotonic() < deadline:
        if sandboxes.request_count(*apis) >= requests:
            worker.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL, worker.stderr.read().decode()[-3000:]
    return worker.returncode


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_extract_and_load_rerun_to_the_same_state(seed, uninterrupted, local_pg, tmp_path):  # B10, S6, P2, P4
    rng = random.Random(seed)
    sandboxes = Sandboxes()
    name = f"test_rel_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    try:
        settings = settings_for(sandboxes.urls, tmp_path)
        arguments = {"urls": sandboxes.urls, "wh_url": url, "folder": str(tmp_path)}

        extract_kill = rng.randint(1, uninterrupted["extract_requests"] - 1)
        kill_after_requests(sandboxes, SOURCE_APIS, extract_kill,
                            {**arguments, "stage": "extract", "run_id": f"crash-{seed}"})
        extract_all(settings, url, f"rerun-{seed}")  # the next run; the dead one's lock died with it
        transform(settings.config, url)

        load_kill = rng.randint(1, uninterrupted["load_requests"] - 1)
        kill_after_requests(sandboxes, ("activecampaign",), load_kill,
                            {**arguments, "stage": "load", "run_id": f"crash-{seed}:load"})
        load_crm(settings.config, settings.crm, url, run_id=f"rerun-{seed}:load")

        assert differences(warehouse_state(url), uninterrupted["warehouse"]) == {}, \
            f"extract killed after {extract_kill} requests"
        assert differences(crm_state(sandboxes), uninterrupted["crm"]) == {}, f"load killed after {load_kill} requests"
        assert all(count == 0 for count in duplicates(sandboxes).values())
    finally:
        sandboxes.close()
        local_pg.drop_database(name)
