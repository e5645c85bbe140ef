"""Errors no retry can fix fail at once and say what to change (issue 18, P6).

Real sandboxes (in-process, ephemeral ports), a real Postgres, real Airflow connections from
``AIRFLOW_CONN_*`` environment variables; no mocks of our own code.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException

from ecomsync import tasks
from ecomsync.airflow_support import credentials
from ecomsync.config import load_config
from ecomsync.extract import ExtractRequest
from sandbox.__main__ import build_apps
from sandbox.core import serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandboxes():
    apps = build_apps(seed=3, fixtures=None, rate_limits=False)
    servers = {name: serve(app)[0] for name, app in apps.items()}
    yield {name: f"http://127.0.0.1:{server.server_port}" for name, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conn(monkeypatch, conn_id: str, host: str, token: str) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}",
                       json.dumps({"conn_type": "http", "host": host, "password": token}))


def test_a_revoked_token_fails_at_once_naming_the_connection_for_every_api(sandboxes, warehouse_url,
                                                                            monkeypatch):  # B10, S7, P6
    config = load_config()
    store = config.stores[0]
    _conn(monkeypatch, store.conn_id, sandboxes["bigcommerce"], "revoked-token")
    _conn(monkeypatch, config.square.conn_id, sandboxes["square"], "revoked-token")
    _conn(monkeypatch, config.crm.conn_id, sandboxes["activecampaign"], "revoked-token")

    started = time.monotonic()
    with pytest.raises(AirflowFailException, match=rf"'{store.conn_id}'.*HTTP 401"):
        with tasks.fail_fast(store.conn_id):
            tasks.extract_store(config, store, credentials(store.conn_id), ExtractRequest(mode="incremental"),
                                warehouse_url)
    with pytest.raises(AirflowFailException, match=rf"'{config.square.conn_id}'.*HTTP 401"):
        with tasks.fail_fast(config.square.conn_id):
            tasks.locations_to_sync(config, credentials(config.square.conn_id))
    # The load reads the (here empty) marts, then asks the CRM for the master list: 401.
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("create schema crm")
        for table in ("connections", "contacts", "ecom_customers", "ecom_orders", "abandoned_carts"):
            cur.execute(f"create table crm.{table} (placeholder int)")
        cur.execute("create table crm.excluded_records "
                    "(connection_id text, record_type text, external_id text, reason text, detail text)")
    with pytest.raises(AirflowFailException, match=rf"'{config.crm.conn_id}'.*HTTP 401"):
        with tasks.fail_fast(config.crm.conn_id):
            tasks.load_crm(config, credentials(config.crm.conn_id), warehouse_url, run_id="revoked")
    assert time.monotonic() - started < 60, "no retry loop may hide a revoked token"


def test_a_missing_connection_fails_at_once_naming_it(monkeypatch):  # P6
    monkeypatch.delenv("AIRFLOW_CONN_BIGCOMMERCE_NOWHERE", raising=False)
    missing = r"'bigcommerce_nowhere' does not exist.*AIRFLOW_CONN_BIGCOMMERCE_NOWHERE"
    with pytest.raises(AirflowFailException, match=missing):
        with tasks.fail_fast("bigcommerce_nowhere"):
            credentials("bigcommerce_nowhere")
    _conn(monkeypatch, "bigcommerce_nowhere", "", "")
    with pytest.raises(AirflowFailException, match="needs a host"):
        with tasks.fail_fast("bigcommerce_nowhere"):
            credentials("bigcommerce_nowhere")


def test_an_unknown_store_or_location_from_the_trigger_form_fails_at_once(sandboxes, monkeypatch):  # P1, P6
    config = load_config()
    with pytest.raises(AirflowFailException, match="store 'nosuchstore' is not in the configuration"):
        with tasks.fail_fast():
            tasks.stores_to_sync(config, "nosuchstore")
    from sandbox.square import TOKEN

    _conn(monkeypatch, config.square.conn_id, sandboxes["square"], TOKEN)
    with pytest.raises(AirflowFailException, match="location 'LNOWHERE' is not a location"):
        with tasks.fail_fast(config.square.conn_id):
            tasks.locations_to_sync(config, credentials(config.square.conn_id), "LNOWHERE")


def test_an_empty_date_range_from_the_trigger_form_fails_at_once():  # P1, P6
    from ecomsync.airflow_support import extract_request

    with pytest.raises(AirflowFailException, match="date range is empty"):
        with tasks.fail_fast():
            extract_request({"mode": "incremental", "start_date": "2025-12-31", "end_date": "2025-12-01"}, "r", "x")


def test_the_warehouse_is_the_airflow_connection_parsed_by_the_postgres_hook(local_pg, warehouse_url,
                                                                              monkeypatch):  # P6
    monkeypatch.setenv("WAREHOUSE_URL", f"postgresql://nobody@127.0.0.1:{_closed_port()}/elsewhere")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_DEFAULT", warehouse_url)
    url = tasks.warehouse_url()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select current_database()")
        assert cur.fetchone()[0] == warehouse_url.rsplit("/", 1)[1]
    monkeypatch.delenv("AIRFLOW_CONN_WAREHOUSE_DEFAULT")
    monkeypatch.setenv("WAREHOUSE_URL", warehouse_url)
    assert tasks.warehouse_url() == warehouse_url  # the local default when no connection is defined


def test_a_down_warehouse_fails_at_once_naming_the_connection(monkeypatch):  # P6
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_DEFAULT", f"postgresql://etl:pw@127.0.0.1:{_closed_port()}/warehouse")
    started = time.monotonic()
    named = r"warehouse \(Airflow connection 'warehouse_default'.*not reachable"
    with pytest.raises(AirflowFailException, match=named):
        with tasks.fail_fast():
            tasks.warehouse_url()
    assert time.monotonic() - started < tasks.WAREHOUSE_CONNECT_TIMEOUT_SECONDS + 5


def test_the_local_runner_refuses_to_start_a_run_when_the_warehouse_is_down(tmp_path):  # P6
    from devstack.airflow import WAREHOUSE_CONN_ID, run_dag

    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path),
           f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}": f"postgresql://etl@127.0.0.1:{_closed_port()}/warehouse"}
    started = time.monotonic()
    with pytest.raises(Exception, match="'warehouse_default'.*not reachable"):
        run_dag(env, "extract_bigcommerce")
    assert time.monotonic() - started < 15
    assert not (tmp_path / "runs").exists(), "no `airflow dags test` child was started"


PARENT = textwrap.dedent("""
    import sys
    from devstack.airflow import run_child
    run_child([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(300)"])
""")


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_children_of_the_local_runner_die_with_it(signal_name):  # P6: no `airflow dags test` left behind
    import signal

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}"})
    child_pid = int(parent.stdout.readline())
    os.kill(parent.pid, getattr(signal, signal_name))
    parent.wait(timeout=30)
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        # a zombie (already dead, not yet reaped by init) counts as gone
        if Path(f"/proc/{child_pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.1)
    os.kill(child_pid, 9)
    pytest.fail(f"the child {child_pid} outlived its parent ({signal_name})")


class _Recorder(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_webhook_notifier_posts_the_failure_to_the_url_in_its_connection(monkeypatch):  # P6
    from ecomsync.alerts import WebhookNotifier, failure_notifiers
    from ecomsync.config import AlertSettings

    _Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_OPS_WEBHOOK", json.dumps(
            {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/hooks/ecomsync"}))
        [notifier] = failure_notifiers(AlertSettings(webhook_conn_id="ops_webhook"))
        assert isinstance(notifier, WebhookNotifier)
        ti = type("TI", (), {"dag_id": "extract_bigcommerce", "task_id": "extract_store", "run_id": "manual__1",
                             "map_index": 0, "rendered_map_index": "Northwind Outdoor", "try_number": 1,
                             "log_url": "http://airflow/log"})()
        notifier({"ti": ti, "exception": RuntimeError("HTTP 401")})
    finally:
        server.shutdown()
        server.server_close()
    [(path, content_type, body)] = _Recorder.received
    assert path == "/hooks/ecomsync" and content_type == "application/json"
    assert body["event"] == "task_failed" and body["rendered_map_index"] == "Northwind Outdoor"
    assert body["dag_id"] == "extract_bigcommerce" and body["error"] == "RuntimeError: HTTP 401"


def test_the_email_notifier_sends_through_the_smtp_connection(monkeypatch):  # P6
    # A real SMTP server on loopback (the standard library's smtpd; this project runs on Python 3.11).
    import asyncore
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import smtpd

    from ecomsync.alerts import failure_notifiers
    from ecomsync.config import AlertSettings

    received = []

    class Server(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            received.append((mailfrom, rcpttos, data.decode()))

    server = Server(("127.0.0.1", 0), None)
    loop = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.1, "count": 100}, daemon=True)
    loop.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": server.socket.getsockname()[1],
             "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "ecomsync@example.com"}}))
        [notifier] = failure_notifiers(AlertSettings(email=["oncall@example.com"], email_conn_id="smtp_alerts"))
        ti = type("TI", (), {"dag_id": "load_crm", "task_id": "push", "run_id": "manual__1", "map_index": -1,
                             "try_number": 1, "max_tries": 2, "hostname": "worker", "state": "failed",
                             "log_url": "http://airflow/log"})()
        notifier({"ti": ti, "exception": RuntimeError("HTTP 401")})
        for _ in range(150):
            if received:
                break
            time.sleep(0.1)
    finally:
        server.close()
    [(sender, recipients, message)] = received
    assert sender == "ecomsync@example.com" and recipients == ["oncall@example.com"]
    assert "Subject: [ecomsync] task_failed: load_crm.push" in message
