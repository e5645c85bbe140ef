"""A real, long-running Airflow on the local stack (issue 18 "A real local Airflow"; P1, P6).

Starts what ``make airflow`` starts (scheduler, dag-processor, triggerer, API server) on a fresh
metadata database, with the pools imported from their one definition; triggers
``extract_bigcommerce`` through the REST API and waits for the Asset chain to run ``transform``
and ``load_crm`` by itself. The Celery variant (``-m celery``) runs the same chain on two
``airflow celery worker`` processes and a Redis broker from the Debian package.
"""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest
import requests
import yaml

from devstack.airflow import Endpoints, LocalAirflow, airflow_env, free_port
from devstack.postgres import PROJECT_ROOT
from ecomsync.airflow_support import POOLS
from sandbox.__main__ import build_apps
from sandbox.core import serve

CHAIN = ("extract_bigcommerce", "transform", "load_crm")


@pytest.fixture
def stack(local_pg):
    apps = build_apps(seed=11, fixtures=None, rate_limits=False)
    servers = {name: serve(app)[0] for name, app in apps.items()}
    urls = {name: f"http://127.0.0.1:{server.server_port}" for name, server in servers.items()}
    suffix = uuid.uuid4().hex[:8]
    # Not under pytest's shared temporary folder: the service logs must survive for a post-mortem.
    tmp_path = PROJECT_ROOT / ".local" / "tests" / f"airflow_{suffix}"
    tmp_path.mkdir(parents=True)
    names = (f"af_warehouse_{suffix}", f"af_airflow_{suffix}")
    warehouse_url, airflow_db_url = (local_pg.ensure_database(name) for name in names)
    config = yaml.safe_load(open("config/pipeline.yml"))
    config["crm"]["requests_per_second"] = 200  # the sandbox enforces no limit here
    config_path = tmp_path / "pipeline.yml"
    config_path.write_text(yaml.safe_dump(config))
    env = airflow_env(warehouse_url=warehouse_url, airflow_db_url=airflow_db_url,
                      endpoints=Endpoints(urls["bigcommerce"], urls["square"], urls["activecampaign"]),
                      home=tmp_path / "airflow", config_path=config_path)
    yield {"env": env, "urls": urls, "warehouse_url": warehouse_url, "home": tmp_path / "airflow"}
    for server in servers.values():
        server.shutdown()
        server.server_close()
    for name in names:
        local_pg.drop_database(name)


class Api:
    def __init__(self, airflow: LocalAirflow):
        self.base = f"{airflow.api_url}/api/v2"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {airflow.token()}"

    def __call__(self, method: str, path: str, **kwargs) -> dict:
        answer = self.session.request(method, f"{self.base}{path}", timeout=60, **kwargs)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else {}

    def wait_for_dag(self, path: str, path_desc: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self("GET", path)
                return
            except AssertionError:
                time.sleep(3)
        raise AssertionError(f"{path_desc} never appeared")

    def runs(self, dag_id: str) -> list[dict]:
        return self("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})["dag_runs"]


def run_chain(airflow: LocalAirflow, timeout: float = 1500) -> Api:
    api = Api(airflow)
    for dag_id in CHAIN:
        api.wait_for_dag(f"/dags/{dag_id}", f"DAG {dag_id}", 240)
    pools = {pool["name"]: pool["slots"] for pool in api("GET", "/pools")["pools"]}
    assert {name: slots for name, (slots, _) in POOLS.items()}.items() <= pools.items()  # P6: from the one file
    for dag_id in CHAIN:
        api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    api("POST", "/dags/extract_bigcommerce/dagRuns", json={"logical_date": None, "conf": {"mode": "incremental"}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        failed = [(dag_id, run["dag_run_id"]) for dag_id in CHAIN for run in api.runs(dag_id)
                  if run["state"] == "failed"]
        assert not failed, f"failed runs: {failed}; logs in {airflow.home / 'logs'}"
        if any(run["state"] == "success" for run in api.runs("load_crm")):
            return api
        time.sleep(5)
    raise AssertionError(f"load_crm did not succeed within {timeout:.0f}s; logs in {airflow.home}")


def crm_contacts(stack) -> int:
    state = requests.get(f"{stack['urls']['activecampaign']}/__admin/activecampaign/state", timeout=30).json()
    return len(state.get("contacts", []))


@pytest.mark.e2e
def test_make_airflow_runs_the_asset_chain_from_a_rest_api_trigger(stack):  # P1, P6
    airflow = LocalAirflow(stack["env"]).start()
    try:
        api = run_chain(airflow)
        assert any(run["state"] == "success" for run in api.runs("transform"))
        assert crm_contacts(stack) > 0
    finally:
        airflow.stop()
    assert not (stack["home"] / "services.pids").exists()


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    port = free_port()
    process = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(50):
        try:
            import redis

            if redis.Redis(host="127.0.0.1", port=port).ping():
                break
        except Exception:
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.celery
def test_celery_executor_runs_the_chain_on_two_workers(stack, redis_url):  # P6
    import psycopg2

    airflow = LocalAirflow(stack["env"], executor="CeleryExecutor", broker_url=redis_url, workers=2,
                           worker_concurrency=1).start()
    try:
        api = run_chain(airflow)
        # Both extract_square's discovery and every store's extract ran: tasks spread over both workers.
        api("POST", "/dags/extract_square/dagRuns", json={"logical_date": None})
        api("PATCH", "/dags/extract_square", json={"is_paused": False})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = [run["state"] for run in api.runs("extract_square")]
            if states and all(state in ("success", "failed") for state in states):
                break
            time.sleep(5)
        airflow_db = stack["env"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")
        with psycopg2.connect(airflow_db) as conn, conn.cursor() as cur:
            cur.execute("select hostname, count(*) from task_instance where state = 'success' group by 1")
            hosts = dict(cur.fetchall())
    finally:
        airflow.stop()
    assert len(hosts) == 2 and all(count >= 1 for count in hosts.values()), hosts
