"""Issue 13, the modelling rows: money, status and refunds as the real APIs define them, through a real
``dbt build`` over raw rows in the official shapes (orders.v2.oas2.yml, orders.v3.yml, api.json).

The revenue rule (macros/revenue.sql, docs/analysts.md "Revenue"): revenue = money actually taken minus
money given back; failed, declined, cancelled, archived and incomplete orders and payments count zero.
``crm.ecom_orders.total_price_cents`` is that revenue, so the CRM's totals (it sums totalPrice) and the
segments agree; the gross stays available as its own column.
"""
from __future__ import annotations

import functools

import psycopg2
import pytest
from raw_warehouse_fixture import (
    applied_discount,
    bigcommerce_line,
    bigcommerce_order,
    bigcommerce_refund,
    land,
)

from ecomsync.dbt import run_dbt
from tests.conftest import dict_rows

STORE = "bigcommerce:r3v3nu3aaa"
OTHER_STORE = "bigcommerce:c4rr3ncyzz"
LOCATION = "square:LOCREV"
JULY = "Mon, 01 Jul 2024 10:00:00 +0000"


def order(order_id: int, status_id: int, total: str, customer_id: int = 1, **fields) -> dict:
    fields.setdefault("email", "rita@example.com")
    return bigcommerce_order(order_id, customer_id, status_id, total=total, created=JULY, modified=JULY, **fields)


def payment(payment_id: str, amount: int, status: str, customer_id: str = "SQR", *, refunded: int | None = None,
            order_id: str | None = None, created: str = "2024-07-01T10:00:00Z") -> dict:
    """api.json Payment: money is {amount: integer minor units, currency}."""
    record = {"id": payment_id, "location_id": "LOCREV", "status": status, "customer_id": customer_id,
              "amount_money": {"amount": amount, "currency": "USD"},
              "total_money": {"amount": amount, "currency": "USD"}, "created_at": created, "updated_at": created}
    if refunded is not None:
        record["refunded_money"] = {"amount": refunded, "currency": "USD"}
    if order_id is not None:
        record["order_id"] = order_id
    return record


