"""The bad-input catalogue (issue 9, item 4; issue 15): real-shaped API payloads that are odd or wrong,
landed by the real landing code, modelled by one ``dbt build``; each case asserts what reaches the crm
marts, or that it is in ``crm.excluded_records`` with its reason. One bad record must never fail the
whole build. Values today's landing code cannot take (an email that is a JSON number) are inserted as
raw rows directly (the fixture's ``land``): the models must survive them whoever lands them.
"""
from __future__ import annotations

import functools
from datetime import UTC, datetime

import psycopg2
import pytest

from ecomsync.dbt import DbtRunError, run_dbt
from ecomsync.sources import bigcommerce, square
from ecomsync.streams import Stream
from ecomsync.warehouse import RawRecord, Warehouse
from tests.conftest import dict_rows
from tests.integration.dbt.raw_warehouse_fixture import bigcommerce_line, bigcommerce_order, bigcommerce_refund, land

STORE_A = "bigcommerce:k3x9q2m7a1"
STORE_B = "bigcommerce:p8w4z6t2n5"
LOCATION_ID = "LOCREL"
LOCATION = f"square:{LOCATION_ID}"
SQUARE_STREAMS = {s.name: s for s in square.streams_for(LOCATION_ID, datetime(2000, 1, 1, tzinfo=UTC), 72)}

LONG_LATIN = "Ł" * 10_000
LONG_ACCENTED = "é" * 10_000
SCRIPT = "<script>alert('x')</script>"
SQL_NAME = "Robert'); DROP TABLE raw.bigcommerce_customers;--"
SQL_SHIPPING = "'; DELETE FROM crm.ecom_orders; --"
HTML_LINE = "<img src=x onerror=alert(1)>"
JULY = "Mon, 01 Jul 2024 10:00:00 +0000"


def land_page(warehouse: Warehouse, stream: Stream, connection_id: str, page: list[dict]) -> int:
    """One API page through the extract's own record building and landing (primary key, flag, replication key)."""
    records = [RawRecord(stream.primary_key(item), item,
                         stream.replication_key(item) if stream.replication_key else None, stream.flag(item))
               for item in stream.transform(page)]
    with warehouse.transaction() as conn:
        return warehouse.land(conn, stream.table, connection_id, records, "bad-input-run", "incremental")


def bc_customer(customer_id: int, email: str | None, first: str, last: str | None = "Doe",
                modified: str = "2024-01-01T00:00:00Z", **extra) -> dict:
    customer = {"id": customer_id, "first_name": first, "last_name": last, "phone": "",
                "date_created": "2020-01-01T00:00:00Z", "date_modified": modified, **extra}
    if email is not None:
        customer["email"] = email
    return customer


def order(order_id: int, customer_id: int = 101, status_id: int = 10, total: str = "10.0000", **fields) -> dict:
    fields.setdefault("email", "zoe@example.com")
    fields.setdefault("created", JULY)
    fields.setdefault("modified", JULY)
    return bigcommerce_order(order_id, customer_id, status_id, total=total, **fields)


def sq_customer(customer_id: str, email: str | None, given: str, family: str = "Square",
                updated: str = "2022-01-01T00:00:00Z") -> dict:
    customer = {"id": customer_id, "given_name": given, "family_name": family,
                "created_at": "2021-01-01T00:00:00Z", "updated_at": updated}
    if email is not None:
        customer["email_address"] = email
    return customer


def payment(payment_id: str, amount: int, customer_id: str | None = "SQZ", currency: str = "USD",
            created: str = "2024-07-01T10:00:00Z", order_id: str | None = None, refunded: int | None = None) -> dict:
    record = {"id": payment_id, "location_id": LOCATION_ID, "status": "COMPLETED",
              "amount_money": {"amount": amount, "currency": currency},
              "total_money": {"amount": amount, "currency": currency},
              "created_at": created, "updated_at": created}
    if customer_id is not None:
        record["customer_id"] = customer_id
    if order_id is not None:
        record["order_id"] = order_id
    if refunded is not None:
        record["refunded_money"] = {"amount": refunded, "currency": currency}
    return record


