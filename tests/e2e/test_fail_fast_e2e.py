"""A revoked token in a real Airflow run: fails at once, keeps the store's name, tells someone (issue 18, 19).

One ``airflow dags test extract_bigcommerce`` on the sandboxes with one store's token revoked
(the sandbox answers 401 as BigCommerce does) and ``alerts.webhook_conn_id`` pointing at a real
local HTTP server through an Airflow connection.
"""
from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import pytest
import requests
import yaml

from devstack.airflow import Endpoints, airflow, airflow_env, init_airflow
from sandbox.__main__ import build_apps
from sandbox.core import serve

pytestmark = pytest.mark.e2e


class Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_revoked_token_fails_the_store_at_once_by_name_and_alerts(local_pg, tmp_path):  # B10, P5, P6
    apps = build_apps(seed=5, fixtures=None, rate_limits=False)
    servers = {name: serve(app)[0] for name, app in apps.items()}
    urls = {name: f"http://127.0.0.1:{server.server_port}" for name, server in servers.items()}
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    suffix = uuid.uuid4().hex[:8]
    names = (f"ff_warehouse_{suffix}", f"ff_airflow_{suffix}")
    warehouse_url, airflow_db_url = (local_pg.ensure_database(name) for name in names)
    try:
        config = yaml.safe_load(open("config/pipeline.yml"))
        config["alerts"] = {"webhook_conn_id": "ops_webhook"}
        config_path = tmp_path / "pipeline.yml"
        config_path.write_text(yaml.safe_dump(config))
        revoked = config["bigcommerce"]["stores"][1]
        requests.delete(f"{urls['bigcommerce']}/__admin/bigcommerce/{revoked['store_hash']}/token",
                        timeout=30).raise_for_status()
        env = airflow_env(warehouse_url=warehouse_url, airflow_db_url=airflow_db_url,
                          endpoints=Endpoints(urls["bigcommerce"], urls["square"], urls["activecampaign"]),
                          home=tmp_path / "airflow", config_path=config_path)
        env["AIRFLOW_CONN_OPS_WEBHOOK"] = json.dumps({"conn_type": "http",
                                                      "host": f"http://127.0.0.1:{hook.server_port}/alert"})
        init_airflow(env)
        Hook.received = []
        airflow(env, "dags", "test", "extract_bigcommerce", log_path=tmp_path / "run.log", check=False)
        with psycopg2.connect(airflow_db_url) as conn, conn.cursor() as cur:
            cur.execute("select map_index, rendered_map_index, state, try_number from task_instance "
                        "where task_id = 'extract_store' order by map_index")
            rows = cur.fetchall()
    finally:
        hook.shutdown()
        hook.server_close()
        for server in servers.values():
            server.shutdown()
            server.server_close()
        for name in names:
            local_pg.drop_database(name)
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert rows == [(0, config["bigcommerce"]["stores"][0]["name"], "success", 1),
                    (1, revoked["name"], "failed", 1)], log[-3000:]
    assert "AirflowFailException" in log and f"'{revoked['conn_id']}'" in log
    # state failed at try 1 although retries=2: not retried (the old code left it up_for_retry for minutes)
    [alert] = [a for a in Hook.received if a["task_id"] == "extract_store"]
    assert alert["event"] == "task_failed" and alert["rendered_map_index"] == revoked["name"]
    assert revoked["conn_id"] in alert["error"]
