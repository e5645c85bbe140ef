"""Issue 15: one order with 10,000 line items is modelled whole, in time linear in its lines.

``int_order_lines_enriched`` used to grow quadratically: the line-item staging views read the order's
currency from the order's ``payload`` in the select list, and Postgres, inlining the CTEs, evaluated it
once per line item — each evaluation detoasting the whole order (all 10,000 lines). The staging models
now read each payload once (MATERIALIZED CTEs).

No timing here (performance targets never go in timed tests): the proof is the number of buffer pages
Postgres touches to expand one order's lines (EXPLAIN ANALYZE BUFFERS), which is deterministic. Linear
work makes a 10x larger order read about 10x the pages; the quadratic plan read about 100x.
"""
from __future__ import annotations

import re

import psycopg2
import pytest
from raw_warehouse_fixture import STORE_A, applied_discount, bigcommerce_line, bigcommerce_order, land

from ecomsync.dbt import run_dbt
from tests.conftest import dict_rows

LOCATION = "square:LOCBIG"
JULY = "Mon, 01 Jul 2024 10:00:00 +0000"
SIZES = {"small": 1_000, "large": 10_000}


def bc_order(order_id: int, lines: int) -> dict:
    return bigcommerce_order(
        order_id, 1, 10, email="bulk@example.com", total=f"{lines}.0000", created=JULY, modified=JULY,
        line_items=[bigcommerce_line(i, 500 + i % 7, f"Part {i}", "1.0000", 1,
                                     discounts=[applied_discount("0.1000", "BULK")]) for i in range(1, lines + 1)])


def sq_order(order_id: str, lines: int) -> dict:
    return {"id": order_id, "location_id": "LOCBIG", "customer_id": "SQB", "state": "COMPLETED",
            "line_items": [{"uid": f"L{i}", "name": f"Part {i}", "quantity": "1",
                            "base_price_money": {"amount": 100, "currency": "USD"}} for i in range(1, lines + 1)],
            "created_at": "2024-07-01T10:00:00Z", "updated_at": "2024-07-01T10:00:00Z"}


@pytest.fixture(scope="module")
def built(empty_warehouse, dbt_target):
    url = empty_warehouse
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.executemany("insert into state.connections (connection_id, source, external_id, name) values (%s,%s,%s,%s)",
                        [(STORE_A, "bigcommerce", "k3x9q2m7a1", "A"), (LOCATION, "square", "LOCBIG", "Big")])
    land(url, "bigcommerce_customers", [(STORE_A, "1", {
        "id": 1, "email": "bulk@example.com", "date_created": "2020-01-01T00:00:00Z",
        "date_modified": "2020-01-01T00:00:00Z"})])
    land(url, "bigcommerce_orders", [(STORE_A, "1", bc_order(1, SIZES["small"])),
                                     (STORE_A, "2", bc_order(2, SIZES["large"]))])
    land(url, "square_customers", [(LOCATION, "SQB", {
        "id": "SQB", "email_address": "bulk@example.com", "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z"})])
    land(url, "square_orders", [(LOCATION, "small", sq_order("small", SIZES["small"])),
                                (LOCATION, "large", sq_order("large", SIZES["large"]))])
    land(url, "square_payments", [
        (LOCATION, f"P{name}", {"id": f"P{name}", "order_id": name, "customer_id": "SQB", "location_id": "LOCBIG",
                                "status": "COMPLETED", "amount_money": {"amount": lines * 100, "currency": "USD"},
                                "created_at": "2024-07-01T10:00:00Z", "updated_at": "2024-07-01T10:00:00Z"})
        for name, lines in SIZES.items()])
    return url, run_dbt(["build"], url, target_path=dbt_target)


def pages_read(url: str, view: str, order_id: str) -> int:
    """Shared buffer pages Postgres touches to expand one order through a staging view."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("set jit = off")
        cur.execute(f"explain (analyze, buffers, costs off, timing off) "
                    f"select * from staging.{view} where order_id = %s", (order_id,))
        plan = "\n".join(row[0] for row in cur.fetchall())
    return int(re.search(r"shared hit=(\d+)", plan).group(1))


def test_ten_thousand_line_items_arrive_whole(built):  # B12, S12
    url, summary = built
    assert summary.failed_nodes == []
    rows = {row["order_key"]: row for row in dict_rows(
        url, "select order_key, jsonb_array_length(order_products) as lines, order_discounts, total_price_cents "
             "from crm.ecom_orders")}
    assert rows[f"{STORE_A}|2"]["lines"] == 10_000
    assert rows[f"{STORE_A}|2"]["order_discounts"] == [{"name": "BULK", "type": "order", "discountAmount": 100_000}]
    assert rows[f"{LOCATION}|Plarge"]["lines"] == 10_000


@pytest.mark.parametrize(("view", "small", "large"), [
    ("stg_bigcommerce__order_line_items", "1", "2"),
    ("stg_bigcommerce__order_line_discounts", "1", "2"),
    ("stg_square__order_line_items", "small", "large"),
])
def test_line_item_work_is_linear_in_the_number_of_lines(built, view, small, large):  # B12, S12
    url, _ = built
    growth = pages_read(url, view, large) / pages_read(url, view, small)
    lines_growth = SIZES["large"] / SIZES["small"]
    # linear: about 10x the pages for 10x the lines; the quadratic plan read about 100x
    assert growth < 2 * lines_growth, f"{view}: {growth:.1f}x the pages for {lines_growth:.0f}x the lines"