def land_bad_input(url: str) -> Warehouse:
    warehouse = Warehouse(url)
    warehouse.ensure_schema()
    warehouse.register_connection(STORE_A, "bigcommerce", "k3x9q2m7a1", "Store A", "https://a.example.com", True)
    warehouse.register_connection(STORE_B, "bigcommerce", "p8w4z6t2n5", "Store B", "https://b.example.com", True)
    warehouse.register_connection(LOCATION, "square", LOCATION_ID, LOCATION_ID, None, True)

    land_page(warehouse, bigcommerce.CUSTOMERS, STORE_A, [
        bc_customer(101, "Zoe@Example.com", "Zoë", "Ångström-Łukasiewicz", modified="2024-01-01T00:00:00Z"),
        bc_customer(102, "", "Empty"),
        bc_customer(103, None, "Absent"),
        bc_customer(104, "   ", "Blank"),
        bc_customer(105, "ada@@example.com", "Double"),
        bc_customer(106, "john@localhost", "Local"),
        bc_customer(107, "long@example.com", LONG_LATIN, "Long"),
        bc_customer(108, "o'brien+tag@example.com", SCRIPT, SQL_NAME),
        # a field the API added, and fields it stopped sending (phone, last_name)
        {"id": 109, "email": "newfield@example.com", "first_name": "New", "date_created": "2020-01-01T00:00:00Z",
         "date_modified": "2024-01-01T00:00:00Z", "channel_ids": [1], "field_added_in_2026": {"nested": [1, 2]}},
    ])
    land_page(warehouse, bigcommerce.CUSTOMERS, STORE_B, [
        bc_customer(201, " zoe@EXAMPLE.COM ", "Zoe", "Bee", modified="2023-01-01T00:00:00Z"),
    ])
    land_page(warehouse, bigcommerce.CATEGORIES, STORE_A, [{"id": 31, "parent_id": 0, "name": "Lamps & <Lights>"}])
    land_page(warehouse, bigcommerce.PRODUCTS, STORE_A, [
        {"id": 601, "name": "<b>Bold</b> Lamp 'n' \"Shade\"", "sku": "L-1", "categories": [31],
         "custom_url": {"url": "/lamp/"}, "images": [], "date_modified": "2024-01-01T00:00:00+00:00"},
    ])

    without_consignments = order(5014, total="7.0000")
    for absent in ("consignments", "shipping_cost_inc_tax", "is_email_opt_in"):
        del without_consignments[absent]
    without_currency = order(5017)
    del without_currency["default_currency_code"]  # the transactional currency: the money's
    numeric_total = order(5016)
    numeric_total["total_inc_tax"] = 12.34  # a JSON number where the API documents a string
    numeric_total["field_added_in_2026"] = {"anything": True}

    land_page(warehouse, bigcommerce.ORDERS, STORE_A, [
        order(5001, customer_id=0, email="guest@example.com", total="50.0000"),
        order(5002, customer_id=102, email="empty@example.com"),
        order(5003, customer_id=105, email="ada@@example.com"),
        order(5004, total="0.0000"),
        order(5005, total="-5.0000"),
        {**order(5006, status_id=4, total="25.0000"), "refunded_amount": "25.0000"},
        {**order(5007, status_id=14, total="40.0000"), "refunded_amount": "10.0000"},
        order(5008, currency="XYZ"),
        order(5009, line_items=[bigcommerce_line(91, 0, "Gift wrap <b>deluxe</b>", "2.0000", 1),
                                bigcommerce_line(92, 999, "Discontinued Lamp", "30.0000", 1, "DL-9"),
                                bigcommerce_line(93, 601, "Bold Lamp", "15.0000", 2)]),
        order(5010, created="Sun, 31 Dec 2023 23:30:00 -0930", modified="01 Jan 2024 23:45:00 +1345"),
        order(5011, total="1.0050", shipping="0.0250", tax="0.1450", discount="0.0049",
              line_items=[bigcommerce_line(94, 601, "Bold Lamp", "19.9999", 3)]),
        order(5012, status_id=11, modified="Tue, 02 Jul 2024 10:00:00 +0000"),
        order(5013),
        order(5013),
        without_consignments,
        order(5015, created="Tue, 02 Jan 2024 00:00:00 GMT", modified="Tue, 02 Jan 2024 00:00:00 GMT"),
        numeric_total,
        without_currency,
        order(5018, shipping_method=SQL_SHIPPING, line_items=[bigcommerce_line(95, 601, HTML_LINE, "1.0000", 1)]),
    ])
    # The same order again on the next page, changed in between (it moved to the end of the sort order).
    land_page(warehouse, bigcommerce.ORDERS, STORE_A, [
        order(5012, status_id=2, modified="Tue, 02 Jul 2024 11:00:00 +0000"),
    ])

    land_issue_15_cases(url)

    land_page(warehouse, SQUARE_STREAMS["locations"], LOCATION, [
        {"id": LOCATION_ID, "name": "Café Zürich 🙂", "status": "ACTIVE"}])
    land_page(warehouse, SQUARE_STREAMS["customers"], LOCATION, [
        sq_customer("SQZ", "ZOE@example.com", "Zoe", updated="2022-01-01T00:00:00Z"),
        sq_customer("SQNOMAIL", None, "Nomail"),
        sq_customer("SQBAD", "zoe at example dot com", "Bad"),
        sq_customer("SQLONG", "longsq@example.com", LONG_ACCENTED, "名前"),
    ])
    land_page(warehouse, SQUARE_STREAMS["catalog"], LOCATION, [
        {"type": "ITEM", "id": "ITDEL", "is_deleted": True, "updated_at": "2024-01-01T00:00:00Z",
         "item_data": {"name": "Old Mug", "categories": [{"id": "CATM"}]}},
        {"type": "ITEM_VARIATION", "id": "VARDEL", "is_deleted": True, "updated_at": "2024-01-01T00:00:00Z",
         "item_variation_data": {"item_id": "ITDEL", "name": "Regular", "sku": "MUG-R"}},
        {"type": "CATEGORY", "id": "CATM", "updated_at": "2024-01-01T00:00:00Z", "category_data": {"name": "Mugs"}},
    ])
    land_page(warehouse, SQUARE_STREAMS["orders"], LOCATION, [
        {"id": "ORDA", "location_id": LOCATION_ID, "customer_id": "SQZ", "state": "COMPLETED",
         "line_items": [{"uid": "LA1", "catalog_object_id": "VARDEL", "name": "Old Mug", "quantity": "1",
                         "base_price_money": {"amount": 300, "currency": "USD"}},
                        {"uid": "LA2", "catalog_object_id": "VARGONE", "name": "Ghost item", "quantity": "2",
                         "base_price_money": {"amount": 150, "currency": "USD"}}],
         "created_at": "2024-03-09T20:40:00Z", "updated_at": "2024-03-09T20:45:00Z"},
    ])
    land_page(warehouse, SQUARE_STREAMS["payments"], LOCATION, [
        payment("PAYG", 500, customer_id=None),
        payment("PAYNOMAIL", 500, customer_id="SQNOMAIL"),
        payment("PAYBAD", 500, customer_id="SQBAD"),
        payment("PAYZERO", 0),
        payment("PAYFULL", 1000, refunded=1000),
        payment("PAYPART", 1000, refunded=250),
        payment("PAYCUR", 700, currency="ABC"),
        payment("PAYODD", 600, created="2024-03-10T02:30:00.5+05:45", order_id="ORDA"),
    ])
    return warehouse


