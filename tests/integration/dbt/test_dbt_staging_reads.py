"""Issue 16: every staging view reads each raw payload from storage once per record, however many fields it takes.

Postgres stores a large jsonb out of line (TOAST) and every operator that reads it (``payload ->> 'status'``)
fetches and decompresses the whole value again: ``stg_bigcommerce__orders`` took ~30 fields, so it read each
order ~30 times (at bench scale 0.25 reading the view whole cost 9.6 million buffer reads, 13.9 s; read once,
145 thousand, 1.9 s). ``macros/raw_rows.sql`` reads each payload once per row.

The class, not one view: the staging views are listed from dbt's manifest (every model under ``staging`` that
reads a ``bigcommerce`` or ``square`` source), and each source table gets one record too large to be stored
in line. No timing (performance targets never go in timed tests): the proof is the number of buffer pages
Postgres touches to return that record through the view (EXPLAIN ANALYZE BUFFERS), which is deterministic;
reading the payload twice would touch twice its TOAST pages.
"""
from __future__ import annotations

import json
import random
import re
import string

import psycopg2
import pytest
from raw_warehouse_fixture import bigcommerce_line, bigcommerce_order, land

from ecomsync.dbt import run_dbt

STORE = "bigcommerce:bigrecords1"
LOCATION = "square:LOCHUGE"
DATE = "Mon, 01 Jul 2024 10:00:00 +0000"
ISO = "2024-07-01T10:00:00Z"


def padding() -> str:
    """64 kB that do not compress: the payload goes out of line, ~30 TOAST chunks."""
    rng = random.Random(16)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(64_000))


def big_records() -> dict[str, tuple[str, str, dict]]:
    """One record per raw table a staging view reads: (connection_id, pk, payload)."""
    pad = {"notes": padding()}
    order = bigcommerce_order(1, 7, 10, email="big@example.com", total="10.0000", created=DATE, modified=DATE,
                              line_items=[bigcommerce_line(1, 501, "Part", "10.0000", 1)])
    return {
        "bigcommerce_orders": (STORE, "1", {**order, **pad}),
        "bigcommerce_customers": (STORE, "7", {"id": 7, "email": "big@example.com", "date_created": ISO,
                                               "date_modified": ISO, **pad}),
        "bigcommerce_subscribers": (STORE, "3", {"id": 3, "email": "big@example.com", "date_modified": ISO, **pad}),
        "bigcommerce_products": (STORE, "501", {"id": 501, "name": "Part", "categories": [9], **pad}),
        "bigcommerce_categories": (STORE, "9", {"id": 9, "name": "Parts", **pad}),
        "bigcommerce_refunds": (STORE, "4", {"id": 4, "order_id": 1, "total_amount": 1.5, "created": ISO,
                                             "payments": [{"amount": 1.5, "is_declined": False}], **pad}),
        "square_payments": (LOCATION, "PAY1", {"id": "PAY1", "order_id": "ORD1", "status": "COMPLETED",
                                               "location_id": "LOCHUGE", "created_at": ISO, "updated_at": ISO,
                                               "amount_money": {"amount": 1000, "currency": "USD"}, **pad}),
        "square_orders": (LOCATION, "ORD1", {"id": "ORD1", "location_id": "LOCHUGE", "state": "COMPLETED",
                                             "created_at": ISO, "updated_at": ISO,
                                             "line_items": [{"uid": "L1", "name": "Part", "quantity": "1"}],
                                             "discounts": [{"uid": "D1", "name": "Big"}], **pad}),
        "square_customers": (LOCATION, "CUS1", {"id": "CUS1", "email_address": "big@example.com",
                                                "created_at": ISO, "updated_at": ISO, **pad}),
        "square_catalog_objects": (LOCATION, "ITEM1", {"id": "ITEM1", "type": "ITEM", "updated_at": ISO,
                                                       "item_data": {"name": "Part"}, **pad}),
        "square_locations": (LOCATION, "LOCHUGE", {"id": "LOCHUGE", "name": "Huge", "status": "ACTIVE", **pad}),
    }


@pytest.fixture(scope="module")
def staging(empty_warehouse, dbt_target):
    url = empty_warehouse
    records = big_records()
    for table, row in records.items():
        land(url, table, [row])
    summary = run_dbt(["run", "--select", "staging"], url, target_path=dbt_target)
    assert summary.failed_nodes == []
    manifest = json.loads((dbt_target / "manifest.json").read_text())
    views = {}
    for node in manifest["nodes"].values():
        sources = [dependency.split(".") for dependency in node["depends_on"]["nodes"]
                   if dependency.startswith("source.")]
        tables = [f"{source}_{table}" for _, _, source, table in sources if source in ("bigcommerce", "square")]
        if node["resource_type"] == "model" and node["fqn"][1] == "staging" and tables:
            views[node["name"]] = tables
    return url, records, views


def pages_touched(url: str, query: str, parameters: tuple) -> int:
    """Shared buffer pages (hit + read) the query's plan touched, planning left out; its second run in the
    session, so that the first run's catalog look-ups (the safe-cast functions' definitions) are not counted."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("set jit = off")
        for _ in range(2):
            cur.execute("explain (analyze, buffers, costs off, timing off) " + query, parameters)
            plan = [row[0] for row in cur.fetchall()]
    counts = re.search(r"Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?", next(line for line in plan
                                                                              if "Buffers:" in line))
    return sum(int(count or 0) for count in counts.groups())


def test_every_staging_view_over_a_raw_table_is_checked(staging):  # P3
    _, records, views = staging
    assert len(views) >= 15, views
    assert {table for tables in views.values() for table in tables} <= set(records)


def test_each_staging_view_reads_a_payload_once(staging):  # P3, issue 16
    url, records, views = staging
    read_twice = {}
    for view, tables in sorted(views.items()):
        once = sum(pages_touched(url, f"select payload #> '{{}}' from raw.{table} where connection_id = %s",
                                 (records[table][0],)) for table in tables)
        connections = tuple({records[table][0] for table in tables})
        through_view = pages_touched(url, f"select * from staging.{view} where connection_id in %s", (connections,))
        # each payload's TOAST pages once, plus a few heap and index pages; a second read of a 64 kB payload
        # adds ~10 pages
        if through_view > once + 6:
            read_twice[view] = (through_view, once)
    assert read_twice == {}, f"pages through the view vs reading each payload once: {read_twice}"


def test_scheduled_tests_of_every_staging_view_over_a_raw_table_read_recent_landings(staging, dbt_target):  # P2, P3
    # A scheduled run's data test of a staging view checks the rows landed recently (macros/incremental.sql,
    # get_where_subquery): a view needs a `loaded_at` column, or, for rows unnested from a record (an order's
    # lines, discounts), meta `landed_with` naming the record's source. Without either every test of it reads
    # the whole table (the Square line views did: 1.3-2.0 s per test at scale 1).
    _, _, views = staging
    manifest = json.loads((dbt_target / "manifest.json").read_text())
    nodes = {node["name"]: node for node in manifest["nodes"].values() if node["resource_type"] == "model"}
    unfiltered = []
    for view in sorted(views):
        node = nodes[view]
        if "square_location_rows" in node["raw_code"]:
            # Left out, known: the account-wide Square records (customers, catalog, locations) are spread from
            # the merchant connection to the location connections, so neither the landing time of the chosen
            # copy nor a key of the merchant's raw rows narrows them; the merchant's tables are small.
            continue
        if "loaded_at" not in node["columns"] and not node["config"]["meta"].get("landed_with"):
            unfiltered.append(view)
    assert unfiltered == []
