"""`make airflow` gives working webhooks on the local stack (issue 17, deployable).

What ``devstack.stack.start_airflow`` runs (``devstack.airflow.start_airflow_with_webhooks``): the configuration
gets ``webhooks.receiver_url`` at the local API server, the secret connection is generated, Airflow starts for
real (scheduler, dag-processor, triggerer, API server with the receiver plugin), the hooks are registered on the
sandboxes and ``webhook_sync`` → ``load_crm`` run unpaused. Nothing else is set by hand here: a purchase made
through the sandbox admin must reach the CRM sandbox by itself.
"""
from __future__ import annotations

import time
import uuid

import pytest
import requests
import yaml

from devstack.airflow import Endpoints, airflow_env, free_port, start_airflow_with_webhooks
from devstack.postgres import PROJECT_ROOT
from sandbox.__main__ import build_apps
from sandbox.core import serve

STORE = "k3x9q2m7a1"


@pytest.mark.e2e
def test_a_purchase_reaches_the_crm_through_webhooks_on_make_airflows_stack(local_pg):  # B2, S4, P1, P6
    apps = build_apps(seed=11, fixtures=None, rate_limits=False)
    servers = {name: serve(app)[0] for name, app in apps.items()}
    urls = {name: f"http://127.0.0.1:{server.server_port}" for name, server in servers.items()}
    suffix = uuid.uuid4().hex[:8]
    work = PROJECT_ROOT / ".local" / "tests" / f"make_airflow_hooks_{suffix}"  # kept for a post-mortem
    work.mkdir(parents=True)
    names = (f"mah_warehouse_{suffix}", f"mah_airflow_{suffix}")
    warehouse_url, airflow_db_url = (local_pg.ensure_database(name) for name in names)
    config = yaml.safe_load(open(PROJECT_ROOT / "config" / "pipeline.yml"))
    config["bigcommerce"]["stores"] = [s for s in config["bigcommerce"]["stores"] if s["store_hash"] == STORE]
    config["crm"]["requests_per_second"] = 200  # the sandbox enforces no limit here
    assert "webhooks" not in config, "nothing about webhooks is configured by hand"
    (work / "pipeline.yml").write_text(yaml.safe_dump(config))
    endpoints = Endpoints(urls["bigcommerce"], urls["square"], urls["activecampaign"])
    env = airflow_env(warehouse_url=warehouse_url, airflow_db_url=airflow_db_url, endpoints=endpoints,
                      home=work / "airflow", config_path=work / "pipeline.yml")
    airflow = None
    try:
        airflow, hooks = start_airflow_with_webhooks(env, endpoints, free_port())
        assert hooks["receiver_url"] == f"{airflow.api_url}/ecomsync/webhooks"
        assert hooks["stores"][STORE]["created"] == 8 and hooks["square"]["created"] == 1
        order = requests.post(f"{urls['bigcommerce']}/__admin/bigcommerce/{STORE}/orders",
                              json={"count": 1, "customer_id": 1}, timeout=10).json()["orders"][0]
        deadline = time.monotonic() + 600
        pushed: set[str] = set()
        while time.monotonic() < deadline and str(order["id"]) not in pushed:
            time.sleep(5)
            state = requests.get(f"{urls['activecampaign']}/__admin/activecampaign/state", timeout=30).json()
            pushed = {str(o.get("externalid")) for o in state.get("ecomOrders", [])}
        deliveries = requests.get(f"{urls['bigcommerce']}/__admin/webhooks", timeout=10).json()["deliveries"]
        assert deliveries and {d["outcome"] for d in deliveries} == {"delivered"}, deliveries[-3:]
        assert str(order["id"]) in pushed, f"the order never reached the CRM; logs in {work}"
    finally:
        if airflow is not None:
            airflow.stop()
        for server in servers.values():
            server.shutdown()
            server.server_close()
        for name in names:
            local_pg.drop_database(name)