def land_issue_15_cases(url: str) -> None:
    """Issue 15: every cast in staging is safe; what cannot be read is excluded with its reason."""
    land(url, "bigcommerce_orders", [
        (STORE_A, "5019", order(5019, status_id=15)),  # a status the pipeline does not know
        (STORE_A, "5020", order(5020, total="")),  # total_inc_tax: ""
        (STORE_A, "5021", order(5021, created="last Tuesday")),  # an unreadable date
        (STORE_A, "5022", order(5022, created="Thu, 31 Feb 2024 10:00:00 +0000")),  # the right shape, no such day
        (STORE_A, "5023", order(5023, total="19.99999")),  # 5-decimal money
        (STORE_A, "5024", {**order(5024), "status_id": "10"}),  # a string for a number
        (STORE_A, "5025", {**order(5025), "total_inc_tax": {"amount": "10.0000"}}),  # an object for a string
        (STORE_A, "5026", order(5026, line_items=[{**bigcommerce_line(96, 601, "Lamp", "1.0000", 1),
                                                   "quantity": "two"}])),
        (STORE_A, "5027", order(5027, status_id=14, total="30.0000")),
        (STORE_A, "5028", [5028, "not an order object"]),  # a payload that is no object at all
        (STORE_A, "5029", order(5029, created="Sat, 01 Jan 99999 00:00:00 +0000")),  # the far future
        (STORE_B, "6001", order(6001, customer_id=201, email="zoe@example.com")),  # the other store goes on
    ])
    # a NUL in a name (the API's JSON escape \u0000): Postgres jsonb refuses it, so landing records a rejection
    land_page(Warehouse(url), bigcommerce.CUSTOMERS, STORE_A, [bc_customer(112, "nul@example.com", "Nul\x00")])
    land(url, "bigcommerce_customers", [
        (STORE_A, "110", bc_customer(110, 12345, "Numeric")),  # a JSON number for the email
        (STORE_A, "111", bc_customer(111, "num@example.com", 42, last=["a", "list"])),  # numbers for names
    ])
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("create table if not exists raw.bigcommerce_refunds (like raw.bigcommerce_orders including all)")
    land(url, "bigcommerce_refunds", [
        (STORE_A, "1", {**bigcommerce_refund(1, 5027, 10.0), "payments": [{"amount": "lots", "is_declined": False}]}),
    ])
    land(url, "square_payments", [
        (LOCATION, "PAYWEIRD", {**payment("PAYWEIRD", 100), "status": "WEIRD"}),
        (LOCATION, "PAYTEXT", {**payment("PAYTEXT", 100), "amount_money": {"amount": "abc", "currency": "USD"}}),
        (LOCATION, "PAYFLOAT", {**payment("PAYFLOAT", 100), "amount_money": {"amount": 12.5, "currency": "USD"}}),
        (LOCATION, "PAYWHEN", {**payment("PAYWHEN", 100), "created_at": "yesterday"}),
        (LOCATION, "PAYSTR", {**payment("PAYSTR", 100), "amount_money": {"amount": "250", "currency": "usd"}}),
    ])


