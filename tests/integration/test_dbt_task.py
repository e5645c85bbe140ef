"""The transform task's dbt: failed nodes named, a retry reruns only them, no leaked semaphores (issue 18)."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from ecomsync import tasks
from ecomsync.dbt import DbtRunError

ROOT = Path(__file__).resolve().parents[2]
STATE_CONNECTIONS = """
    create table state.connections (
        connection_id text primary key, source text not null, external_id text not null, name text,
        link_url text, enabled boolean not null default true, first_seen_at timestamptz, last_success_at timestamptz)"""


def test_a_retry_reruns_only_the_failed_model_named_in_the_log(warehouse_url, tmp_path, caplog):  # P3, P6
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "dbt"))
    from raw_warehouse_fixture import create_warehouse_tables

    create_warehouse_tables(warehouse_url)
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("drop table state.connections")  # the staging models over it fail (connections, and Square's
        # merchant-wide ones, spread to the location connections through it)
    with caplog.at_level(logging.ERROR, logger="ecomsync.tasks"), pytest.raises(DbtRunError):
        tasks.run_dbt_task(["run", "-s", "staging"], warehouse_url, target_path=tmp_path)
    assert "dbt model stg_state__connections: error" in caplog.text
    failed = set(re.findall(r"dbt model (\w+): error", caplog.text))
    assert tasks.previous_invocation_failed(tmp_path)

    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(STATE_CONNECTIONS)  # someone fixed the cause
    retried = tasks.run_dbt_task(["retry"], warehouse_url, target_path=tmp_path)
    models = [(node.name, node.status) for node in retried.nodes if node.resource_type == "model"]
    assert sorted(models) == sorted((name, "success") for name in failed)  # only those: the 20-odd others did not
    assert len(models) < 20 and "stg_bigcommerce__orders" not in failed
    assert not tasks.previous_invocation_failed(tmp_path)


def test_a_retry_after_a_run_that_left_no_failure_builds_again(tmp_path):  # P3
    assert not tasks.previous_invocation_failed(tmp_path)  # no run_results.json: `dbt retry` would do nothing
    (tmp_path / "run_results.json").write_text('{"results": [{"status": "success"}]}')
    assert not tasks.previous_invocation_failed(tmp_path)


CHILD = textwrap.dedent("""
    import os, sys
    from ecomsync import tasks
    tasks.run_dbt_task(["parse"], sys.argv[1], target_path=sys.argv[2])
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)  # as Airflow's task process ends: no atexit, no finalizers
""")


def test_no_leaked_semaphore_errors_when_the_task_process_ends(warehouse_url, tmp_path):  # P6
    done = subprocess.run([sys.executable, "-c", CHILD, warehouse_url, str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}",
                                                    "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaked semaphore" not in done.stderr, done.stderr[-2000:]


# -- a scheduled build that nothing feeds (issue 16: a cycle costs what changed) ------------------------------

def _fixture_warehouse(url: str) -> None:
    from datetime import UTC, datetime

    sys.path.insert(0, str(ROOT / "tests" / "integration" / "dbt"))
    from raw_warehouse_fixture import create_warehouse_tables, land_hand_checked_fixture

    create_warehouse_tables(url)
    land_hand_checked_fixture(url, datetime.now(UTC))


def _models(result_nodes) -> set[str]:
    return {node.name for node in result_nodes if node.resource_type == "model"}


def test_a_scheduled_build_with_nothing_landed_rebuilds_only_the_clock_models(warehouse_url, tmp_path):  # P3, issue 16
    import dataclasses
    import json

    from ecomsync.build_inputs import TIME_DEPENDENT_MODELS
    from ecomsync.config import load_config

    config = load_config()
    _fixture_warehouse(warehouse_url)
    first = tasks.transform(config, warehouse_url, target_path=tmp_path)
    assert first["build"] == "build" and first["nodes"]["model"] > 20 and "unit_test" not in first["nodes"]

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    clock_models, todo = set(), [f"model.ecomsync.{name}" for name in TIME_DEPENDENT_MODELS]
    while todo:  # the models downstream of the clock models, from dbt's own graph
        unique_id = todo.pop()
        if unique_id.startswith("model.") and unique_id.split(".")[-1] not in clock_models:
            clock_models.add(unique_id.split(".")[-1])
            todo += manifest["child_map"][unique_id]
    assert {"abandoned_carts", "segment_members"} <= clock_models
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:  # a tick no model past staging reads
        cur.execute("update state.connections set last_success_at = now()")
        # when the clock models next change: no open checkout waits to turn abandoned; the next day
        cur.execute("select model, due_at = 'infinity', due_at = date_trunc('day', now() at time zone 'UTC') "
                    "at time zone 'UTC' + interval '1 day' from intermediate.clock_due order by 1")
        assert cur.fetchall() == [("abandoned_carts", True, False), ("segment_members", False, True)]
        cur.execute("select to_regclass('crm.contacts')::oid, to_regclass('segments.segment_members')::oid")
        relations = cur.fetchone()
    idle = tasks.transform(config, warehouse_url, target_path=tmp_path)
    assert idle["build"] == "nothing" and idle["nodes"] == {} and idle["command"] is None, idle["reason"]
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:  # no dbt ran: nothing rebuilt
        cur.execute("select to_regclass('crm.contacts')::oid, to_regclass('segments.segment_members')::oid")
        assert cur.fetchone() == relations
        cur.execute("update intermediate.clock_due set due_at = now() where model = 'segment_members'")  # midnight
    second = tasks.transform(config, warehouse_url, target_path=tmp_path)
    assert second["build"] == "time_dependent", second["reason"]
    assert second["nodes"]["model"] == len(clock_models) and "unit_test" not in second["nodes"]
    assert tasks.transform(config, warehouse_url, target_path=tmp_path)["build"] == "nothing"  # due tomorrow again

    # A checkout left open 40 minutes ago lands: built, it is not a cart yet, and is due in 20 minutes
    # (var abandoned_cart_after_minutes: 60); after that the clock turns it abandoned.
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "dbt"))
    from raw_warehouse_fixture import STORE_A, bigcommerce_order, land, rfc2822
    left_open = rfc2822(datetime.now(UTC) - timedelta(minutes=40))
    land(warehouse_url, "bigcommerce_customers", [(STORE_A, "99", {
        "id": 99, "email": "open@example.com", "first_name": "Open", "last_name": "Checkout", "phone": "",
        "date_created": "2024-01-01T00:00:00Z", "date_modified": "2024-01-01T00:00:00Z"})])
    land(warehouse_url, "bigcommerce_orders", [(STORE_A, "1099", bigcommerce_order(
        1099, 99, 0, email="open@example.com", total="5.0000", created=left_open, modified=left_open))])
    assert tasks.transform(config, warehouse_url, target_path=tmp_path)["build"] == "build"
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("select due_at - now() from intermediate.clock_due where model = 'abandoned_carts'")
        assert timedelta(minutes=15) < cur.fetchone()[0] <= timedelta(minutes=20)
        cur.execute("select count(*) from crm.abandoned_carts where external_checkout_id = '1099'")
        assert cur.fetchone()[0] == 0
    assert tasks.transform(config, warehouse_url, target_path=tmp_path)["build"] == "nothing"

    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:  # one order changes in raw
        cur.execute("update raw.bigcommerce_orders set payload = payload || '{\"status_id\": 5}', loaded_at = now() "
                    "where pk = (select min(pk) from raw.bigcommerce_orders)")
    assert tasks.transform(config, warehouse_url, target_path=tmp_path)["build"] == "build"

    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:  # someone dropped a mart
        cur.execute("drop table crm.contacts cascade")
    rebuilt = tasks.transform(config, warehouse_url, target_path=tmp_path)
    assert rebuilt["build"] == "build"
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('crm.contacts') is not null")
        assert cur.fetchone()[0]

    changed_vars = dataclasses.replace(config, dbt_vars={**config.dbt_vars, "abandoned_cart_after_minutes": 61})
    assert tasks.transform(changed_vars, warehouse_url, target_path=tmp_path)["build"] == "build"
    full = tasks.transform(changed_vars, warehouse_url, full_refresh=True, target_path=tmp_path)
    assert full["build"] == "full_refresh" and full["nodes"].get("unit_test", 0) > 0
    assert tasks.transform(changed_vars, warehouse_url, target_path=tmp_path)["build"] == "nothing"  # 1099: later


@pytest.mark.parametrize("write", ["insert", "update", "delete", "no-op upsert", "tick"])
def test_every_kind_of_write_to_what_dbt_reads_moves_the_inputs_fingerprint(warehouse_url, write):  # P3, issue 16
    from ecomsync.build_inputs import inputs_fingerprint
    from ecomsync.warehouse import RAW_TABLES, RawRecord, Warehouse

    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_schema()
    with warehouse.transaction() as conn:
        for table in RAW_TABLES:
            warehouse.land(conn, table, "c1", [RawRecord("1", {"id": 1}, None), RawRecord("2", {"id": 2}, None)],
                           "r1", "historical")
        with conn.cursor() as cur:
            cur.execute("insert into state.connections (connection_id, source, external_id, name) "
                        "values ('c1', 'bigcommerce', 'c1', 'C1')")

    def fingerprint() -> str:
        with warehouse.transaction() as conn, conn.cursor() as cur:
            return inputs_fingerprint(cur, {})

    for table in RAW_TABLES:  # every raw table, through the real write paths where there is one
        before = fingerprint()
        with warehouse.transaction() as conn, conn.cursor() as cur:
            if write == "insert":
                warehouse.land(conn, table, "c1", [RawRecord("3", {"id": 3}, None)], "r2", "incremental")
            elif write == "update":
                warehouse.land(conn, table, "c1", [RawRecord("1", {"id": 1, "v": 2}, None)], "r2", "incremental")
            elif write == "delete":
                cur.execute(f"delete from raw.{table} where pk = '2'")
            elif write == "no-op upsert":  # a re-landed page that changes nothing
                warehouse.land(conn, table, "c1", [RawRecord("1", {"id": 1}, None)], "r2", "incremental")
            else:
                cur.execute("update state.connections set last_success_at = now()")
        assert (fingerprint() != before) == (write in ("insert", "update", "delete")), table
    with warehouse.transaction() as conn, conn.cursor() as cur:
        before = fingerprint()
        cur.execute("update state.connections set enabled = false")
    assert fingerprint() != before  # a state change the models read


def test_the_clock_models_and_the_ticking_columns_lists_are_complete(tmp_path):  # P3, issue 16
    # Every model that reads the clock is rebuilt by a no-change cycle; no model past staging reads a column
    # the fingerprint leaves out. Read from dbt's own parse of the project.
    import json
    import re

    from ecomsync.build_inputs import TICKING_COLUMNS, TIME_DEPENDENT_MODELS
    from ecomsync.dbt import run_dbt

    run_dbt(["parse"], "postgresql://postgres@127.0.0.1:1/unused", target_path=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    macros = {m["name"]: m["macro_sql"] for m in manifest["macros"].values() if m["package_name"] == "ecomsync"}
    clock = re.compile(r"\b(now\(\)|current_date|current_timestamp|localtimestamp|run_started_at|clock_timestamp)",
                       re.I)
    # The incremental models' bookkeeping reads the clock (when a build started, which contact changes to keep,
    # which rows a scheduled test checks) but never decides a model's rows: incremental equals full refresh
    # (tests/integration/dbt/test_dbt_incremental.py).
    bookkeeping = {"record_contact_changes", "record_incremental_watermark", "get_where_subquery",
                   "prepare_order_history_rebuild", "prepare_profile_rebuild", "delete_rows_not_in",
                   "prepare_customers_rebuild", "record_rebuilt_customers", "record_definition"}
    clock_macros = {name for name, body in macros.items() if clock.search(body)} - bookkeeping
    reads_clock = {node["name"] for node in manifest["nodes"].values() if node["resource_type"] == "model"
                   and (clock.search(node["raw_code"]) or set(node["depends_on"]["macros"]) & {
                       f"macro.ecomsync.{name}" for name in clock_macros})}
    assert reads_clock and reads_clock <= set(TIME_DEPENDENT_MODELS), reads_clock
    ticking = re.compile(r"\b(" + "|".join(c for cols in TICKING_COLUMNS.values() for c in cols) + r")\b")
    past_staging = [node["name"] for node in manifest["nodes"].values()
                    if node["resource_type"] == "model" and not node["name"].startswith("stg_state__")
                    and ticking.search(node["raw_code"])]
    assert past_staging == []


def test_the_artifacts_are_read_where_dbt_writes_them(tmp_path, monkeypatch):  # P3, P6
    # The bench (and any deployment) may point dbt at DBT_TARGET_PATH: a retry and the build record must read
    # run_results.json / manifest.json there, not in dbt_project/target.
    from ecomsync.dbt import PROJECT_DIR, target_dir

    assert target_dir() == PROJECT_DIR / "target" or "DBT_TARGET_PATH" in __import__("os").environ
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path))
    assert target_dir() == tmp_path and target_dir(tmp_path / "x") == tmp_path / "x"
    (tmp_path / "run_results.json").write_text('{"results": [{"status": "error"}]}')
    assert tasks.previous_invocation_failed()
