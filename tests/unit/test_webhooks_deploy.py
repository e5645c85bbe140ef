"""Webhooks are deployable (issue 17): the compose deployment and `make airflow` give the receiver what it reads.

What the receiver and the micro-batch read: the Airflow connection ``ecomsync_webhooks`` (the BigCommerce hooks'
shared secret, ``airflow_backend.webhook_secret``), ``webhooks.receiver_url`` in the pipeline configuration (the
URL the hooks are registered at and Square signs), the warehouse (``tasks.warehouse_url``: the connection
``warehouse_default``), and a ``webhook_sync`` DAG that is not paused (Asset events do not queue a paused DAG).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from devstack.airflow import RECEIVER_PREFIX, with_webhooks
from ecomsync.config import load_config
from ecomsync.webhooks.airflow_backend import WEBHOOKS_CONN_ID
from ecomsync.webhooks.microbatch import dbt_selection

ROOT = Path(__file__).resolve().parents[2]
CONN_VAR = f"AIRFLOW_CONN_{WEBHOOKS_CONN_ID.upper()}"


def test_compose_gives_the_api_server_the_secret_and_the_warehouse():  # B2, S4, P6
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    common = compose["x-airflow-common"]
    api = compose["services"]["airflow-apiserver"]
    assert api["command"] == "api-server" and "8080:8080" in api["ports"]
    # every Airflow container reads config/connections.env; its example defines the webhook connection
    assert "./config/connections.env" in [entry["path"] for entry in common["env_file"]]
    example = json.loads(dotenv_values(ROOT / "config" / "connections.env.example")[CONN_VAR])
    assert example["password"].startswith("<"), "a placeholder, never a real secret"
    # the receiver finds the warehouse through the same connection as the tasks (no WAREHOUSE_URL needed)
    assert "AIRFLOW_CONN_WAREHOUSE_DEFAULT" in common["environment"]
    assert "${AIRFLOW_PROJ_DIR:-.}/plugins:/opt/airflow/plugins" in api["volumes"]
    assert "webhooks.receiver_url" in (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags" / "webhook_sync.py"))


def test_webhook_sync_runs_unpaused(dagbag):  # B2, S4, P1
    from ecomsync.airflow_support import CRM_MARTS

    dag = dagbag.dags["webhook_sync"]
    assert dag.is_paused_upon_creation is False, "a paused DAG is not queued by the receiver's Asset events"
    (task,) = dag.tasks
    assert [outlet.uri for outlet in task.outlets] == [CRM_MARTS.uri], "load_crm follows, pipelined"
    assert dagbag.dags["register_webhooks"].is_paused_upon_creation is not False


def test_microbatch_builds_only_what_the_crm_load_reads():  # P1 (latency), B2
    assert dbt_selection({"bigcommerce": [], "square": []}) == []
    selection = dbt_selection({"bigcommerce": [], "square": ["L1"]})
    assert selection == ["source:square+,+path:models/marts/crm", "source:state+,+path:models/marts/crm"]
    assert all(",+path:models/marts/crm" in part for part in selection), "segments are left to the schedule"
    # a source never built (fresh warehouse) is built with the changed one: the unioned models read both
    assert dbt_selection({"bigcommerce": ["s"], "square": []}, frozenset({"square"})) == [
        "source:bigcommerce+,+path:models/marts/crm", "source:square+,+path:models/marts/crm",
        "source:state+,+path:models/marts/crm"]
    assert dbt_selection({"bigcommerce": [], "square": []}, frozenset({"square"})) == []


def test_make_airflow_switches_webhooks_on(tmp_path):  # B2, S4: `make airflow` (devstack.stack.start_airflow)
    env = with_webhooks({"AIRFLOW_HOME": str(tmp_path / "home")}, 45123)
    config = load_config(Path(env["ECOMSYNC_CONFIG"]))
    assert config.webhook_receiver_url == f"http://127.0.0.1:45123{RECEIVER_PREFIX}"
    assert [s.store_hash for s in config.stores] == [s.store_hash for s in load_config().stores]
    secret = json.loads(env[CONN_VAR])["password"]
    assert len(secret) >= 32
    secret_file = tmp_path / "home" / "webhook_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    again = with_webhooks({"AIRFLOW_HOME": str(tmp_path / "home")}, 45999)
    assert json.loads(again[CONN_VAR])["password"] == secret, "one secret per Airflow home: hooks stay valid"
    assert load_config(Path(again["ECOMSYNC_CONFIG"])).webhook_receiver_url.startswith("http://127.0.0.1:45999/")

    # a receiver URL the user set (e.g. a tunnel) is kept
    own = yaml.safe_load((ROOT / "config" / "pipeline.yml").read_text())
    own["webhooks"] = {"receiver_url": "https://hooks.example.com/ecomsync/webhooks"}
    (tmp_path / "own.yml").write_text(yaml.safe_dump(own))
    kept = with_webhooks({"AIRFLOW_HOME": str(tmp_path / "h2"), "ECOMSYNC_CONFIG": str(tmp_path / "own.yml")}, 1)
    assert load_config(Path(kept["ECOMSYNC_CONFIG"])).webhook_receiver_url == own["webhooks"]["receiver_url"]