@pytest.fixture(scope="module")
def build(module_warehouse, dbt_target):
    """(url, summary or the DbtRunError): a failing build is asserted on, not hidden in a fixture error."""
    land_bad_input(module_warehouse)
    try:
        return module_warehouse, run_dbt(["build"], module_warehouse, target_path=dbt_target)
    except DbtRunError as failure:
        return module_warehouse, failure


@pytest.fixture(scope="module")
def query(build):
    url, _ = build
    return functools.partial(dict_rows, url)


@pytest.fixture(scope="module")
def orders(query) -> dict[str, dict]:
    return {row["order_key"]: row for row in query("select * from crm.ecom_orders")}


@pytest.fixture(scope="module")
def excluded(query) -> dict[tuple[str, str, str], dict]:
    return {(row["connection_id"], row["record_type"], row["external_id"]): row
            for row in query("select * from crm.excluded_records")}


@pytest.fixture(scope="module")
def contacts(query) -> dict[str, dict]:
    return {row["email"]: row for row in query("select * from crm.contacts")}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_bad_records_never_fail_the_build(build):  # P3
    _, outcome = build
    assert not isinstance(outcome, DbtRunError), str(outcome)
    assert outcome.failed_nodes == []


def test_a_record_the_extract_could_not_land_is_reported_with_its_reason(excluded, contacts):  # B10, P2, issue 15
    rejected = excluded[(STORE_A, "landing_rejection", "bigcommerce_customers:112")]
    assert rejected["reason"] == "rejected_at_landing"
    assert "payload_not_storable" in rejected["detail"] and "Nul" not in rejected["detail"]  # no record content
    assert "nul@example.com" not in contacts


