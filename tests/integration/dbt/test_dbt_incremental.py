"""Incremental models equal a full refresh, row for row (G1, P2, P3).

A scheduled ``dbt run`` after new landings must leave every incremental model (and the marts built on
them) exactly as ``--full-refresh`` would build them from the same raw tables, while rebuilding only
what landed since the models' newest rows minus the look-back (var ``incremental_lookback_hours``).
"""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from raw_warehouse_fixture import (
    STORE_A,
    STORE_B,
    bigcommerce_line,
    bigcommerce_order,
    bigcommerce_refund,
    land,
    land_hand_checked_fixture,
    rfc2822,
)

from ecomsync.dbt import DbtRunError, run_dbt

# Every incremental model, and every crm mart (the load reads them: they must match too).
INCREMENTAL = [
    "intermediate.int_customers_unioned", "intermediate.int_orders_unioned", "intermediate.int_order_lines_enriched",
    "intermediate.int_orders_enriched", "crm.ecom_orders",
    "segments.purchased_products", "segments.purchased_categories",
    "segments.contact_order_history", "segments.contact_ecommerce_profile", "segments.segment_members",
    "segments.contact_revenue_by_currency", "crm.contacts", "crm.ecom_customers",
]
COMPARED = [*INCREMENTAL, "crm.excluded_records", "crm.abandoned_carts", "crm.connections"]
SELECTOR = ["-s", "+purchased_products", "+purchased_categories", "+path:models/marts/crm", "+contact_ecommerce_profile",
            "+segment_members", "+contact_revenue_by_currency"]
# When a build last rebuilt the row: differs between an incremental build and a full refresh by design.
BUILD_TIME_COLUMNS = {"evaluated_at"}


def snapshot(url: str, table: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"select * from {table} limit 0")
        columns = [c.name for c in cur.description if c.name not in BUILD_TIME_COLUMNS]
        cur.execute(f"select {', '.join(columns)} from {table}")
        return sorted(cur.fetchall(), key=repr)


def rows_written(summary, model: str) -> int:
    return next(n.rows_affected for n in summary.nodes if n.name == model)


def landed_orders(url: str) -> dict[str, tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select external_id, email, total_price_cents from crm.ecom_orders")
        return {row[0]: row[1:] for row in cur.fetchall()}


@pytest.fixture(scope="module")
def warehouse(empty_warehouse, dbt_target):
    url = empty_warehouse
    now = datetime.now(UTC)
    land_hand_checked_fixture(url, now, loaded_at=now - timedelta(days=10))
    # Square landed well before the look-back window of the next runs: its contacts must stay untouched.
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for table in ("square_payments", "square_orders", "square_customers"):
            cur.execute(f"update raw.{table} set loaded_at = %s", (now - timedelta(days=30),))
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    return url, now


def assert_equals_full_refresh(url: str, dbt_target, dbt_vars: dict | None = None) -> None:
    incremental = {table: snapshot(url, table) for table in COMPARED}
    run_dbt(["run", "--full-refresh", *SELECTOR], url, dbt_vars, target_path=dbt_target)
    for table in COMPARED:
        assert snapshot(url, table) == incremental[table], table


def test_every_incremental_model_is_compared(warehouse, dbt_target):  # P3
    # The list above is what every test here compares with a full refresh: it must name every model the
    # project materializes incrementally (read from the manifest of the fixture's run), none left out.
    manifest = json.loads((dbt_target / "manifest.json").read_text())
    incremental = {f"{node['schema']}.{node['alias']}" for node in manifest["nodes"].values()
                   if node["resource_type"] == "model" and node["config"]["materialized"] == "incremental"}
    assert incremental == set(INCREMENTAL)


def test_new_and_changed_orders(warehouse, dbt_target):  # G1, P3
    url, now = warehouse
    rows_before = len(snapshot(url, "segments.purchased_products"))
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
    ])
    incremental = run_dbt(["run", *SELECTOR], url, target_path=dbt_target)

    # Only the store's contacts (landed within the look-back) were rebuilt, not the Square ones;
    # only the store's orders of those customers, not every order.
    assert rows_written(incremental, "purchased_products") == 3  # ada: 501, 502; dan: 501
    assert rows_written(incremental, "int_orders_unioned") < len(snapshot(url, "intermediate.int_orders_unioned"))
    products = snapshot(url, "segments.purchased_products")
    assert ("dan@example.com", STORE_A, "501") in {row[:3] for row in products}
    assert len(products) == rows_before + 1
    assert landed_orders(url)["1005"][1] == 2999
    assert_equals_full_refresh(url, dbt_target)


def test_email_change_leaves_no_stale_rows(warehouse, dbt_target):  # G1, B3, P3
    url, now = warehouse
    # Ada changes her store A email: only her customer record lands, her orders do not.
    land(url, "bigcommerce_customers", [
        (STORE_A, "11", {"id": 11, "email": "ada.new@example.com", "first_name": "Ada", "last_name": "Lovelace",
                         "phone": "", "date_created": "2018-01-01T00:00:00Z",
                         "date_modified": "2024-03-03T00:00:00Z", "accepts_product_review_abandoned_cart_emails": False}),
    ])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)

    emails = {external_id: email for external_id, (email, _) in landed_orders(url).items()}
    assert emails["1001"] == emails["1005"] == "ada.new@example.com"
    for table in ("segments.purchased_products", "segments.purchased_categories"):
        contacts = {row[:2] for row in snapshot(url, table)}
        assert ("ada@example.com", STORE_A) not in contacts, table
        assert ("ada.new@example.com", STORE_A) in contacts, table
    assert_equals_full_refresh(url, dbt_target)


def test_refund_landing_later_changes_its_order(warehouse, dbt_target):  # B12, P3
    url, now = warehouse
    total_before = landed_orders(url)["1001"][1]
    # The refund lands on its own, days after its order: its landing pulls the order in.
    land(url, "bigcommerce_refunds", [(STORE_A, "91", bigcommerce_refund(91, 1001, 36.32))])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert landed_orders(url)["1001"][1] == total_before - 3632
    assert_equals_full_refresh(url, dbt_target)


