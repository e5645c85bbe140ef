"""The embedded defaults in one place: Postgres, the sandbox APIs, the Airflow environment.

``make demo`` and ``make stack`` use this. The sandboxes run as one background
process that outlives the command (so a second demo talks to the same CRM);
``make stop`` ends it and the Postgres cluster.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import requests

from devstack.airflow import Endpoints, LocalAirflow, airflow_env, free_port, start_airflow_with_webhooks, stop_services
from devstack.postgres import PROJECT_ROOT, LocalPostgres

LOCAL = PROJECT_ROOT / ".local"
PORTS = {"bigcommerce": int(os.environ.get("SANDBOX_BC_PORT", 8101)),
         "square": int(os.environ.get("SANDBOX_SQUARE_PORT", 8102)),
         "activecampaign": int(os.environ.get("SANDBOX_AC_PORT", 8103))}
PID_FILE = LOCAL / "sandbox.pid"


@dataclass
class Stack:
    postgres: LocalPostgres
    warehouse_url: str
    endpoints: Endpoints
    sandboxes_fresh: bool  # started by this call: their state (the CRM) is empty

    def env(self) -> dict[str, str]:
        return airflow_env(warehouse_url=self.warehouse_url, airflow_db_url=self.postgres.url("airflow"),
                           endpoints=self.endpoints, home=LOCAL / "airflow")


def _url(api: str) -> str:
    return f"http://127.0.0.1:{PORTS[api]}"


def sandboxes_up() -> bool:
    try:
        return all(requests.get(f"{_url(api)}/__admin/faults", timeout=2).ok for api in PORTS)
    except requests.RequestException:
        return False


def start_sandboxes() -> bool:
    """Start the sandbox process unless it already answers; returns True when started now."""
    if sandboxes_up():
        return False
    LOCAL.mkdir(parents=True, exist_ok=True)
    with open(LOCAL / "sandbox.log", "a") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "serve", *[f"--{api}-port={port}" for api, port in PORTS.items()]],
            cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "plugins"), str(PROJECT_ROOT)])})
    PID_FILE.write_text(str(process.pid))
    for _ in range(120):
        if sandboxes_up():
            return True
        if process.poll() is not None:
            break
        time.sleep(0.25)
    raise RuntimeError(f"the sandbox APIs did not start; see {LOCAL / 'sandbox.log'}")


def stop_sandboxes() -> None:
    if PID_FILE.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(PID_FILE.read_text()), signal.SIGTERM)
        PID_FILE.unlink()


def up() -> Stack:
    postgres = LocalPostgres().ensure_running()
    postgres.ensure_database("airflow")
    fresh = start_sandboxes()
    if os.environ.get("WAREHOUSE_URL"):
        warehouse_url = os.environ["WAREHOUSE_URL"]
    else:
        if fresh:
            # New sandboxes hold a new, empty CRM: a warehouse ledger from an earlier stack would lie about it.
            postgres.drop_database("warehouse")
        warehouse_url = postgres.ensure_database("warehouse")
    endpoints = Endpoints(_url("bigcommerce"), _url("square"), _url("activecampaign"))
    return Stack(postgres, warehouse_url, endpoints, fresh)


def start_airflow() -> tuple[LocalAirflow, dict]:
    """``make airflow``: the embedded stack plus a real Airflow (LocalExecutor) left running, with webhooks.

    The sandboxes deliver their webhooks to the receiver on this Airflow's API server (``with_webhooks``: the
    receiver URL in the configuration, the shared secret in the connection ``ecomsync_webhooks``); the hooks
    are registered once Airflow answers. ``webhook_sync`` is unpaused at creation and ``load_crm`` (started by
    its Asset) is unpaused here, so a purchase made through the sandbox admin reaches the CRM sandbox without a
    click. Returns Airflow and the registration report.
    """
    stack = up()
    stop_services(LOCAL / "airflow")  # a second `make airflow` replaces the first
    port = int(os.environ.get("AIRFLOW_API_PORT", 0)) or free_port()
    return start_airflow_with_webhooks(stack.env(), stack.endpoints, port)


def down() -> None:
    stop_services(LOCAL / "airflow")
    stop_sandboxes()
    LocalPostgres().stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["down"]:
        down()
        print("stopped Airflow, the sandboxes and the local Postgres")
    elif sys.argv[1:] == ["airflow"]:
        airflow, hooks = start_airflow()
        print("Airflow is running: scheduler, dag-processor, triggerer, API server "
              f"(logs: {airflow.home / 'services'})")
        print(f"  UI:    {airflow.api_url}")
        print(f"  login: {'admin'} / {airflow.password()}   (SimpleAuthManager; {airflow.home / 'passwords.json'})")
        print(f"  webhooks: receiver {hooks['receiver_url']}; hooks registered on "
              f"{len(hooks['stores'])} BigCommerce store(s) and the Square sandbox; webhook_sync and load_crm are "
              "unpaused, so a purchase made through the sandbox admin (sandbox/README.md) reaches the CRM sandbox "
              "within a minute or so.")
        print("  The other DAGs start paused: unpause them in the UI. `make stop` ends everything.")
    else:
        stack = up()
        print(f"warehouse: {stack.warehouse_url}")
        for name, url in vars(stack.endpoints).items():
            print(f"{name}: {url}")