def land_revenue_cases(url: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into state.connections (connection_id, source, external_id, name, link_url) values (%s,%s,%s,%s,%s)",
            [(STORE, "bigcommerce", "r3v3nu3aaa", "Revenue store", "https://rev.example.com"),
             (OTHER_STORE, "bigcommerce", "c4rr3ncyzz", "Currency store", "https://cur.example.com"),
             (LOCATION, "square", "LOCREV", "LOCREV", None)],
        )
    customer = {"id": 1, "email": "rita@example.com", "first_name": "Rita", "last_name": "Revenue",
                "date_created": "2020-01-01T00:00:00Z", "date_modified": "2020-01-01T00:00:00Z"}
    land(url, "bigcommerce_customers", [
        (STORE, "1", customer),
        (STORE, "2", {**customer, "id": 2, "email": "arch@example.com"}),
        (STORE, "3", {**customer, "id": 3, "email": "stat@example.com"}),
        (OTHER_STORE, "1", {**customer, "email": "cad@example.com"}),
    ])
    land(url, "bigcommerce_orders", [
        # issue 13 row 4: 80.00 completed, 200.00 fully refunded, 100.00 with 40.00 refunded → net 140
        (STORE, "101", order(101, 10, "80.0000")),
        (STORE, "102", order(102, 4, "200.0000")),
        (STORE, "103", order(103, 14, "100.0000")),
        # issue 13 row 6: 900.00 archived next to a live 30.00 order
        (STORE, "201", {**order(201, 10, "900.0000", customer_id=2, email="arch@example.com"), "is_deleted": True}),
        (STORE, "202", order(202, 10, "30.0000", customer_id=2, email="arch@example.com")),
        # every status still syncs (B4); cancelled, declined and pending count zero
        *[(STORE, str(300 + status), order(300 + status, status, "10.0000", customer_id=3, email="stat@example.com"))
          for status in (1, 5, 6, 7, 11, 12, 13)],
        # issue 13 row 1: displayed in CAD, paid in USD; and paid in yen (no minor unit), displayed in USD
        (OTHER_STORE, "401", order(
            401, 10, "100.0000", email="cad@example.com", currency="USD", display_currency="CAD",
            line_items=[bigcommerce_line(1, 9, "Maple", "100.0000", 1,
                                         discounts=[applied_discount("5.0000", "MAPLE5")])])),
        (OTHER_STORE, "402", order(
            402, 10, "1500.0000", email="cad@example.com", currency="JPY", display_currency="USD",
            line_items=[bigcommerce_line(2, 9, "Maple", "1500.0000", 1,
                                         discounts=[applied_discount("150.0000", None)])])),
    ])
    land(url, "bigcommerce_refunds", [
        (STORE, "1", bigcommerce_refund(1, 102, 150.00)),
        (STORE, "2", bigcommerce_refund(2, 102, 50.00, offline=True)),  # offline: still given back
        (STORE, "3", bigcommerce_refund(3, 103, 40.00)),
        (STORE, "4", bigcommerce_refund(4, 103, 60.00, declined=True)),  # the provider declined: nothing back
    ])

    land(url, "square_customers", [
        (LOCATION, "SQR", {"id": "SQR", "given_name": "Sam", "email_address": "sam@example.com",
                           "created_at": "2021-01-01T00:00:00Z", "updated_at": "2021-01-01T00:00:00Z"}),
        (LOCATION, "SQF", {"id": "SQF", "given_name": "Fay", "email_address": "fay@example.com",
                           "created_at": "2021-01-01T00:00:00Z", "updated_at": "2021-01-01T00:00:00Z"}),
    ])
    land(url, "square_orders", [
        # issue 13 row 5: the only line is a CUSTOM_AMOUNT without a name (api.json OrderLineItem)
        (LOCATION, "ORDC", {"id": "ORDC", "location_id": "LOCREV", "customer_id": "SQR", "state": "COMPLETED",
                            "line_items": [{"uid": "C1", "quantity": "1", "item_type": "CUSTOM_AMOUNT",
                                            "base_price_money": {"amount": 5000, "currency": "USD"},
                                            "total_money": {"amount": 5000, "currency": "USD"}}],
                            "created_at": "2024-07-01T10:00:00Z", "updated_at": "2024-07-01T10:00:00Z"}),
        (LOCATION, "ORDQ", {"id": "ORDQ", "location_id": "LOCREV", "customer_id": "SQR", "state": "OPEN",
                            "line_items": [{"uid": "Q1", "item_type": "CUSTOM_AMOUNT",
                                            "total_money": {"amount": 700, "currency": "USD"}}],
                            "created_at": "2024-07-02T10:00:00Z", "updated_at": "2024-07-02T10:00:00Z"}),
    ])
    land(url, "square_payments", [
        # issue 13 row 4: 50.00 fully refunded + 7.00 → 7
        (LOCATION, "PREF", payment("PREF", 5000, "COMPLETED", refunded=5000, order_id="ORDC")),
        (LOCATION, "PSEV", payment("PSEV", 700, "COMPLETED", order_id="ORDQ", created="2024-07-02T10:00:00Z")),
        # issue 13 row 3: a COMPLETED 12.50, then a FAILED 480.00 (a declined card)
        (LOCATION, "POK", payment("POK", 1250, "COMPLETED", customer_id="SQF", created="2024-07-03T10:00:00Z")),
        (LOCATION, "PFAIL", payment("PFAIL", 48000, "FAILED", customer_id="SQF", created="2024-07-03T10:05:00Z")),
        (LOCATION, "PCAN", payment("PCAN", 900, "CANCELED", customer_id="SQF", created="2024-07-03T10:06:00Z")),
        # being taken: a purchase, but no money yet
        (LOCATION, "PAPP", payment("PAPP", 300, "APPROVED", customer_id="SQF", created="2024-07-03T10:07:00Z")),
    ])


@pytest.fixture(scope="module")
def built(empty_warehouse, dbt_target):
    land_revenue_cases(empty_warehouse)
    summary = run_dbt(["build"], empty_warehouse, target_path=dbt_target)
    return empty_warehouse, summary


@pytest.fixture(scope="module")
def query(built):
    url, _ = built
    return functools.partial(dict_rows, url)


@pytest.fixture(scope="module")
def orders(query) -> dict[str, dict]:
    return {row["order_key"]: row for row in query("select * from crm.ecom_orders")}