def test_order_archived_later_leaves_the_crm_marts(warehouse, dbt_target):  # B4, B5, P3
    url, now = warehouse
    assert "1006" in landed_orders(url)
    land(url, "bigcommerce_orders", [
        (STORE_A, "1006", {**bigcommerce_order(
            1006, 14, 10, email="dan@example.com", total="19.9900",
            created="Fri, 01 Mar 2024 10:00:00 +0000", modified="Mon, 04 Mar 2024 10:00:00 +0000",
            line_items=[bigcommerce_line(6, 501, "Widget", "19.9900", 1, "W-1")]), "is_deleted": True}),
    ])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert "1006" not in landed_orders(url)
    excluded = {(row[2], row[3]) for row in snapshot(url, "crm.excluded_records")}
    assert ("1006", "archived_order") in excluded
    # dan has no other order in the store: his purchase rows go with it
    assert "dan@example.com" not in {row[0] for row in snapshot(url, "segments.purchased_products")}
    assert_equals_full_refresh(url, dbt_target)


def test_late_square_payment_within_the_lookback(warehouse, dbt_target):  # S4, P3
    url, now = warehouse
    # A run now moves every watermark to its start; a payment whose landing is stamped 48 h earlier
    # (a transaction open across that build, or landed late into an earlier window) is still inside
    # the 72 h look-back and is picked up by the next run.
    land(url, "bigcommerce_orders", [
        (STORE_A, "1007", bigcommerce_order(
            1007, 11, 10, email="ada.new@example.com", total="1.0000",
            created="Fri, 08 Mar 2024 10:00:00 +0000", modified="Fri, 08 Mar 2024 10:00:00 +0000",
            line_items=[bigcommerce_line(7, 502, "Gadget", "1.0000", 1, "G-1")])),
    ])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select connection_id, payload from raw.square_payments limit 1")
        connection_id, payment = cur.fetchone()
    late = {**payment, "id": "LATEPAY1", "updated_at": "2024-03-09T00:00:00Z"}
    land(url, "square_payments", [(connection_id, "LATEPAY1", late)], loaded_at=now - timedelta(hours=48))
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert "LATEPAY1" in {row[2] for row in snapshot(url, "intermediate.int_orders_unioned")}
    assert_equals_full_refresh(url, dbt_target)


