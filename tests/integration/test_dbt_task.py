"""The transform task's dbt: failed nodes named, a retry reruns only them, no leaked semaphores (issue 18)."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
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
        cur.execute("drop table state.connections")  # the one staging model over it fails
    with caplog.at_level(logging.ERROR, logger="ecomsync.tasks"), pytest.raises(DbtRunError):
        tasks.run_dbt_task(["run", "-s", "staging"], warehouse_url, target_path=tmp_path)
    assert "dbt model stg_state__connections: error" in caplog.text
    assert tasks.previous_invocation_failed(tmp_path)

    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(STATE_CONNECTIONS)  # someone fixed the cause
    retried = tasks.run_dbt_task(["retry"], warehouse_url, target_path=tmp_path)
    models = [(node.name, node.status) for node in retried.nodes if node.resource_type == "model"]
    assert models == [("stg_state__connections", "success")]  # the 20-odd models that succeeded did not rerun
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