@pytest.fixture(scope="module")
def excluded(query) -> dict[tuple[str, str], str]:
    return {(row["connection_id"], row["external_id"]): row["reason"]
            for row in query("select * from crm.excluded_records where record_type = 'order'")}


@pytest.fixture(scope="module")
def profiles(query) -> dict[tuple[str, str], dict]:
    return {(row["email"], row["connection_id"]): row
            for row in query("select * from segments.contact_ecommerce_profile")}


def test_the_build_passes(built):  # P3
    _, summary = built
    assert summary.failed_nodes == []


def test_money_is_in_the_transactional_currency(orders, profiles):  # B12, G1
    cad = orders[f"{OTHER_STORE}|401"]
    # "100.0000" with currency_code CAD and default_currency_code USD is 100.00 USD
    assert (cad["currency"], cad["total_price_cents"]) == ("USD", 10000)
    assert cad["order_products"][0]["price"] == 10000
    assert cad["order_discounts"] == [{"name": "MAPLE5", "type": "order", "discountAmount": 500}]
    # paid in yen (no minor unit), displayed in USD: 1500 yen, not 150000 "cents"
    yen = orders[f"{OTHER_STORE}|402"]
    assert (yen["currency"], yen["total_price_cents"], yen["order_products"][0]["price"]) == ("JPY", 1500, 1500)
    assert yen["order_discounts"] == [{"name": "Manual Discount", "type": "order", "discountAmount": 150}]
    assert profiles[("cad@example.com", "all")]["revenue_cents_by_currency"] == {"USD": 10000, "JPY": 1500}


def test_bigcommerce_revenue_is_net_of_refunds(orders, profiles):  # B4, B12, G1
    totals = {key: orders[f"{STORE}|{key}"]["total_price_cents"] for key in ("101", "102", "103")}
    # 200.00 refunded in two refunds (one offline); 40.00 refunded, a declined 60.00 refund gave nothing back
    assert totals == {"101": 8000, "102": 0, "103": 6000}
    # every status still syncs with its status (B4)
    assert (orders[f"{STORE}|102"]["status"], orders[f"{STORE}|103"]["status"]) == ("Refunded", "Partially Refunded")
    rita = profiles[("rita@example.com", STORE)]
    # what the CRM computes (sum of totalPrice) and the segments agree: 140, gross 380
    assert rita["revenue_cents_by_currency"] == {"USD": 14000} == {"USD": sum(totals.values())}
    assert rita["gross_revenue_cents_by_currency"] == {"USD": 38000}
    assert (rita["order_count"], rita["purchase_count"]) == (3, 3)


def test_archived_order_is_excluded_and_not_revenue(orders, excluded, profiles):  # B4, G1
    assert f"{STORE}|201" not in orders
    assert excluded[(STORE, "201")] == "archived_order"
    assert profiles[("arch@example.com", "all")]["revenue_cents_by_currency"] == {"USD": 3000}
    assert profiles[("arch@example.com", "all")]["order_count"] == 1


def test_every_status_syncs_but_only_money_taken_is_revenue(orders, profiles):  # B4, G1
    by_status = {orders[f"{STORE}|{300 + s}"]["status"]: (orders[f"{STORE}|{300 + s}"]["total_price_cents"],
                                                          orders[f"{STORE}|{300 + s}"]["is_purchase"])
                 for s in (1, 5, 6, 7, 11, 12, 13)}
    assert by_status == {
        "Pending": (0, False), "Cancelled": (0, False), "Declined": (0, False),
        "Awaiting Payment": (0, True), "Manual Verification Required": (0, True),
        "Awaiting Fulfillment": (1000, True), "Disputed": (1000, True),
    }
    stat = profiles[("stat@example.com", STORE)]
    assert stat["revenue_cents_by_currency"] == {"USD": 2000}
    assert (stat["order_count"], stat["purchase_count"]) == (7, 4)