def test_raw_record_erased_leaves_every_incremental_model(warehouse, dbt_target):  # P5, P3
    url, _ = warehouse
    # ecomsync.privacy erases raw records (and crm/segments rows); the incremental intermediate
    # models must not keep, nor later re-publish, an order whose raw record is gone. Everything landed long
    # ago (settle): the order's contact, who keeps another order, learns it from the deletion alone.
    settle(url, dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("delete from raw.bigcommerce_orders where connection_id = %s and pk = '1005'", (STORE_A,))
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for table in INCREMENTAL[1:4]:
            cur.execute(f"select count(*) from {table} where order_external_id = '1005'")
            assert cur.fetchone()[0] == 0, table
    assert "1005" not in landed_orders(url)
    assert_equals_full_refresh(url, dbt_target)


def test_scheduled_data_tests_check_recent_rows_full_refresh_all(warehouse, dbt_target):  # P2, P3
    url, now = warehouse
    # An old, broken row (no email) that a scheduled run did not write, and no recent one.
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("""
            insert into crm.ecom_orders (order_key, connection_id, external_id, email, landed_at)
            select order_key || '-old', connection_id, external_id || '-old', null, %s
            from crm.ecom_orders limit 1
        """, (now - timedelta(days=30),))
    scheduled = run_dbt(["test", "-s", "ecom_orders", "--indirect-selection", "cautious"], url, target_path=dbt_target)
    assert scheduled.success
    with pytest.raises(DbtRunError) as failure:
        run_dbt(["test", "-s", "ecom_orders", "--indirect-selection", "cautious"], url, {"data_tests_on_all_rows": True}, target_path=dbt_target)
    assert any(node.name.startswith("not_null_ecom_orders_email") for node in failure.value.summary.failed_nodes)
    # The same row landed recently is checked by the scheduled tests too.
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("update crm.ecom_orders set landed_at = now() where email is null")
    with pytest.raises(DbtRunError):
        run_dbt(["test", "-s", "ecom_orders", "--indirect-selection", "cautious"], url, target_path=dbt_target)
    # --full-refresh rebuilds the mart (the row goes) and tests every row.
    run_dbt(["build", "--full-refresh", "-s", "ecom_orders", "--indirect-selection", "cautious"], url, target_path=dbt_target)


def settle(url: str, dbt_target) -> None:
    """Everything landed so far becomes older than the look-back (as the bench ages its rows), and the
    models are rebuilt from it: what the next scheduled run does not re-read must already be right."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select table_name from information_schema.tables where table_schema = 'raw'")
        for (table,) in cur.fetchall():
            cur.execute(f"update raw.{table} set loaded_at = loaded_at - interval '10 days'")
        cur.execute("update state.change_events set changed_at = changed_at - interval '10 days'")
        cur.execute("update intermediate.incremental_contact_changes set changed_at = changed_at - interval '10 days'")
    run_dbt(["run", "--full-refresh", *SELECTOR], url, target_path=dbt_target)


def order_products(url: str, external_id: str) -> list[dict]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select order_products from crm.ecom_orders where external_id = %s", (external_id,))
        return cur.fetchone()[0]


def test_catalog_renamed_after_old_orders_were_modelled(warehouse, dbt_target):  # B12, S12, P3
    url, now = warehouse
    settle(url, dbt_target)
    # Store A's category 22 (Gadget's) and Square's CAT1 (Latte's) are renamed; Widget gets a new
    # description. Only the catalog lands: the old orders' lines must describe the catalog as it is now.
    land(url, "bigcommerce_categories", [(STORE_A, "22", {"category_id": 22, "parent_id": 21, "name": "Presents"})])
    land(url, "bigcommerce_products", [
        (STORE_A, "501", {"id": 501, "name": "Widget", "sku": "W-1", "description": "<p>A better widget</p>",
                          "categories": [21, 22], "custom_url": {"url": "/widget/"}, "images": [],
                          "date_modified": "2024-03-10T00:00:00+00:00"}),
    ])
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select connection_id, payload from raw.square_catalog_objects where pk = 'CAT1'")
        connection_id, category = cur.fetchone()
    land(url, "square_catalog_objects", [
        (connection_id, "CAT1", {**category, "updated_at": "2024-03-10T00:00:00Z", "category_data": {"name": "Beverages"}}),
    ])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)

    lines = {line["externalid"]: line for line in order_products(url, "1001")}
    assert lines["502"]["category"] == "Presents"
    assert lines["501"]["description"] == "<p>A better widget</p>"
    assert {line["category"] for line in order_products(url, "PAY1")} == {"Beverages"}
    categories = {row[2] for row in snapshot(url, "segments.purchased_categories")}
    assert "Presents" in categories and "Gifts" not in categories
    assert_equals_full_refresh(url, dbt_target)


def test_connection_reenabled_after_being_disabled(warehouse, dbt_target):  # B11, P3
    url, _ = warehouse
    settle(url, dbt_target)

    def set_enabled(enabled: bool) -> None:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("update state.connections set enabled = %s where connection_id = %s", (enabled, STORE_A))

    assert "1001" in landed_orders(url)
    set_enabled(False)
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert "1001" not in landed_orders(url)
    assert STORE_A not in {row[1] for row in snapshot(url, "segments.purchased_products")}
    # Nothing lands while it is disabled or after: re-enabling alone must bring its orders back.
    set_enabled(True)
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert "1001" in landed_orders(url)
    assert STORE_A in {row[1] for row in snapshot(url, "segments.purchased_products")}
    assert_equals_full_refresh(url, dbt_target)


def set_difference(dbt_target, model: str) -> bool:
    """Whether the model's SQL in the last invocation compared whole tables (an ``except select``)."""
    results = json.loads((dbt_target / "run_results.json").read_text())["results"]
    code = next(result["compiled_code"] for result in results if result["unique_id"].endswith(f".{model}"))
    return re.search(r"\bexcept\s+select\b", code) is not None


def test_whole_tables_are_compared_only_after_a_change_without_landing_time(warehouse, dbt_target):  # P3, issue 16
    # macros/change_events.sql: the set differences that find syncing orders missing from crm.ecom_orders and
    # contacts missing from the purchase bridges (a connection enabled again) read whole tables; a scheduled
    # build runs them only after a change state.change_events records other than a raw record's deletion.
    url, _ = warehouse
    settle(url, dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from state.change_events")
        assert cur.fetchone()[0] == 0  # on-run-end purged the events every model has read
        cur.execute("update raw.bigcommerce_orders set loaded_at = now() where pk = '1001'")  # landed again
    whole_comparisons = ("ecom_orders", "purchased_products", "purchased_categories")
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert not any(set_difference(dbt_target, model) for model in whole_comparisons)

    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # an erased order: read from its delete event
        cur.execute("delete from raw.bigcommerce_orders where connection_id = %s and pk = '1002'", (STORE_A,))
        cur.execute("select relation, connection_id, pk, change from state.change_events")
        assert cur.fetchall() == [("raw.bigcommerce_orders", STORE_A, "1002", "delete")]
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert not any(set_difference(dbt_target, model) for model in whole_comparisons)
    assert "1002" not in landed_orders(url)

    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # a connection added
        cur.execute("insert into state.connections (connection_id, source, external_id, name) "
                    "values ('bigcommerce:new', 'bigcommerce', 'new', 'New store')")
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert all(set_difference(dbt_target, model) for model in whole_comparisons)
    assert_equals_full_refresh(url, dbt_target)


def index_columns(url: str, table: str) -> set[tuple[str, ...]]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("""select array(select a.attname::text from unnest(i.indkey::int2[]) with ordinality k (n, p)
                                    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n order by k.p)
                       from pg_index i where i.indrelid = %s::regclass""", (table,))
        return {tuple(row[0]) for row in cur.fetchall()}


def test_an_index_configured_after_the_table_was_built_is_created(warehouse, dbt_target):  # P3, issue 16
    # dbt creates a model's configured indexes only with its table; a warehouse built before an index was
    # configured gets it from the next scheduled run (macros/indexes.sql), not only from a full refresh.
    url, _ = warehouse
    settle(url, dbt_target)
    assert ("connection_id", "external_id") in index_columns(url, "crm.ecom_orders")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for table in ("crm.ecom_orders", "segments.segment_members"):
            cur.execute("select indexrelid::regclass::text from pg_index where indrelid = %s::regclass", (table,))
            for (index,) in cur.fetchall():
                cur.execute(f"drop index {index}")
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert index_columns(url, "crm.ecom_orders") == {
        ("order_key",), ("connection_id", "external_id"), ("email", "connection_id"), ("landed_at",)}
    assert index_columns(url, "segments.segment_members") == {("email",), ("evaluated_at",)}
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)  # present: not created twice
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_index where indrelid = 'crm.ecom_orders'::regclass")
        assert cur.fetchone()[0] == 4


def test_square_location_landed_after_its_connection_was_registered(warehouse, dbt_target):  # S12, P3, issue 16
    # A Square account's merchant-wide profiles spread to every location connection whose location record the
    # merchant's locations stream landed (macros/square_merchant.sql). The connection was registered longer than
    # the look-back before its location record landed: that landing alone adds (location, profile) pairs.
    # (Found by a review of the change events: the pairs were searched for only after a connection change.)
    url, _ = warehouse
    merchant, location = "square-merchant:M9", "square:LOC9"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("insert into state.connections (connection_id, source, external_id, name) values "
                    "(%s, 'square_merchant', 'M9', 'Merchant 9'), (%s, 'square', 'LOC9', 'Uptown')",
                    (merchant, location))
    land(url, "square_customers", [
        (merchant, "SQM9", {"id": "SQM9", "given_name": "Mia", "family_name": "Merchant",
                            "email_address": "mia@example.com", "created_at": "2022-01-01T00:00:00Z",
                            "updated_at": "2022-01-01T00:00:00Z"})])
    settle(url, dbt_target)  # the connection_added events aged past the look-back (and purged)
    land(url, "square_locations", [(merchant, "LOC9", {"id": "LOC9", "name": "Uptown", "status": "ACTIVE"})])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert_equals_full_refresh(url, dbt_target)


def test_square_location_connection_added_then_deleted(warehouse, dbt_target):  # S12, B11, P3, issue 16
    # The merchant's profiles spread to a location connection added after they landed, and leave it when the
    # connection row is deleted again (a deleted row is not a disabled connection: it is no connection at all).
    url, _ = warehouse
    merchant = "square-merchant:M8"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("insert into state.connections (connection_id, source, external_id, name) values "
                    "(%s, 'square_merchant', 'M8', 'Merchant 8')", (merchant,))
    land(url, "square_customers", [
        (merchant, "SQM8", {"id": "SQM8", "given_name": "Max", "email_address": "max@example.com",
                            "created_at": "2022-01-01T00:00:00Z", "updated_at": "2022-01-01T00:00:00Z"})])
    land(url, "square_locations", [(merchant, "LOC8", {"id": "LOC8", "name": "Mid", "status": "ACTIVE"})])
    settle(url, dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("insert into state.connections (connection_id, source, external_id, name) values "
                    "('square:LOC8', 'square', 'LOC8', 'Mid')")
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert_equals_full_refresh(url, dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("delete from state.connections where connection_id = 'square:LOC8'")
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert_equals_full_refresh(url, dbt_target)


def test_line_removed_from_an_order_landed_again(warehouse, dbt_target):  # B12, P3
    url, _ = warehouse
    settle(url, dbt_target)

    def lines_of(order_id: str) -> list[tuple]:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("select product_external_id from intermediate.int_order_lines_enriched "
                        "where connection_id = %s and order_external_id = %s", (STORE_A, order_id))
            return cur.fetchall()

    assert len(lines_of("1001")) == 2 and len(lines_of("1007")) == 1
    # 1001 loses its Gadget line; 1007 loses its only line.
    land(url, "bigcommerce_orders", [
        (STORE_A, "1001", bigcommerce_order(
            1001, 11, 10, email="ada@example.com", total="39.9800",
            created="Wed, 10 Jan 2018 21:05:30 -0530", modified="Sat, 09 Mar 2024 09:00:00 +0000",
            line_items=[bigcommerce_line(1, 501, "Widget", "19.9900", 2, "W-1")])),
        (STORE_A, "1007", bigcommerce_order(
            1007, 11, 10, email="ada.new@example.com", total="1.0000",
            created="Fri, 08 Mar 2024 10:00:00 +0000", modified="Sat, 09 Mar 2024 10:00:00 +0000")),
    ])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert lines_of("1001") == [("501",)]
    assert lines_of("1007") == []
    assert [line["externalid"] for line in order_products(url, "1007")] == []
    assert_equals_full_refresh(url, dbt_target)


def test_two_accounts_sharing_one_email(warehouse, dbt_target):  # B3, P3
    url, _ = warehouse
    settle(url, dbt_target)

    def customer(customer_id: int, email: str, modified: str) -> tuple:
        return (STORE_A, str(customer_id), {
            "id": customer_id, "email": email, "first_name": "Sam", "last_name": f"Shared{customer_id}", "phone": "",
            "date_created": "2024-01-01T00:00:00Z", "date_modified": modified})

    # Two accounts of store A with one email: one contact, whose purchase rows hold both accounts' products.
    land(url, "bigcommerce_customers", [customer(16, "shared@example.com", "2024-01-01T00:00:00Z"),
                                        customer(17, "shared@example.com", "2024-01-01T00:00:00Z")])
    land(url, "bigcommerce_orders", [
        (STORE_A, "1010", bigcommerce_order(
            1010, 16, 10, email="shared@example.com", total="19.9900",
            created="Mon, 11 Mar 2024 10:00:00 +0000", modified="Mon, 11 Mar 2024 10:00:00 +0000",
            line_items=[bigcommerce_line(10, 501, "Widget", "19.9900", 1, "W-1")])),
        (STORE_A, "1011", bigcommerce_order(
            1011, 17, 10, email="shared@example.com", total="10.0000",
            created="Mon, 11 Mar 2024 11:00:00 +0000", modified="Mon, 11 Mar 2024 11:00:00 +0000",
            line_items=[bigcommerce_line(11, 502, "Gadget", "10.0000", 1, "G-1")])),
    ])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    products = {(row[0], row[2]) for row in snapshot(url, "segments.purchased_products") if row[1] == STORE_A}
    assert {("shared@example.com", "501"), ("shared@example.com", "502")} <= products

    settle(url, dbt_target)
    # Account 16 moves to its own email: the shared contact keeps only account 17's product.
    land(url, "bigcommerce_customers", [customer(16, "sixteen@example.com", "2024-03-12T00:00:00Z")])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    products = {(row[0], row[2]) for row in snapshot(url, "segments.purchased_products") if row[1] == STORE_A}
    assert ("shared@example.com", "501") not in products
    assert {("shared@example.com", "502"), ("sixteen@example.com", "501")} <= products
    categories = {(row[0], row[2]) for row in snapshot(url, "segments.purchased_categories") if row[1] == STORE_A}
    assert ("sixteen@example.com", "Tools") in categories or ("sixteen@example.com", "Presents") in categories
    assert_equals_full_refresh(url, dbt_target)


def test_scheduled_tests_of_staging_views_check_recent_landings(warehouse, dbt_target):  # P2, P3
    url, now = warehouse
    # An order with a status BigCommerce does not have (the staging test warns), landed 30 days ago: a
    # scheduled run's tests of the staging view (loaded_at pushed down to the raw scan) do not read it;
    # the full set does.
    order = bigcommerce_order(1099, 11, 99, email="ada@example.com", total="1.0000",
                              created="Fri, 01 Mar 2024 10:00:00 +0000", modified="Fri, 01 Mar 2024 10:00:00 +0000")
    land(url, "bigcommerce_orders", [(STORE_A, "1099", order)], loaded_at=now - timedelta(days=30))
    selector = ["test", "-s", "stg_bigcommerce__orders", "stg_bigcommerce__order_line_items",
                "--indirect-selection", "cautious"]

    def status_test(dbt_vars: dict | None = None) -> str:
        summary = run_dbt(selector, url, dbt_vars, target_path=dbt_target)
        return next(node.status for node in summary.nodes
                    if node.name.startswith("accepted_values_stg_bigcommerce__orders_status_id"))

    assert status_test() == "pass"
    assert status_test({"data_tests_on_all_rows": True}) == "warn"
    # Landed again now, the scheduled tests read it.
    land(url, "bigcommerce_orders", [(STORE_A, "1099", {**order, "date_modified": "Sat, 02 Mar 2024 10:00:00 +0000"})])
    assert status_test() == "warn"
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("delete from raw.bigcommerce_orders where connection_id = %s and pk = '1099'", (STORE_A,))


# -- contact_order_history and contact_ecommerce_profile (issue 16): what changes them without an order landing --

def bigcommerce_customer(connection_id: str, customer_id: int, email: str, *, created: str = "2024-01-01T00:00:00Z",
                         modified: str = "2024-01-01T00:00:00Z") -> tuple:
    return (connection_id, str(customer_id), {
        "id": customer_id, "email": email, "first_name": "Pat", "last_name": f"Customer{customer_id}", "phone": "",
        "date_created": created, "date_modified": modified})


def profile(url: str, email: str) -> dict[str, dict]:
    """The contact's contact_ecommerce_profile rows by connection_id."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select * from segments.contact_ecommerce_profile where email = %s", (email,))
        columns = [column.name for column in cur.description]
        return {row[1]: dict(zip(columns, row, strict=True)) for row in cur.fetchall()}


def order_history(url: str, email: str) -> set[tuple]:
    """(connection_id, order_external_id, order_sequence, running_revenue_cents) of the contact's rows."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select connection_id, order_external_id, order_sequence, running_revenue_cents "
                    "from segments.contact_order_history where email = %s", (email,))
        return set(cur.fetchall())


def test_order_archived_later_renumbers_the_contacts_history(warehouse, dbt_target):  # B4, G1, P3
    url, _ = warehouse
    # hist@ has an order in store A (January) and one in store B (February): across all connections the
    # February order is the second. Archiving the January one makes it the first ('all' rows, other store).
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 21, "hist@example.com"),
                                        bigcommerce_customer(STORE_B, 21, "hist@example.com")])
    january = bigcommerce_order(1021, 21, 10, email="hist@example.com", total="10.0000",
                                created="Mon, 01 Jan 2024 10:00:00 +0000", modified="Mon, 01 Jan 2024 10:00:00 +0000",
                                line_items=[bigcommerce_line(21, 501, "Widget", "10.0000", 1, "W-1")])
    land(url, "bigcommerce_orders", [(STORE_A, "1021", january)])
    land(url, "bigcommerce_orders", [(STORE_B, "2021", bigcommerce_order(
        2021, 21, 10, email="hist@example.com", total="5.0000",
        created="Thu, 01 Feb 2024 10:00:00 +0000", modified="Thu, 01 Feb 2024 10:00:00 +0000",
        line_items=[bigcommerce_line(22, 601, "Thing", "5.0000", 1, "T-1")]))])
    settle(url, dbt_target)
    assert ("all", "2021", 2, 1500) in order_history(url, "hist@example.com")

    land(url, "bigcommerce_orders", [(STORE_A, "1021", {**january, "is_deleted": True,
                                                        "date_modified": "Tue, 02 Jan 2024 10:00:00 +0000"})])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert order_history(url, "hist@example.com") == {(STORE_B, "2021", 1, 500), ("all", "2021", 1, 500)}
    assert profile(url, "hist@example.com")["all"]["order_count"] == 1
    assert_equals_full_refresh(url, dbt_target)


