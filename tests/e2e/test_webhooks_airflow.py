"""The webhook receiver through Airflow's real API server, and the micro-batch as a real Airflow run (issue 17).

``airflow api-server`` loads the plugin ``ecomsync_webhooks`` from plugins/ and serves the receiver at
``/ecomsync/webhooks``; the sandboxes (registered by the pipeline's own registration code) deliver to it.
Secrets come from Airflow connections (``AIRFLOW_CONN_ECOMSYNC_WEBHOOKS``, the Square token); the hand-off
is an Asset event in Airflow's metadata database, which queues ``webhook_sync``; then ``airflow dags test
webhook_sync`` runs the micro-batch for real.
"""
from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid

import psycopg2
import pytest
import requests
import yaml

from devstack.airflow import VENV_BIN, Endpoints, airflow, airflow_env, bigcommerce_token, init_airflow, run_dag
from ecomsync import tasks
from ecomsync.config import load_config
from ecomsync.webhooks import registration
from ecomsync.webhooks.events import ASSET_URI
from ecomsync.webhooks.signatures import BIGCOMMERCE_SECRET_HEADER
from sandbox.__main__ import build_apps
from sandbox.core import serve
from tests.conftest import dict_rows

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret-5f2b9c0d1e"
STORE = "k3x9q2m7a1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def airflow_stack(local_pg, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_hooks")
    apps = build_apps(seed=11, fixtures=None, rate_limits=False)
    servers = {name: serve(app)[0] for name, app in apps.items()}
    urls = {name: f"http://127.0.0.1:{server.server_port}" for name, server in servers.items()}
    suffix = uuid.uuid4().hex[:8]
    warehouse_url = local_pg.ensure_database(f"e2e_hooks_wh_{suffix}")
    airflow_db_url = local_pg.ensure_database(f"e2e_hooks_af_{suffix}")
    port = _free_port()
    receiver_url = f"http://127.0.0.1:{port}/ecomsync/webhooks"
    config = yaml.safe_load(open("config/pipeline.yml"))
    config["bigcommerce"]["stores"] = [s for s in config["bigcommerce"]["stores"] if s["store_hash"] == STORE]
    config["crm"]["requests_per_second"] = 200
    config["webhooks"] = {"receiver_url": receiver_url}
    config_path = home / "pipeline.yml"
    config_path.write_text(yaml.safe_dump(config))
    env = airflow_env(warehouse_url=warehouse_url, airflow_db_url=airflow_db_url,
                      endpoints=Endpoints(urls["bigcommerce"], urls["square"], urls["activecampaign"]),
                      home=home, config_path=config_path)
    env["AIRFLOW_CONN_ECOMSYNC_WEBHOOKS"] = json.dumps({"conn_type": "generic", "password": SECRET})
    init_airflow(env)
    airflow(env, "dags", "reserialize", log_path=home / "reserialize.log")  # registers the DAGs' Assets
    airflow(env, "dags", "unpause", "webhook_sync")  # a paused DAG is not queued by Asset events
    log = open(home / "api-server.log", "w")
    api = subprocess.Popen([str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port),
                            "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v2/version", timeout=2).status_code < 500:
                    break
            except requests.RequestException:
                pass
            assert api.poll() is None, (home / "api-server.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail(f"the API server did not start: {(home / 'api-server.log').read_text()[-3000:]}")

        loaded = load_config(config_path)

        def credentials_for(conn_id: str) -> tasks.Credentials:
            if conn_id.startswith("bigcommerce_"):
                return tasks.Credentials(urls["bigcommerce"], bigcommerce_token(conn_id.split("_", 1)[1]))
            return tasks.Credentials(urls["square"], "sandbox-square-token")

        report = registration.sync_registrations(loaded, credentials_for, SECRET)
        assert report["errors"] == {}, report
        yield {"env": env, "urls": urls, "warehouse_url": warehouse_url, "airflow_db_url": airflow_db_url,
               "receiver": receiver_url, "home": home, "config": loaded, "credentials_for": credentials_for}
    finally:
        api.terminate()
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
        log.close()
        for server in servers.values():
            server.shutdown()
        local_pg.drop_database(f"e2e_hooks_wh_{suffix}")
        local_pg.drop_database(f"e2e_hooks_af_{suffix}")


def _events(stack) -> list[dict]:
    try:
        return dict_rows(stack["warehouse_url"], "select * from raw.webhook_events order by received_at")
    except psycopg2.errors.UndefinedTable:
        return []


def _asset_events(stack) -> list[dict]:
    return dict_rows(stack["airflow_db_url"],
                     "select e.extra from asset_event e join asset a on a.id = e.asset_id where a.uri = %s "
                     "order by e.id", (ASSET_URI,))


def _wait(predicate, timeout: float = 30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_receiver_through_airflows_api_server(airflow_stack):  # B2, S4
    stack = airflow_stack
    bc, sq, receiver = stack["urls"]["bigcommerce"], stack["urls"]["square"], stack["receiver"]
    order = requests.post(f"{bc}/__admin/bigcommerce/{STORE}/orders", json={"count": 1}, timeout=10).json()["orders"][0]
    stored = _wait(lambda: [e for e in _events(stack) if e["object_id"] == str(order["id"])])
    assert len(stored) == 1 and stored[0]["connection_id"] == f"bigcommerce:{STORE}"
    asset_events = _wait(lambda: _asset_events(stack))
    assert len(asset_events) == 1
    assert asset_events[0]["extra"]["connection_id"] == f"bigcommerce:{STORE}", "the Asset event names the store"
    queued = dict_rows(stack["airflow_db_url"], "select target_dag_id from asset_dag_run_queue")
    assert {"target_dag_id": "webhook_sync"} in queued, "the micro-batch DAG is queued"

    # a signed redelivery is a no-op; unsigned or wrongly signed deliveries are refused
    body = stored[0]["payload"]
    replay = requests.post(f"{receiver}/bigcommerce", json=body, headers={BIGCOMMERCE_SECRET_HEADER: SECRET}, timeout=10)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert requests.post(f"{receiver}/bigcommerce", json=body, timeout=10).status_code == 401
    assert requests.post(f"{receiver}/bigcommerce", json=body, headers={BIGCOMMERCE_SECRET_HEADER: "guess"},
                         timeout=10).status_code == 401
    forged = {**body, "data": {"type": "order", "id": 999999}, "hash": "f" * 40}
    assert requests.post(f"{receiver}/bigcommerce", json=forged, timeout=10).status_code == 401
    assert len(_events(stack)) == 1 and len(_asset_events(stack)) == 1, "nothing changed"

    # Square: signed with the subscription's key, which the receiver reads from Square with the connection's token
    sale = requests.post(f"{sq}/__admin/square/payments", json={}, timeout=10).json()
    payment = _wait(lambda: [e for e in _events(stack) if e["scope"] == "payment.created"])
    assert payment and payment[0]["connection_id"] == f"square:{sale['payment']['location_id']}"
    assert requests.post(f"{receiver}/square", json=payment[0]["payload"], timeout=10).status_code == 401
    assert requests.post(f"{receiver}/square", json=payment[0]["payload"],
                         headers={"x-square-hmacsha256-signature": "bm9wZQ=="}, timeout=10).status_code == 401
    deliveries = requests.get(f"{sq}/__admin/webhooks", timeout=10).json()["deliveries"]
    assert deliveries and all(d["outcome"] == "delivered" for d in deliveries), deliveries


def test_event_triggered_run_lands_the_order_through_the_same_code(airflow_stack):  # B2, P1
    stack = airflow_stack
    bc = stack["urls"]["bigcommerce"]
    order = requests.post(f"{bc}/__admin/bigcommerce/{STORE}/orders", json={"count": 1}, timeout=10).json()["orders"][0]
    assert _wait(lambda: [e for e in _events(stack) if e["object_id"] == str(order["id"])])
    run_dag(stack["env"], "webhook_sync", log_dir=stack["home"] / "webhook_sync")
    events = _events(stack)
    assert events and all(e["claimed_by"] for e in events), "the run took every waiting event"
    landed = dict_rows(stack["warehouse_url"], "select pk, sync_mode from raw.bigcommerce_orders "
                       "where connection_id = %s and pk = %s", (f"bigcommerce:{STORE}", str(order["id"])))
    assert landed, "the order named by the webhook was extracted"
    marts = dict_rows(stack["warehouse_url"], "select external_id from crm.ecom_orders where connection_id = %s "
                      "and external_id = %s", (f"bigcommerce:{STORE}", str(order["id"])))
    assert marts or order["customer_id"] == 0, "dbt built the source's models"
