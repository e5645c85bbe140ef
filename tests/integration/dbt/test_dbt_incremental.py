"""Incremental segment bridges equal a full refresh, row for row (G1, P3)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
from raw_warehouse_fixture import STORE_A, bigcommerce_line, bigcommerce_order, land, land_hand_checked_fixture

from ecomsync.dbt import run_dbt

BRIDGES = ["purchased_products", "purchased_categories"]
SELECTOR = ["-s", "+purchased_products", "+purchased_categories"]


def snapshot(url: str, table: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"select * from segments.{table} order by 1, 2, 3")
        return cur.fetchall()


def test_incremental_run_equals_full_refresh(empty_warehouse, dbt_target):  # G1, P3
    url = empty_warehouse
    now = datetime.now(UTC)
    land_hand_checked_fixture(url, now, loaded_at=now - timedelta(days=10))
    # Square landed well before the look-back window of the next run: its contacts must stay untouched.
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for table in ("square_payments", "square_orders"):
            cur.execute(f"update raw.{table} set loaded_at = %s", (now - timedelta(days=30),))
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    rows_before = {table: len(snapshot(url, table)) for table in BRIDGES}

    # A new customer's first order, and an old order re-landed with one more product.
    land(url, "bigcommerce_orders", [
        (STORE_A, "1006", bigcommerce_order(
            1006, 14, 10, email="dan@example.com", total="19.9900",
            created="Fri, 01 Mar 2024 10:00:00 +0000", modified="Fri, 01 Mar 2024 10:00:00 +0000",
            line_items=[bigcommerce_line(6, 501, "Widget", "19.9900", 1, "W-1")])),
        (STORE_A, "1005", bigcommerce_order(
            1005, 11, 4, email="ada@example.com", total="29.9900",
            created="Mon, 05 Feb 2018 12:00:00 +0100", modified="Sat, 02 Mar 2024 12:00:00 +0000",
            line_items=[bigcommerce_line(4, 502, "Gadget", "10.0000", 1, "G-1"),
                        bigcommerce_line(5, 501, "Widget", "19.9900", 3, "W-1")])),
    ], loaded_at=now)
    incremental = run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    after_incremental = {table: snapshot(url, table) for table in BRIDGES}

    # Only the store's contacts (landed within the look-back) were rebuilt, not the Square ones.
    products_written = next(n.rows_affected for n in incremental.nodes if n.name == "purchased_products")
    assert products_written == 3  # ada: 501, 502; dan: 501
    assert ("dan@example.com", STORE_A, "501") in {row[:3] for row in after_incremental["purchased_products"]}
    assert len(after_incremental["purchased_products"]) == rows_before["purchased_products"] + 1

    run_dbt(["run", "--full-refresh", "-s", *BRIDGES], url, target_path=dbt_target)
    for table in BRIDGES:
        assert snapshot(url, table) == after_incremental[table], table