def test_guest_orders_are_excluded_as_guest_checkout(orders, excluded, contacts):  # B5
    assert excluded[(STORE_A, "order", "5001")]["reason"] == "guest_checkout"
    assert excluded[(LOCATION, "order", "PAYG")]["reason"] == "guest_checkout"
    assert f"{STORE_A}|5001" not in orders and f"{LOCATION}|PAYG" not in orders
    assert "guest@example.com" not in contacts


def test_customers_without_or_with_invalid_email_are_excluded_with_their_orders(excluded, orders):  # S1, B5
    reasons = {key: row["reason"] for key, row in excluded.items() if row["reason"].endswith("_email")}
    assert reasons == {
        (STORE_A, "customer", "102"): "missing_email",  # ""
        (STORE_A, "customer", "103"): "missing_email",  # no email field at all
        (STORE_A, "customer", "104"): "missing_email",  # only whitespace
        (STORE_A, "customer", "105"): "invalid_email",
        (STORE_A, "customer", "106"): "invalid_email",  # no dotted domain
        (STORE_A, "customer", "110"): "invalid_email",  # a JSON number
        (STORE_A, "order", "5002"): "missing_email",
        (STORE_A, "order", "5003"): "invalid_email",
        (LOCATION, "customer", "SQNOMAIL"): "missing_email",
        (LOCATION, "customer", "SQBAD"): "invalid_email",
        (LOCATION, "order", "PAYNOMAIL"): "missing_email",
        (LOCATION, "order", "PAYBAD"): "invalid_email",
    }
    assert "ada@@example.com" in excluded[(STORE_A, "customer", "105")]["detail"]
    assert not {f"{STORE_A}|5002", f"{STORE_A}|5003", f"{LOCATION}|PAYNOMAIL", f"{LOCATION}|PAYBAD"} & set(orders)


def test_the_same_email_in_different_case_across_stores_is_one_contact(query, contacts):  # G1, B3, S10
    zoe = contacts["zoe@example.com"]
    assert sorted(zoe["tags"]) == ["bigcommerce-customer", "square-customer"]
    # the most recently updated record (store A's) names the contact
    assert (zoe["first_name"], zoe["last_name"]) == ("Zoë", "Ångström-Łukasiewicz")
    customers = {row["ecom_customer_key"]: row["email"] for row in query(
        "select ecom_customer_key, email from crm.ecom_customers where email = 'zoe@example.com'")}
    assert customers == {f"{STORE_A}|101": "zoe@example.com", f"{STORE_B}|201": "zoe@example.com",
                         f"{LOCATION}|SQZ": "zoe@example.com"}
    assert [email for email in contacts if email.strip().lower() == "zoe@example.com"] == ["zoe@example.com"]


def test_non_ascii_and_10000_character_names_arrive_unchanged(query, contacts):  # B12, S12
    assert contacts["long@example.com"]["first_name"] == LONG_LATIN
    assert (contacts["longsq@example.com"]["first_name"], contacts["longsq@example.com"]["last_name"]) == (
        LONG_ACCENTED, "名前")
    [connection] = query("select name from crm.connections where connection_id = %s", (LOCATION,))
    assert connection["name"] == "Café Zürich 🙂"


def test_html_and_sql_in_text_fields_are_data(query, contacts, orders):  # B12
    hostile = contacts["o'brien+tag@example.com"]
    assert (hostile["first_name"], hostile["last_name"]) == (SCRIPT, SQL_NAME)
    assert orders[f"{STORE_A}|5018"]["shipping_method"] == SQL_SHIPPING
    assert orders[f"{STORE_A}|5018"]["order_products"][0]["name"] == HTML_LINE
    lamp = orders[f"{STORE_A}|5009"]["order_products"][2]
    assert (lamp["name"], lamp["category"]) == ("Bold Lamp", "Lamps & <Lights>")
    # nothing was executed: the tables the strings name still hold their rows
    assert query("select count(*) as n from raw.bigcommerce_customers")[0]["n"] == 12
    assert len(orders) > 10


def test_zero_totals_sync_and_negative_totals_are_excluded(orders, excluded):  # B4, B12
    assert orders[f"{STORE_A}|5004"]["total_price_cents"] == 0
    assert orders[f"{LOCATION}|PAYZERO"]["total_price_cents"] == 0
    assert f"{STORE_A}|5005" not in orders
    negative = excluded[(STORE_A, "order", "5005")]
    assert negative["reason"] == "invalid_total"
    assert "total -500 cents" in negative["detail"]


