"""Staging views are replaced only when their definition changes (P3, issue 16).

dbt replaced every view on every build (create a new one, rename the old away, drop it: each under an ACCESS
EXCLUSIVE lock), so a scheduled build waited for any open transaction that had read a staging view (a data
engineer's session looking into staging) and every later reader queued behind it; at scale 0.25 the 20 views cost 1–2 s of a
7 s scheduled build for SQL that only changes with the project. ``dbt_project/macros/materializations/view.sql``
leaves in place a view whose comment records the compiled SQL it was built from, and hands every other case to
dbt's own materialization. The class: every view model of the project, listed from dbt's manifest.
"""
from __future__ import annotations

import json
import threading
import time

import psycopg2
import pytest

from ecomsync.dbt import run_dbt

VIEWS = ["-s", "config.materialized:view"]


def views(url: str) -> dict[str, tuple[int, str]]:
    """{schema.view: (oid, comment)} of every view outside the system schemas."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("""select n.nspname || '.' || c.relname, c.oid, obj_description(c.oid, 'pg_class')
                       from pg_class c join pg_namespace n on n.oid = c.relnamespace
                       where c.relkind = 'v' and n.nspname not in ('pg_catalog', 'information_schema')""")
        return {name: (oid, comment) for name, oid, comment in cur.fetchall()}


@pytest.fixture(scope="module")
def built(empty_warehouse, dbt_target):
    run_dbt(["run", *VIEWS], empty_warehouse, target_path=dbt_target)
    manifest = json.loads((dbt_target / "manifest.json").read_text())
    models = {f"{node['schema']}.{node['alias']}" for node in manifest["nodes"].values()
              if node["resource_type"] == "model" and node["config"]["materialized"] == "view"}
    assert len(models) >= 20 and models <= set(views(empty_warehouse))
    return empty_warehouse, models


def test_a_build_leaves_unchanged_views_in_place(built, dbt_target):  # P3, issue 16
    url, models = built
    before = views(url)
    summary = run_dbt(["run", *VIEWS], url, target_path=dbt_target)
    assert {node.name for node in summary.nodes if node.resource_type == "model"} == {
        name.split(".")[1] for name in models}
    assert views(url) == before
    assert all(before[name][1].startswith("dbt model model.ecomsync.") for name in models)


def test_a_view_built_from_other_sql_is_replaced(built, dbt_target):  # P3, issue 16
    # A view an older version of its model left (its comment names another definition), one dropped by hand,
    # one another tool commented, and then a --full-refresh: dbt's materialization runs for each.
    url, models = built
    older, dropped, commented = "staging.stg_bigcommerce__orders", "staging.stg_square__payments", "staging.stg_state__connections"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"comment on view {older} is 'dbt model model.ecomsync.stg_bigcommerce__orders, dbt 1.0.0, "
                    "definition md5 0'")
        cur.execute(f"drop view {dropped}")
        cur.execute(f"comment on view {commented} is 'the connections'")
    before = views(url)
    run_dbt(["run", *VIEWS], url, target_path=dbt_target)
    after = views(url)
    assert set(after) >= models
    replaced = {name for name in models if after[name][0] != before.get(name, (None,))[0]}
    assert replaced == {older, dropped, commented}
    assert after[older][1].startswith("dbt model model.ecomsync.stg_bigcommerce__orders, dbt ")
    assert not after[older][1].endswith("md5 0")
    assert after[commented][1].startswith("dbt model model.ecomsync.stg_state__connections")

    run_dbt(["run", "--full-refresh", *VIEWS], url, target_path=dbt_target)
    refreshed = views(url)
    assert all(refreshed[name][0] != after[name][0] for name in models)
    assert {name: refreshed[name][1] for name in models} == {name: after[name][1] for name in models}


def test_an_open_read_of_the_views_does_not_block_a_build(built, dbt_target):  # P3, issue 16
    # A session has read every view and keeps its transaction open (ACCESS SHARE on each). A scheduled build must
    # not wait for it: no dbt session is ever blocked by it while the build runs.
    url, models = built
    reader = psycopg2.connect(url)
    try:
        with reader.cursor() as cur:
            for name in sorted(models):
                cur.execute(f"select count(*) from {name}")
            cur.execute("select pg_backend_pid()")
            (reader_pid,) = cur.fetchone()
        outcome: dict = {}

        def build() -> None:
            try:
                outcome["summary"] = run_dbt(["run", *VIEWS], url, target_path=dbt_target)
            except Exception as exc:  # reported below, after the reader's locks are released
                outcome["error"] = exc

        builder = threading.Thread(target=build)
        builder.start()
        blocked = []
        # each query its own transaction, so pg_stat_activity is read anew (not `with watcher`: since psycopg2 2.9
        # that opens a transaction even in autocommit)
        watcher = psycopg2.connect(url)
        watcher.autocommit = True
        try:
            with watcher.cursor() as cur:
                while builder.is_alive() and not blocked:
                    cur.execute("select pid, query from pg_stat_activity where %s = any(pg_blocking_pids(pid))",
                                (reader_pid,))
                    blocked = cur.fetchall()
                    time.sleep(0.05)
        finally:
            watcher.close()
    finally:
        reader.close()  # a blocked build goes on once the reader's transaction ends
    builder.join()
    assert not blocked, f"the build waited for the reader's transaction: {blocked}"
    assert "error" not in outcome and outcome["summary"].success
