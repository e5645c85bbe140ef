"""state.change_events: every change to what dbt reads that carries no landing time is recorded (issue 16, P3).

The incremental models read these events instead of comparing whole tables with their inputs on every build
(dbt_project/macros/change_events.sql), so a change the triggers miss would leave a stale row until a full
refresh. Each writer is exercised through its real path where there is one (landing, register_connection).
"""
from __future__ import annotations

import psycopg2
import pytest

from ecomsync.warehouse import RAW_TABLES, RawRecord, Warehouse


def events(url: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select relation, connection_id, pk, change from state.change_events order by changed_at, 1, 3")
        return cur.fetchall()


def execute(url: str, statement: str, params: tuple = ()) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement, params)


@pytest.fixture
def warehouse(warehouse_url):
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_schema()
    return warehouse


def test_a_new_warehouse_starts_with_one_event(warehouse):  # P3
    # The deletions before the table existed (a warehouse of an older version) are unknown: the models compare
    # whole tables for one more look-back.
    assert events(warehouse.url) == [("state.change_events", None, None, "created")]


@pytest.mark.parametrize("table", RAW_TABLES)
def test_every_raw_delete_and_truncate_is_recorded_and_nothing_else(warehouse, table):  # P3, P5
    url = warehouse.url
    execute(url, "delete from state.change_events")
    records = [RawRecord(str(n), {"id": n}, None) for n in range(1, 4)]
    with warehouse.transaction() as conn:
        warehouse.land(conn, table, "c1", records, "r1", "historical")
    with warehouse.transaction() as conn:  # landed again, changed: an update, which has a landing time
        warehouse.land(conn, table, "c1", [RawRecord("1", {"id": 1, "changed": True}, None)], "r2", "incremental")
    assert events(url) == []

    execute(url, f"delete from raw.{table} where pk in ('1', '3')")
    assert events(url) == [(f"raw.{table}", "c1", "1", "delete"), (f"raw.{table}", "c1", "3", "delete")]
    execute(url, f"truncate raw.{table}")
    assert events(url)[-1] == (f"raw.{table}", None, None, "truncate")


def test_connections_added_enabled_disabled_and_deleted_are_recorded(warehouse):  # B11, S9, P3
    url = warehouse.url
    execute(url, "delete from state.change_events")
    assert warehouse.register_connection("bigcommerce:a", "bigcommerce", "a", "A", "https://a", True)
    assert events(url) == [("state.connections", "bigcommerce:a", "bigcommerce:a", "connection_added")]
    execute(url, "delete from state.change_events")

    # every extract registers its connection again and records its success: no event
    assert not warehouse.register_connection("bigcommerce:a", "bigcommerce", "a", "A renamed", "https://a", True)
    execute(url, "update state.connections set last_success_at = now()")
    assert events(url) == []

    assert not warehouse.register_connection("bigcommerce:a", "bigcommerce", "a", "A", "https://a", False)
    execute(url, "update state.connections set enabled = true")
    execute(url, "delete from state.connections")
    assert events(url) == [("state.connections", "bigcommerce:a", "bigcommerce:a", "connection_disabled"),
                           ("state.connections", "bigcommerce:a", "bigcommerce:a", "connection_enabled"),
                           ("state.connections", "bigcommerce:a", "bigcommerce:a", "delete")]


def test_a_missing_trigger_is_created_again(warehouse):  # P3
    # ensure_schema does nothing when the schema is current; a trigger dropped (by hand, a restore without
    # triggers) makes it not current.
    url = warehouse.url
    execute(url, "drop trigger record_deleted_rows on raw.bigcommerce_orders")
    warehouse.ensure_schema()
    execute(url, "delete from state.change_events")
    with warehouse.transaction() as conn:
        warehouse.land(conn, "bigcommerce_orders", "c1", [RawRecord("7", {"id": 7}, None)], "r1", "historical")
    execute(url, "delete from raw.bigcommerce_orders")
    assert events(url) == [("raw.bigcommerce_orders", "c1", "7", "delete")]
