"""Incremental models equal a full refresh, row for row (G1, P2, P3).

A scheduled ``dbt run`` after new landings must leave every incremental model (and the marts built on
them) exactly as ``--full-refresh`` would build them from the same raw tables, while rebuilding only
what landed since the models' newest rows minus the look-back (var ``incremental_lookback_hours``).
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from raw_warehouse_fixture import (
    STORE_A,
    bigcommerce_line,
    bigcommerce_order,
    bigcommerce_refund,
    land,
    land_hand_checked_fixture,
)

from ecomsync.dbt import DbtRunError, run_dbt

# Every incremental model, and every crm mart (the load reads them: they must match too).
INCREMENTAL = [
    "intermediate.int_customers_unioned", "intermediate.int_orders_unioned", "intermediate.int_order_lines_enriched",
    "intermediate.int_orders_enriched", "crm.ecom_orders",
    "segments.purchased_products", "segments.purchased_categories",
]
COMPARED = [*INCREMENTAL, "crm.contacts", "crm.ecom_customers",
            "crm.excluded_records", "crm.abandoned_carts", "crm.connections"]
SELECTOR = ["-s", "+purchased_products", "+purchased_categories", "+path:models/marts/crm"]


def snapshot(url: str, table: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"select * from {table}")
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


def assert_equals_full_refresh(url: str, dbt_target) -> None:
    incremental = {table: snapshot(url, table) for table in COMPARED}
    run_dbt(["run", "--full-refresh", *SELECTOR], url, target_path=dbt_target)
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
    # models must not keep, nor later re-publish, an order whose raw record is gone.
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