def test_account_leaves_an_email_another_account_keeps(warehouse, dbt_target):  # B3, S11, P3
    url, _ = warehouse
    # Two store A accounts share pair@, neither has an order: crm.ecom_orders and the order history never
    # change, only the customer accounts do.
    land(url, "bigcommerce_customers", [
        bigcommerce_customer(STORE_A, 18, "pair@example.com", created="2019-05-01T00:00:00Z"),
        bigcommerce_customer(STORE_A, 19, "pair@example.com", created="2021-05-01T00:00:00Z"),
    ])
    settle(url, dbt_target)
    assert profile(url, "pair@example.com")[STORE_A]["customer_since"] == datetime(2019, 5, 1, tzinfo=UTC)

    # The older account moves to its own email: pair@ is now only the 2021 account's.
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 18, "eighteen@example.com",
                                                             created="2019-05-01T00:00:00Z",
                                                             modified="2024-03-12T00:00:00Z")])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert profile(url, "pair@example.com")[STORE_A]["customer_since"] == datetime(2021, 5, 1, tzinfo=UTC)
    assert set(profile(url, "eighteen@example.com")) == {STORE_A, "all"}
    assert_equals_full_refresh(url, dbt_target)


def test_contact_marts_rebuild_only_the_contacts_of_rebuilt_customers(warehouse, dbt_target):  # G1, B3, P3, issue 16
    # crm.contacts and crm.ecom_customers are projections of int_customers_unioned by contact: a scheduled run
    # rewrites the rows of the contacts whose customers it rebuilt (both emails of an account that moved), not
    # the whole table; a connection change rewrites every contact once.
    url, _ = warehouse
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 26, "mover@example.com"),
                                        bigcommerce_customer(STORE_B, 26, "mover@example.com")])
    settle(url, dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from crm.contacts")
        (contacts,) = cur.fetchone()
    assert contacts > 3

    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 26, "moved@example.com",
                                                             modified="2024-03-14T00:00:00Z")])
    summary = run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert rows_written(summary, "contacts") == 2  # mover@ (store B's account) and moved@
    assert rows_written(summary, "ecom_customers") == 1  # store A's account 26, now moved@
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select connection_id from crm.ecom_customers where email = 'mover@example.com'")
        assert cur.fetchall() == [(STORE_B,)]
    assert_equals_full_refresh(url, dbt_target)

    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # a connection disabled: every contact again
        cur.execute("update state.connections set enabled = false where connection_id = %s", (STORE_B,))
    try:
        summary = run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("select count(*) from crm.ecom_customers where connection_id = %s", (STORE_B,))
            assert cur.fetchone()[0] == 0
        assert_equals_full_refresh(url, dbt_target)
    finally:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("update state.connections set enabled = true where connection_id = %s", (STORE_B,))
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert_equals_full_refresh(url, dbt_target)