def test_refunds_and_partial_refunds_sync_with_their_status(orders, query):  # B4, S11, G1
    statuses = {key: (orders[key]["status"], orders[key]["total_price_cents"]) for key in (
        f"{STORE_A}|5006", f"{STORE_A}|5007", f"{LOCATION}|PAYFULL", f"{LOCATION}|PAYPART")}
    # the revenue rule: Square refunded_money is given back; BigCommerce's v2 refunded_amount is documented
    # as always 0 and never read — without refund records (raw.bigcommerce_refunds) net = gross
    assert statuses == {
        f"{STORE_A}|5006": ("Refunded", 2500), f"{STORE_A}|5007": ("Partially Refunded", 4000),
        f"{LOCATION}|PAYFULL": ("Refunded", 0), f"{LOCATION}|PAYPART": ("Partially Refunded", 750),
    }
    members = {(row["email"], row["connection_id"]) for row in query(
        "select email, connection_id from segments.segment_members where segment_key = 'has_refunded_order'")}
    assert {("zoe@example.com", STORE_A), ("zoe@example.com", LOCATION)} <= members


def test_an_unknown_or_missing_currency_is_excluded_with_its_reason(orders, excluded):  # B12, S12
    for key in ((STORE_A, "order", "5008"), (STORE_A, "order", "5017"), (LOCATION, "order", "PAYCUR")):
        assert excluded[key]["reason"] == "unknown_currency", key
        assert f"{key[0]}|{key[2]}" not in orders
    assert "'XYZ'" in excluded[(STORE_A, "order", "5008")]["detail"]
    assert "'ABC'" in excluded[(LOCATION, "order", "PAYCUR")]["detail"]


def test_line_items_without_a_catalog_object_and_deleted_products_keep_their_line(orders):  # B12, S12, S11
    custom, deleted, known = orders[f"{STORE_A}|5009"]["order_products"]
    assert (custom["externalid"], custom["name"], custom["price"], custom["category"]) == (
        "custom:91", "Gift wrap <b>deluxe</b>", 200, None)
    assert (deleted["externalid"], deleted["name"], deleted["price"], deleted["sku"], deleted["category"]) == (
        "999", "Discontinued Lamp", 3000, "DL-9", None)
    assert (known["externalid"], known["quantity"], known["category"]) == ("601", 2, "Lamps & <Lights>")

    mug, ghost = orders[f"{LOCATION}|PAYODD"]["order_products"]
    # the deleted Square item still names and categorises the product it was when sold
    assert (mug["externalid"], mug["name"], mug["category"], mug["sku"]) == ("ITDEL", "Old Mug", "Mugs", "MUG-R")
    assert (ghost["externalid"], ghost["name"], ghost["quantity"], ghost["price"], ghost["category"]) == (
        "VARGONE", "Ghost item", 2, 150, None)


def test_timestamps_with_odd_offsets_become_utc(orders):  # B12, S12
    odd = orders[f"{STORE_A}|5010"]
    assert odd["external_created_at"] == utc("2024-01-01T09:00:00+00:00")  # -09:30
    assert odd["external_updated_at"] == utc("2024-01-01T10:00:00+00:00")  # +13:45, no weekday
    assert orders[f"{STORE_A}|5015"]["external_created_at"] == utc("2024-01-02T00:00:00+00:00")  # GMT
    # +05:45 with fractional seconds
    assert orders[f"{LOCATION}|PAYODD"]["external_created_at"] == utc("2024-03-09T20:45:00.500+00:00")


def test_money_strings_round_to_the_exact_cent(orders):  # B12
    traps = orders[f"{STORE_A}|5011"]
    # half a cent rounds away from zero; through float 1.005*100 would be 100 and 0.145*100 would be 14
    assert (traps["total_price_cents"], traps["shipping_amount_cents"], traps["tax_amount_cents"]) == (101, 3, 15)
    assert traps["discount_amount_cents"] == 0  # "0.0049"
    assert traps["order_products"][0]["price"] == 2000  # "19.9999"
    assert orders[f"{STORE_A}|5016"]["total_price_cents"] == 1234  # a JSON number, not a string


