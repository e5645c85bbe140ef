"""Every DAG imports cleanly and carries an owner, tags and retries (P1, P6)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))


def test_every_dag_imports_without_errors(dagbag):  # P6
    assert dagbag.import_errors == {}
    assert {"extract_bigcommerce", "extract_square", "transform", "load_crm", "webhook_sync",
            "register_webhooks"} <= set(dagbag.dags)


def test_every_dag_has_owner_tags_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.owner and dag.owner != "airflow", dag_id
        assert dag.tags, dag_id
        assert dag.default_args.get("retries", 0) >= 1, dag_id
        assert dag.max_active_runs == 1, f"{dag_id}: two runs must not interleave"


def test_extract_dags_offer_the_trigger_form(dagbag):  # P1
    for dag_id, target in (("extract_bigcommerce", "store"), ("extract_square", "location")):
        params = dagbag.dags[dag_id].params
        assert params.get_param("mode").schema["enum"] == ["incremental", "catch_up", "historical"]
        assert {"start_date", "end_date", target} <= set(params.keys())
        assert params["mode"] == "incremental"


def test_schedules_and_asset_chain(dagbag):  # P1, B2, S4
    assert dagbag.dags["extract_bigcommerce"].schedule == "*/15 * * * *"
    assert dagbag.dags["extract_square"].schedule == "*/30 * * * *"
    for downstream in ("transform", "load_crm"):
        assert "Asset" in type(dagbag.dags[downstream].timetable).__name__, downstream


def test_extract_tasks_are_mapped_and_pooled(dagbag):
    bc = dagbag.dags["extract_bigcommerce"].get_task("extract_store")
    sq = dagbag.dags["extract_square"].get_task("extract_location")
    load = dagbag.dags["load_crm"].get_task("push")
    assert (bc.pool, sq.pool, load.pool) == ("bigcommerce_api", "square_api", "activecampaign_api")
    assert type(bc).__name__.endswith("MappedOperator") and type(sq).__name__.endswith("MappedOperator")


def test_airflow_plugin_loading_imports_none_of_the_pipeline_modules():  # P6
    # Airflow imports every .py file of the plugins folder as a top-level module named after the
    # file: plugins/ecomsync/http.py would replace the standard library's `http` for every task.
    from airflow.sdk._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(str(ROOT / "plugins"))
    assert errors == {}
    # the real plugins are the top-level modules: the status page (issue 19) and the webhook receiver (issue 17);
    # nothing from plugins/ecomsync/
    assert sorted(type(plugin).__name__ for plugin in plugins) == ["EcomsyncStatusPlugin", "EcomsyncWebhooksPlugin"]
    import http

    assert hasattr(http, "HTTPStatus"), "the standard library's http module was shadowed"


# --- issue 18 / 19: fail fast, time limits, one pool definition, the trigger form, alerts -----------------------
def test_every_task_has_an_execution_timeout(dagbag):  # P6
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} may hang forever"


def test_every_pool_a_task_uses_comes_from_the_one_pools_file(dagbag):  # P6
    import json

    from ecomsync.airflow_support import POOLS_FILE

    defined = json.loads(POOLS_FILE.read_text())
    used = {task.pool for dag in dagbag.dags.values() for task in dag.tasks} - {"default_pool"}
    assert used and used <= set(defined), used - set(defined)
    for spec in defined.values():
        assert spec["slots"] >= 1 and spec["description"]


def _resolve(dag, **values):
    """What the trigger form does before it creates a run: validate every Param against its schema."""
    import copy

    params = copy.deepcopy(dag.params)
    params.update(values)  # each value is resolved against its Param's JSON schema (with a format checker)
    return params.validate()


def test_trigger_form_dates_are_date_fields_validated_before_the_run(dagbag):  # P1 (issue 19 item 4)
    from airflow.sdk.exceptions import ParamValidationError

    for dag_id in ("extract_bigcommerce", "extract_square"):
        dag = dagbag.dags[dag_id]
        for name in ("start_date", "end_date"):
            assert dag.params.get_param(name).schema["format"] == "date"
        assert _resolve(dag, start_date="2025-12-01", end_date="2025-12-31")["start_date"] == "2025-12-01"
        for bad in ("31.12.2025", "2025-13-01", "yesterday"):
            with pytest.raises(ParamValidationError):
                _resolve(dag, start_date=bad)


def test_the_store_is_a_drop_down_of_the_configured_stores(dagbag):  # P1, B1 (issue 19 item 4)
    from airflow.sdk.exceptions import ParamValidationError

    from ecomsync.config import load_config

    dag = dagbag.dags["extract_bigcommerce"]
    schema = dag.params.get_param("store").schema
    stores = load_config().stores
    assert schema["enum"] == ["all", *[s.store_hash for s in stores]]
    assert all(s.name in schema["values_display"][s.store_hash] for s in stores)
    with pytest.raises(ParamValidationError):
        _resolve(dag, store="no-such-store")
    assert "all" == dagbag.dags["extract_square"].params["location"]
    with pytest.raises(ParamValidationError):
        _resolve(dagbag.dags["extract_square"], location="L1; drop table")


def test_the_location_is_a_drop_down_when_the_configuration_lists_locations(tmp_path, monkeypatch):  # P1, S9
    from airflow.dag_processing.dagbag import DagBag

    config = tmp_path / "pipeline.yml"
    config.write_text((ROOT / "config" / "pipeline.yml").read_text().replace(
        "  locations: all\n", "  locations:\n    - {location_id: LMAIN01, name: Main Street}\n"))
    monkeypatch.setenv("ECOMSYNC_CONFIG", str(config))
    bag = DagBag(str(ROOT / "dags" / "extract_square.py"))
    schema = bag.dags["extract_square"].params.get_param("location").schema
    assert schema["enum"] == ["all", "LMAIN01"] and schema["values_display"]["LMAIN01"] == "Main Street (LMAIN01)"


def test_mapped_tasks_are_labelled_from_their_own_arguments(dagbag):  # P5 (issue 19 item 3)
    # Rendered before the task runs (from task.op_kwargs), so a task that fails at once keeps its name.
    import jinja2

    for dag_id, task_id, arg, value in (
            ("extract_bigcommerce", "extract_store", "store", {"store_hash": "k3x9q2m7a1", "name": "Northwind"}),
            ("extract_square", "extract_location", "location", {"location_id": "L1", "name": "Main Street"})):
        template = dagbag.dags[dag_id].get_task(task_id).map_index_template
        task = type("T", (), {"op_kwargs": {arg: value}})()
        assert jinja2.Template(template, undefined=jinja2.StrictUndefined).render(task=task) == value["name"]


def test_an_invalid_configuration_is_an_import_error_naming_file_and_key(tmp_path, monkeypatch):  # P6
    from airflow.dag_processing.dagbag import DagBag

    config = tmp_path / "pipeline.yml"
    config.write_text((ROOT / "config" / "pipeline.yml").read_text().replace("enabled: true", "enabeld: true", 1))
    monkeypatch.setenv("ECOMSYNC_CONFIG", str(config))
    bag = DagBag(str(ROOT / "dags"))
    assert set(bag.import_errors) == {str(p) for p in (ROOT / "dags").glob("*.py")}
    for error in bag.import_errors.values():
        assert str(config) in error and "bigcommerce.stores[0].enabeld: unknown key" in error


def test_alerts_from_the_configuration_reach_every_dag(tmp_path, monkeypatch):  # P6
    from airflow.dag_processing.dagbag import DagBag

    from ecomsync.alerts import WebhookNotifier

    config = tmp_path / "pipeline.yml"
    config.write_text((ROOT / "config" / "pipeline.yml").read_text()
                      + "\nalerts:\n  webhook_conn_id: ops_webhook\n  crm_load_deadline_hours: 6\n")
    monkeypatch.setenv("ECOMSYNC_CONFIG", str(config))
    bag = DagBag(str(ROOT / "dags"))
    assert bag.import_errors == {}
    for dag_id, dag in bag.dags.items():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, WebhookNotifier) and c.conn_id == "ops_webhook" for c in callbacks), task
    [deadline] = bag.dags["load_crm"].deadline
    assert deadline.interval.total_seconds() == 6 * 3600
    # what the dag-processor stores: notifiers and the deadline's callback must serialize
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in bag.dags.items():
        serialized = DagSerialization.to_dict(dag)
        assert serialized["dag"]["dag_id"] == dag_id
    assert "crm_load_deadline_missed" in str(DagSerialization.to_dict(bag.dags["load_crm"]))