def test_a_customer_tag_changed_reaches_every_contact(warehouse, dbt_target):  # B3, S10, P3, issue 16
    # The customer tags are vars (the CRM settings fill them) no landing moves: crm.contacts records them as its
    # definition and rebuilds every email when they change, not only the contacts whose customers changed.
    url, _ = warehouse
    settle(url, dbt_target)
    renamed = {"bigcommerce_customer_tag": "bc-buyer"}
    run_dbt(["run", *SELECTOR], url, renamed, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) filter (where 'bc-buyer' = any(tags)), "
                    "count(*) filter (where 'bigcommerce-customer' = any(tags)) from crm.contacts")
        renamed_tags, old_tags = cur.fetchone()
    assert renamed_tags > 1 and old_tags == 0
    assert_equals_full_refresh(url, dbt_target, renamed)
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)  # and back to the default
    assert_equals_full_refresh(url, dbt_target)


def test_changes_wait_for_a_model_not_built_for_days(warehouse, dbt_target):  # B6, P3, issue 16
    # The contact changes and change events a model has not read yet stay until it has, however long it was not
    # built (a failing model, a selection without it): here contact_ecommerce_profile and crm.contacts, last
    # built 10 days ago, and a consent change int_customers_unioned recorded 8 days ago, more than twice the
    # look-back; builds of everything else ran since.
    url, _ = warehouse
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 27, "patient@example.com")])
    settle(url, dbt_target)
    land(url, "bigcommerce_subscribers", [(STORE_A, "27", {
        "id": 27, "email": "patient@example.com", "consents": ["marketing_newsletter"],
        "date_modified": "2024-03-15T00:00:00Z"})])
    waiting = ("contact_ecommerce_profile", "contacts")
    others = [*SELECTOR, "--exclude", *waiting, "segment_members"]
    run_dbt(["run", *others], url, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("update intermediate.incremental_watermarks set built_from = now() - interval '10 days' "
                    "where model = any(%s)", (list(waiting),))
        # ... and settle's whole builds before that (else they would compare whole tables, finding it anyway)
        cur.execute("update intermediate.incremental_watermarks set built_from = now() - interval '11 days' "
                    "where model like '%%\\_\\_built\\_whole'")
        cur.execute("update intermediate.incremental_contact_changes set changed_at = now() - interval '8 days' "
                    "where email = 'patient@example.com'")
        # the consent landed 8 days ago too, and the models built since read it then
        cur.execute("update raw.bigcommerce_subscribers set loaded_at = now() - interval '8 days' where pk = '27'")
        for table in ("intermediate.int_customers_unioned", "crm.ecom_customers"):
            cur.execute(f"update {table} set landed_at = now() - interval '8 days' "
                        "where email = 'patient@example.com'")
    run_dbt(["run", *others], url, target_path=dbt_target)  # its on-run-end purges what every model has read
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from intermediate.incremental_contact_changes "
                    "where email = 'patient@example.com'")
        assert cur.fetchone()[0] > 0
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert profile(url, "patient@example.com")["all"]["accepts_marketing"]
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select accepts_marketing from crm.contacts where email = 'patient@example.com'")
        assert cur.fetchone() == (True,)
    assert_equals_full_refresh(url, dbt_target)