def test_the_same_record_on_two_pages_is_one_row_in_its_latest_version(query, orders):  # P2, B4
    landed = query("select pk, payload->>'status_id' as status_id from raw.bigcommerce_orders "
                   "where connection_id = %s and pk in ('5012', '5013') order by pk", (STORE_A,))
    assert landed == [{"pk": "5012", "status_id": "2"}, {"pk": "5013", "status_id": "10"}]
    assert orders[f"{STORE_A}|5012"]["status"] == "Shipped"
    assert orders[f"{STORE_A}|5012"]["external_updated_at"] == utc("2024-07-02T11:00:00+00:00")
    assert f"{STORE_A}|5013" in orders


def test_new_and_missing_api_fields(query, orders, contacts):  # B12, P2
    newfield = contacts["newfield@example.com"]
    assert (newfield["first_name"], newfield["last_name"], newfield["phone"]) == ("New", None, None)
    [raw] = query("select payload from raw.bigcommerce_customers where connection_id = %s and pk = '109'", (STORE_A,))
    assert raw["payload"]["field_added_in_2026"] == {"nested": [1, 2]}  # landed unchanged (P2)
    bare = orders[f"{STORE_A}|5014"]
    assert (bare["total_price_cents"], bare["order_products"], bare["shipping_method"]) == (700, [], None)
    assert bare["shipping_amount_cents"] is None  # not sent rather than invented


def test_every_order_is_either_synced_or_excluded(query, orders, excluded):  # B5, S1
    landed = {f"{row['connection_id']}|{row['pk']}" for row in query(
        "select connection_id, pk from raw.bigcommerce_orders union all "
        "select connection_id, pk from raw.square_payments")}
    excluded_orders = {f"{conn}|{external_id}" for (conn, kind, external_id) in excluded
                       if kind in ("order", "abandoned_cart")}
    assert landed == set(orders) | excluded_orders
    assert not set(orders) & excluded_orders


def test_unreadable_values_are_excluded_with_their_reason(orders, excluded):  # B4, B12, S12, P3
    expected = {
        (STORE_A, "order", "5019"): "unknown_status",
        (STORE_A, "order", "5020"): "invalid_amount",
        (STORE_A, "order", "5021"): "invalid_date",
        (STORE_A, "order", "5022"): "invalid_date",
        (STORE_A, "order", "5025"): "invalid_amount",
        (STORE_A, "order", "5026"): "invalid_line_item",
        (STORE_A, "order", "5027"): "invalid_amount",  # its refund's amount is not a number
        (STORE_A, "order", "5028"): "unknown_status",
        (STORE_A, "order", "5029"): "invalid_date",
        (LOCATION, "order", "PAYWEIRD"): "unknown_status",
        (LOCATION, "order", "PAYTEXT"): "invalid_amount",
        (LOCATION, "order", "PAYFLOAT"): "invalid_amount",
        (LOCATION, "order", "PAYWHEN"): "invalid_date",
    }
    assert {key: excluded[key]["reason"] for key in expected if key in excluded} == expected
    assert not {f"{conn}|{external_id}" for conn, _, external_id in expected} & set(orders)
    assert "'15'" in excluded[(STORE_A, "order", "5019")]["detail"]


def test_readable_odd_values_are_modelled(orders, excluded, contacts):  # B12, S12
    assert orders[f"{STORE_A}|5023"]["total_price_cents"] == 2000  # "19.99999" rounds to the cent
    assert orders[f"{STORE_A}|5024"]["status"] == "Completed"  # "10" for 10
    assert orders[f"{LOCATION}|PAYSTR"]["total_price_cents"] == 250  # "250" for 250
    assert orders[f"{STORE_B}|6001"]["total_price_cents"] == 1000  # the other store's order arrives
    assert excluded[(STORE_A, "customer", "110")]["reason"] == "invalid_email"  # 12345
    assert (contacts["num@example.com"]["first_name"], contacts["num@example.com"]["last_name"]) == (
        "42", '["a", "list"]')