def test_failed_or_cancelled_square_payment_is_no_purchase(orders, excluded, profiles, query):  # S11, S12, G1
    assert excluded[(LOCATION, "PFAIL")] == "payment_failed"
    assert excluded[(LOCATION, "PCAN")] == "payment_canceled"
    assert f"{LOCATION}|PFAIL" not in orders and f"{LOCATION}|PCAN" not in orders
    assert (orders[f"{LOCATION}|POK"]["total_price_cents"], orders[f"{LOCATION}|POK"]["is_purchase"]) == (1250, True)
    # APPROVED: being taken — a purchase, but no revenue yet
    approved = orders[f"{LOCATION}|PAPP"]
    assert (approved["status"], approved["total_price_cents"], approved["is_purchase"]) == ("Pending", 0, True)
    fay = profiles[("fay@example.com", "all")]
    assert fay["revenue_cents_by_currency"] == {"USD": 1250}
    assert fay["order_count"] == 2  # POK and PAPP; the failed and cancelled attempts are no orders
    history = query("select order_key from segments.contact_order_history where email = 'fay@example.com' "
                    "and connection_id = 'all' order by order_sequence")
    assert [row["order_key"] for row in history] == [f"{LOCATION}|POK", f"{LOCATION}|PAPP"]


def test_square_revenue_is_net_of_refunded_money(orders, profiles, query):  # S11, S12, G1
    assert orders[f"{LOCATION}|PREF"]["total_price_cents"] == 0
    assert orders[f"{LOCATION}|PREF"]["status"] == "Refunded"
    sam = profiles[("sam@example.com", LOCATION)]
    assert sam["revenue_cents_by_currency"] == {"USD": 700}
    assert sam["gross_revenue_cents_by_currency"] == {"USD": 5700}
    members = {row["segment_key"] for row in query(
        "select segment_key from segments.segment_members where email = 'sam@example.com' and connection_id = 'all'")}
    assert "total_revenue_gte_100_usd" not in members  # 57.00 gross would not reach it either; 7.00 net surely not
    gross = {row["order_key"]: row["gross_price_cents"] for row in query(
        "select order_key, gross_price_cents from segments.contact_order_history where email = 'sam@example.com' "
        "and connection_id = 'all'")}
    assert gross == {f"{LOCATION}|PREF": 5000, f"{LOCATION}|PSEV": 700}


def test_nameless_custom_amount_line_gets_defaults_and_the_order_arrives(orders):  # S12, S11
    [custom] = orders[f"{LOCATION}|PREF"]["order_products"]
    assert (custom["externalid"], custom["name"], custom["quantity"], custom["price"]) == (
        "custom:C1", "Custom amount", 1, 5000)
    # no quantity and no base price: quantity 1, unit price from the line total
    [bare] = orders[f"{LOCATION}|PSEV"]["order_products"]
    assert (bare["name"], bare["quantity"], bare["price"]) == ("Custom amount", 1, 700)


def test_revenue_thresholds_follow_net_revenue(query):  # G1
    members = {(row["email"], row["segment_key"]) for row in query(
        "select email, segment_key from segments.segment_members where connection_id = 'all'")}
    # fay: 12.50 taken; the failed 480.00 attempt would have crossed 100 USD
    assert ("fay@example.com", "total_revenue_gte_100_usd") not in members
    assert ("fay@example.com", "order_count_gte_1") in members
    # rita: 140.00 net crosses 100 USD
    assert ("rita@example.com", "total_revenue_gte_100_usd") in members


def test_before_the_refunds_table_exists_net_is_gross(warehouse_url, tmp_path):  # B12, P3
    # a warehouse whose extract has not created raw.bigcommerce_refunds yet: the build goes on, net = gross
    from raw_warehouse_fixture import create_warehouse_tables

    create_warehouse_tables(warehouse_url)
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("drop table raw.bigcommerce_refunds")
        cur.execute("insert into state.connections (connection_id, source, external_id, name) "
                    "values (%s, 'bigcommerce', 'r3v3nu3aaa', 'R')", (STORE,))
    land(warehouse_url, "bigcommerce_customers", [(STORE, "1", {"id": 1, "email": "rita@example.com"})])
    land(warehouse_url, "bigcommerce_orders", [(STORE, "103", order(103, 14, "100.0000"))])
    summary = run_dbt(["run", "-s", "+ecom_orders"], warehouse_url, target_path=tmp_path)
    assert summary.failed_nodes == []
    [row] = dict_rows(warehouse_url, "select total_price_cents from crm.ecom_orders")
    assert row["total_price_cents"] == 10000