def test_accepts_marketing_flips_with_no_order(warehouse, dbt_target):  # B6, S11, P3
    url, _ = warehouse
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 22, "optin@example.com")])
    settle(url, dbt_target)
    assert not profile(url, "optin@example.com")["all"]["accepts_marketing"]

    # Only a newsletter consent lands (B6): no order, no customer record.
    land(url, "bigcommerce_subscribers", [(STORE_A, "22", {
        "id": 22, "email": "optin@example.com", "consents": ["marketing_newsletter"],
        "date_modified": "2024-03-13T00:00:00Z"})])
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert profile(url, "optin@example.com")[STORE_A]["accepts_marketing"]
    assert profile(url, "optin@example.com")["all"]["accepts_marketing"]
    assert_equals_full_refresh(url, dbt_target)


def test_cart_turns_abandoned_with_nothing_landed(warehouse, dbt_target):  # B7, S11, P2, P3
    url, _ = warehouse
    # An incomplete checkout (status 0) idle for 30 minutes: not yet a cart at the default 60 minutes
    # (var abandoned_cart_after_minutes).
    idle_since = rfc2822(datetime.now(UTC) - timedelta(minutes=30))
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 23, "carter@example.com")])
    land(url, "bigcommerce_orders", [(STORE_A, "1023", bigcommerce_order(
        1023, 23, 0, email="carter@example.com", total="7.0000", created=idle_since, modified=idle_since,
        line_items=[bigcommerce_line(23, 501, "Widget", "7.0000", 1, "W-1")]))])
    settle(url, dbt_target)
    assert not profile(url, "carter@example.com")["all"]["has_abandoned_cart"]

    # Time passes, nothing lands: a 20-minute idle time stands for the clock moving past the cart's hour.
    # A scheduled `dbt build` (models and their data tests, the tests on recent rows only) over it.
    later = {"abandoned_cart_after_minutes": 20}
    built = run_dbt(["build", *SELECTOR, "--indirect-selection", "cautious"], url, later, target_path=dbt_target)
    assert {"contact_ecommerce_profile", "contact_order_history"} <= {
        node.name for node in built.nodes if node.resource_type == "model"}
    assert any(node.resource_type == "test" and "contact_ecommerce_profile" in node.name for node in built.nodes)
    carter = profile(url, "carter@example.com")
    assert carter[STORE_A]["has_abandoned_cart"] and carter["all"]["abandoned_cart_count"] == 1
    assert_equals_full_refresh(url, dbt_target, later)


def test_connection_disabled_then_enabled_renumbers_the_contacts_history(warehouse, dbt_target):  # B11, G1, P3
    url, _ = warehouse
    # two@ has an order in store A (January) and one in store B (February). Disabling store A lands
    # nothing: its orders leave crm.ecom_orders, and the February order becomes two@'s first across all
    # connections; enabling it again brings the January order back.
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 24, "two@example.com"),
                                        bigcommerce_customer(STORE_B, 24, "two@example.com")])
    land(url, "bigcommerce_orders", [(STORE_A, "1024", bigcommerce_order(
        1024, 24, 10, email="two@example.com", total="10.0000",
        created="Mon, 01 Jan 2024 10:00:00 +0000", modified="Mon, 01 Jan 2024 10:00:00 +0000"))])
    land(url, "bigcommerce_orders", [(STORE_B, "2024", bigcommerce_order(
        2024, 24, 10, email="two@example.com", total="5.0000",
        created="Thu, 01 Feb 2024 10:00:00 +0000", modified="Thu, 01 Feb 2024 10:00:00 +0000"))])
    settle(url, dbt_target)
    both = {(STORE_A, "1024", 1, 1000), (STORE_B, "2024", 1, 500), ("all", "1024", 1, 1000), ("all", "2024", 2, 1500)}
    assert order_history(url, "two@example.com") == both

    def set_enabled(enabled: bool) -> None:
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("update state.connections set enabled = %s where connection_id = %s", (enabled, STORE_A))

    set_enabled(False)
    try:
        run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
        assert order_history(url, "two@example.com") == {(STORE_B, "2024", 1, 500), ("all", "2024", 1, 500)}
        assert_equals_full_refresh(url, dbt_target)
    finally:
        set_enabled(True)
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert order_history(url, "two@example.com") == both
    assert_equals_full_refresh(url, dbt_target)


def test_every_incremental_table_has_its_documented_columns(warehouse, dbt_target):  # P3
    # An incremental model whose table lacks a documented column is rebuilt whole (macros/upgrade.sql): the YAML
    # must document exactly what the model builds, or every scheduled run would be a full rebuild.
    url, _ = warehouse
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    manifest = json.loads((dbt_target / "manifest.json").read_text())
    documented = {f"{node['schema']}.{node['alias']}": set(node["columns"]) for node in manifest["nodes"].values()
                  if node["resource_type"] == "model" and node["config"]["materialized"] == "incremental"}
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for table, columns in documented.items():
            schema, name = table.split(".")
            cur.execute("select column_name from information_schema.columns where table_schema = %s "
                        "and table_name = %s", (schema, name))
            assert columns and columns <= {row[0] for row in cur.fetchall()}, table


def test_a_table_an_older_version_of_its_model_built_is_rebuilt_whole(warehouse, dbt_target):  # P3, issue 16
    # An upgrade: each incremental model's table as an older version left it, without a column the model now
    # has (here its landing column, which the change detection reads, or segment_members' evaluation time, which
    # its scheduled data tests read). A scheduled run rebuilds those tables
    # whole instead of failing until someone runs a full refresh by hand, and they equal a full refresh.
    url, _ = warehouse
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for table in INCREMENTAL:
            schema, name = table.split(".")
            cur.execute("select column_name from information_schema.columns where table_schema = %s "
                        "and table_name = %s and column_name in ('last_landed_at', 'landed_at', 'evaluated_at') "
                        "order by column_name desc limit 1", (schema, name))
            (column,) = cur.fetchone()
            cur.execute(f"alter table {table} drop column {column}")
    summary = run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert summary.success
    assert_equals_full_refresh(url, dbt_target)


def test_history_rebuilt_whole_alone_rebuilds_every_profile(warehouse, dbt_target):  # P3, issue 16
    # contact_order_history built whole on its own (a --full-refresh of it alone, or its table upgraded) may have
    # changed every row: the next scheduled run rebuilds every email of the profile, not only the changed ones.
    url, _ = warehouse
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        # what a whole rebuild of the history can change without any landing (say, a changed revenue rule)
        cur.execute("update segments.contact_ecommerce_profile set order_count = order_count + 100")
    run_dbt(["run", "--full-refresh", "-s", "contact_order_history"], url, target_path=dbt_target)
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert_equals_full_refresh(url, dbt_target)


def memberships(url: str, email: str) -> set[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select connection_id, segment_key from segments.segment_members where email = %s", (email,))
        return set(cur.fetchall())


def test_the_clock_moves_a_contact_out_of_a_recent_order_segment(warehouse, dbt_target):  # G1, B13, P2, P3
    url, _ = warehouse
    # clock@ ordered 45 days ago. The build 20 days ago saw a 25-day-old order: clock@ was in
    # last_order_within_30_days. That table is the one a build then left (nothing else changed since):
    # its watermark is moved back 20 days and clock@'s 30-day membership put back as it was evaluated then.
    ordered = datetime.now(UTC) - timedelta(days=45)
    land(url, "bigcommerce_customers", [bigcommerce_customer(STORE_A, 25, "clock@example.com")])
    land(url, "bigcommerce_orders", [(STORE_A, "1025", bigcommerce_order(
        1025, 25, 10, email="clock@example.com", total="12.0000", created=rfc2822(ordered),
        modified=rfc2822(ordered)))])
    settle(url, dbt_target)
    assert (STORE_A, "last_order_within_90_days") in memberships(url, "clock@example.com")
    assert (STORE_A, "last_order_within_30_days") not in memberships(url, "clock@example.com")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("delete from intermediate.incremental_contact_changes")  # what settle's full refresh covers
        cur.execute("update intermediate.incremental_watermarks set built_from = built_from - interval '20 days' "
                    "where model = 'segment_members' or model like '%\\_\\_built\\_whole'")  # settle built all
        cur.execute("""insert into segments.segment_members (email, connection_id, segment_key, since, evaluated_at)
                       select email, connection_id, 'last_order_within_30_days', since, now() - interval '20 days'
                       from segments.segment_members
                       where email = 'clock@example.com' and segment_key = 'last_order_within_90_days'""")
        cur.execute("select max(evaluated_at) from segments.segment_members")
        evaluated_before = cur.fetchone()[0]

    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert (STORE_A, "last_order_within_30_days") not in memberships(url, "clock@example.com")
    assert ("all", "last_order_within_30_days") not in memberships(url, "clock@example.com")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # only the contact the clock moved was rebuilt
        cur.execute("select distinct email from segments.segment_members where evaluated_at > %s",
                    (evaluated_before,))
        assert cur.fetchall() == [("clock@example.com",)]
    assert_equals_full_refresh(url, dbt_target)


def test_a_segment_added_to_the_catalogue_reaches_every_contact(warehouse, dbt_target):  # G1, B13, P3
    url, _ = warehouse
    settle(url, dbt_target)
    # An analyst adds product_count_gte_2 (a threshold var): the catalogue's SQL changed, nothing landed.
    more = {"segment_product_count_thresholds": [1, 2, 5, 10]}
    run_dbt(["run", *SELECTOR], url, more, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(distinct (email, connection_id)) from segments.contact_order_history "
                    "where running_product_count >= 2")
        expected = cur.fetchone()[0]
        cur.execute("select count(*) from segments.segment_members where segment_key = 'product_count_gte_2'")
        assert cur.fetchone()[0] == expected > 0
    assert_equals_full_refresh(url, dbt_target, more)


def test_a_segment_reading_the_clock_in_its_condition_is_refused(warehouse, dbt_target, capsys):  # G1, P3
    url, _ = warehouse
    # A window must be within_days=(column, days): a `where` reading now() would never be rebuilt by the clock;
    # a segment over a model that records no contact change would never be rebuilt by its changes.
    refused = {
        "reads the clock in": {"key": "vip", "from": "contact_ecommerce_profile", "since": "min(last_order_at)",
                               "where": "order_count >= 3 and last_order_at >= now() - interval '180 days'"},
        "segment_members follows only": {"key": "big", "from": "contact_revenue_by_currency",
                                         "since": "min(last_order_at)", "where": "revenue_cents > 100000"},
    }
    for message, arguments in refused.items():
        capsys.readouterr()
        with pytest.raises(DbtRunError):
            run_dbt(["run-operation", "segment", "--args", json.dumps(arguments)], url, target_path=dbt_target)
        assert message in capsys.readouterr().out
    within = {"key": "vip", "from": "contact_ecommerce_profile", "since": "min(last_order_at)",
              "where": "order_count >= 3", "within_days": ["last_order_at", 180]}
    run_dbt(["run-operation", "segment", "--args", json.dumps(within)], url, target_path=dbt_target)


def test_a_source_built_whole_alone_rebuilds_every_segment_member(warehouse, dbt_target):  # G1, P3, issue 16
    # purchased_products built whole on its own (a --full-refresh of it alone, or its table upgraded) may have
    # changed every row while recording no contact: the next scheduled run rebuilds every email's memberships.
    url, _ = warehouse
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        # what a whole rebuild of a source can change without any landing (say, a changed product key rule)
        cur.execute("delete from segments.segment_members where segment_key like 'purchased_product:%'")
        assert cur.rowcount > 0
    run_dbt(["run", "--full-refresh", "-s", "purchased_products"], url, target_path=dbt_target)
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    assert_equals_full_refresh(url, dbt_target)


def test_scheduled_data_tests_of_segment_members_check_the_latest_build(warehouse, dbt_target):  # P2, P3
    # segment_members is evaluated, not landed: a scheduled test checks the rows its latest build rebuilt.
    url, _ = warehouse
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # a broken row an earlier build left
        cur.execute("""insert into segments.segment_members (email, connection_id, segment_key, since, evaluated_at)
                       select email, connection_id, null, since,
                              (select built_from - interval '1 hour' from intermediate.incremental_watermarks
                               where model = 'segment_members')
                       from segments.segment_members limit 1""")
    scheduled = ["test", "-s", "segment_members", "--indirect-selection", "cautious"]
    assert run_dbt(scheduled, url, target_path=dbt_target).success
    with pytest.raises(DbtRunError) as failure:
        run_dbt(scheduled, url, {"data_tests_on_all_rows": True}, target_path=dbt_target)
    assert any(node.name.startswith("not_null_segment_members_segment_key")
               for node in failure.value.summary.failed_nodes)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:  # the same row written by the latest build
        cur.execute("update segments.segment_members set evaluated_at = (select built_from from "
                    "intermediate.incremental_watermarks where model = 'segment_members') where segment_key is null")
    with pytest.raises(DbtRunError):
        run_dbt(scheduled, url, target_path=dbt_target)
    run_dbt(["run", "--full-refresh", "-s", "segment_members"], url, target_path=dbt_target)


def test_bookkeeping_tables_of_an_older_version_get_their_new_columns(warehouse, dbt_target):  # P3, issue 16
    # A warehouse built before segment_members was incremental: its watermark and contact-change tables lack
    # definition_hash and recorded_by. The next build adds them (on-run-start) and stays equal to a full refresh.
    url, _ = warehouse
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("alter table intermediate.incremental_watermarks drop column definition_hash")
        cur.execute("alter table intermediate.incremental_contact_changes drop column recorded_by")
    run_dbt(["run", *SELECTOR], url, target_path=dbt_target)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from information_schema.columns where table_schema = 'intermediate' "
                    "and column_name in ('definition_hash', 'recorded_by')")
        assert cur.fetchone()[0] == 2
    assert_equals_full_refresh(url, dbt_target)
