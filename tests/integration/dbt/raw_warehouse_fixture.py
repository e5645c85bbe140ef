"""Raw/state tables as docs/architecture.md defines them, and a hand-checked set of API payloads.

The payloads follow the real API shapes (BigCommerce v2 orders with consignments, v3 customers,
subscribers and catalog; Square payments, orders, customers, catalog objects, locations).
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import psycopg2

from ecomsync.warehouse import Warehouse

STORE_A = "bigcommerce:k3x9q2m7a1"
STORE_B = "bigcommerce:p8w4z6t2n5"
LOCATION = "square:LOC1"


def create_warehouse_tables(url: str) -> None:
    """The raw and state tables as the extract creates them (with their change-event triggers)."""
    Warehouse(url).ensure_schema()


def land(url: str, table: str, rows: list[tuple[str, str, dict]], loaded_at: datetime | None = None,
         sync_mode: str = "incremental") -> None:
    """Upsert (connection_id, pk, payload) rows into raw.<table> the way the extract does."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for connection_id, pk, payload in rows:
            cur.execute(
                f"""insert into raw.{table} (connection_id, pk, payload, loaded_at, run_id, sync_mode)
                    values (%s, %s, %s, coalesce(%s, now()), 'test-run', %s)
                    on conflict (connection_id, pk) do update
                    set payload = excluded.payload, loaded_at = excluded.loaded_at""",
                (connection_id, pk, json.dumps(payload), loaded_at, sync_mode),
            )


def rfc2822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC))


def bigcommerce_order(order_id: int, customer_id: int, status_id: int, *, email: str, total: str,
                      created: str, modified: str, currency: str = "USD", opt_in: bool = False,
                      line_items: list[dict] | None = None, shipping: str = "0.0000", tax: str = "0.0000",
                      discount: str = "0.0000", coupon_discount: str = "0.0000",
                      shipping_method: str = "Flat Rate", display_currency: str | None = None) -> dict:
    """A v2 order. ``currency`` is the transactional currency (``default_currency_code``, the money's);
    ``display_currency`` the one prices were shown in (``currency_code``), the same unless given."""
    return {
        "id": order_id, "customer_id": customer_id, "status_id": status_id, "status": "ignored label",
        "date_created": created, "date_modified": modified, "currency_code": display_currency or currency,
        "default_currency_code": currency, "store_default_currency_code": currency,
        "refunded_amount": "0.0000",  # documented as always 0 (orders.v2.oas2.yml): never read
        "total_inc_tax": total, "total_ex_tax": total, "shipping_cost_inc_tax": shipping, "total_tax": tax,
        "discount_amount": discount, "coupon_discount": coupon_discount, "is_email_opt_in": opt_in,
        "billing_address": {"first_name": "Bill", "last_name": "Ing", "email": email, "phone": "123"},
        "consignments": {"shipping": [{"id": order_id * 10, "shipping_method": shipping_method,
                                       "line_items": line_items or []}]},
    }


def bigcommerce_line(line_id: int, product_id: int, name: str, price: str, quantity: int, sku: str = "",
                     discounts: list[dict] | None = None) -> dict:
    return {"id": line_id, "product_id": product_id, "name": name, "sku": sku, "price_inc_tax": price,
            "price_ex_tax": price, "quantity": quantity, "total_inc_tax": price,
            "applied_discounts": discounts or []}


def applied_discount(amount: str, code: str | None, name: str | None = None, discount_id: str = "1",
                     target: str = "order") -> dict:
    """orders.v2.oas2.yml orderProductAppliedDiscounts; ``code`` None is a manual discount."""
    return {"id": discount_id, "amount": amount, "name": name or ("Manual Discount" if code is None else code),
            "code": code, "target": target}


def bigcommerce_refund(refund_id: int, order_id: int, amount: float, *, created: str = "2024-07-02T10:00:00+00:00",
                       declined: bool = False, offline: bool = False) -> dict:
    """GET /v3/orders/payment_actions/refunds, one refund (orders.v3.yml RefundID_Get data)."""
    return {"id": refund_id, "order_id": order_id, "user_id": 0, "created": created, "reason": "test",
            "total_amount": amount, "total_tax": 0, "uses_merchant_override_values": False,
            "payments": [{"id": refund_id * 10, "provider_id": "storecredit", "amount": amount,
                          "offline": offline, "is_declined": declined, "declined_message": ""}],
            "items": [{"item_type": "ORDER", "item_id": order_id, "quantity": None, "requested_amount": None}]}


def land_hand_checked_fixture(url: str, now: datetime, loaded_at: datetime | None = None) -> None:
    """The dataset the mart assertions in test_dbt_marts.py were worked out from by hand."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into state.connections (connection_id, source, external_id, name, link_url) values (%s,%s,%s,%s,%s)",
            [(STORE_A, "bigcommerce", "k3x9q2m7a1", "Store A", "https://store-a.example.com/"),
             (STORE_B, "bigcommerce", "p8w4z6t2n5", "Store B", "https://store-b.example.com"),
             (LOCATION, "square", "LOC1", "LOC1", None)],
        )

    land(url, "bigcommerce_customers", [
        (STORE_A, "11", {"id": 11, "email": " Ada@Example.COM ", "first_name": "Ada", "last_name": "Lovelace",
                         "phone": "+44 20 1234", "date_created": "2017-12-01T10:00:00Z",
                         "date_modified": "2024-03-01T10:00:00Z"}),
        (STORE_A, "12", {"id": 12, "email": "", "first_name": "Bob", "last_name": "NoMail", "phone": "",
                         "date_created": "2018-01-01T00:00:00Z", "date_modified": "2018-01-01T00:00:00Z"}),
        (STORE_A, "13", {"id": 13, "email": "not-an-email", "first_name": "Carol", "last_name": "Bad", "phone": "",
                         "date_created": "2018-01-01T00:00:00Z", "date_modified": "2018-01-01T00:00:00Z"}),
        (STORE_A, "14", {"id": 14, "email": "dan@example.com", "first_name": "Dan", "last_name": "Subscriber",
                         "phone": "", "date_created": "2019-01-01T00:00:00Z", "date_modified": "2019-01-01T00:00:00Z"}),
        (STORE_B, "11", {"id": 11, "email": "ada@example.com", "first_name": "Ada", "last_name": "King",
                         "phone": "", "date_created": "2018-06-01T00:00:00Z", "date_modified": "2024-05-01T00:00:00Z"}),
    ], loaded_at)
    land(url, "bigcommerce_subscribers", [
        (STORE_A, "1", {"id": 1, "email": "DAN@example.com", "consents": ["marketing_newsletter"],
                        "date_modified": "2019-01-02T00:00:00Z"}),
        (STORE_A, "2", {"id": 2, "email": "ada@example.com", "consents": ["abandoned_cart"],
                        "date_modified": "2019-01-02T00:00:00Z"}),
        (STORE_B, "3", {"id": 3, "email": "ada@example.com", "consents": [], "date_modified": "2019-01-02T00:00:00Z"}),
    ], loaded_at)
    land(url, "bigcommerce_categories", [
        (STORE_A, "21", {"id": 21, "parent_id": 0, "name": "Tools"}),
        (STORE_A, "22", {"category_id": 22, "parent_id": 21, "name": "Gifts"}),
    ], loaded_at)
    land(url, "bigcommerce_products", [
        (STORE_A, "501", {"id": 501, "name": "Widget", "sku": "W-1", "description": "<p>A widget</p>",
                          "categories": [21, 22], "custom_url": {"url": "/widget/", "is_customized": False},
                          "images": [{"url_standard": "https://cdn.example.com/w-side.jpg", "is_thumbnail": False,
                                      "sort_order": 0},
                                     {"url_standard": "https://cdn.example.com/w.jpg", "is_thumbnail": True,
                                      "sort_order": 1}],
                          "date_modified": "2018-01-01T00:00:00+00:00"}),
        (STORE_A, "502", {"id": 502, "name": "Gadget", "sku": "G-1", "description": "A gadget", "categories": [22],
                          "custom_url": {"url": "/gadget/"}, "images": [],
                          "date_modified": "2018-01-01T00:00:00+00:00"}),
    ], loaded_at)
    recent = rfc2822(now - timedelta(hours=2))
    land(url, "bigcommerce_orders", [
        (STORE_A, "1001", bigcommerce_order(
            1001, 11, 10, email="ada@example.com", total="336.3200", shipping="19.9900", tax="0.1000",
            discount="0.2000", coupon_discount="5.0000",
            created="Wed, 10 Jan 2018 21:05:30 -0530", modified="Thu, 11 Jan 2018 09:00:00 +0000",
            # SAVE5 (5.00) and a 0.20 manual discount, spread over the lines in proportion to their price
            line_items=[bigcommerce_line(1, 501, "Widget", "19.9900", 2, "W-1",
                                         [applied_discount("4.9800", "SAVE5", discount_id="7"),
                                          applied_discount("0.1900", None, discount_id="manual")]),
                        bigcommerce_line(2, 502, "Gadget", "0.1000", 1,
                                         discounts=[applied_discount("0.0200", "SAVE5", discount_id="7"),
                                                    applied_discount("0.0100", None, discount_id="manual")])])),
        (STORE_A, "1002", bigcommerce_order(
            1002, 0, 11, email="guest@example.com", total="50.0000",
            created="Fri, 12 Jan 2018 10:00:00 +0000", modified="Fri, 12 Jan 2018 10:00:00 +0000")),
        (STORE_A, "1003", bigcommerce_order(
            1003, 11, 0, email="ada@example.com", total="19.9900", opt_in=True, created=recent, modified=recent,
            line_items=[bigcommerce_line(3, 501, "Widget", "19.9900", 1, "W-1")])),
        (STORE_A, "1004", bigcommerce_order(
            1004, 12, 10, email="bob@example.com", total="5.0000",
            created="Sat, 13 Jan 2018 10:00:00 +0000", modified="Sat, 13 Jan 2018 10:00:00 +0000")),
        (STORE_A, "1005", bigcommerce_order(
            1005, 11, 4, email="ada@example.com", total="10.0000",
            created="Mon, 05 Feb 2018 12:00:00 +0100", modified="Mon, 05 Feb 2018 12:00:00 +0100",
            line_items=[bigcommerce_line(4, 502, "Gadget", "10.0000", 1, "G-1")])),
        (STORE_B, "2001", bigcommerce_order(
            2001, 11, 2, email="ada@example.com", total="100.0000", currency="EUR",
            created="Tue, 01 Jan 2019 00:00:00 +0000", modified="Tue, 01 Jan 2019 00:00:00 +0000")),
    ], loaded_at)

    land(url, "square_locations", [(LOCATION, "LOC1", {"id": "LOC1", "name": "Downtown", "status": "ACTIVE"})], loaded_at)
    land(url, "square_customers", [
        (LOCATION, "SQC1", {"id": "SQC1", "given_name": "Ada", "family_name": "Lovelace",
                            "email_address": "ADA@example.com", "phone_number": "+1555",
                            "preferences": {"email_unsubscribed": True},
                            "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z"}),
        (LOCATION, "SQC2", {"id": "SQC2", "given_name": "Eve", "family_name": "Square",
                            "email_address": "eve@example.com", "phone_number": "+1666",
                            "created_at": "2021-01-01T00:00:00.000Z", "updated_at": "2021-01-01T00:00:00.000Z"}),
        (LOCATION, "SQC3", {"id": "SQC3", "given_name": "Nomail", "created_at": "2021-01-01T00:00:00Z",
                            "updated_at": "2021-01-01T00:00:00Z"}),
    ], loaded_at)
    land(url, "square_catalog_objects", [
        (LOCATION, "IT1", {"type": "ITEM", "id": "IT1", "updated_at": "2021-01-01T00:00:00Z",
                           "item_data": {"name": "Latte", "description": "Hot milk coffee",
                                         "reporting_category": {"id": "CAT1"}, "categories": [{"id": "CAT1"}],
                                         "image_ids": ["IMG1"]}}),
        (LOCATION, "VAR1", {"type": "ITEM_VARIATION", "id": "VAR1", "updated_at": "2021-01-01T00:00:00Z",
                            "item_variation_data": {"item_id": "IT1", "name": "Large", "sku": "LAT-L",
                                                    "price_money": {"amount": 450, "currency": "USD"}}}),
        (LOCATION, "CAT1", {"type": "CATEGORY", "id": "CAT1", "updated_at": "2021-01-01T00:00:00Z",
                            "category_data": {"name": "Drinks"}}),
        (LOCATION, "IMG1", {"type": "IMAGE", "id": "IMG1", "updated_at": "2021-01-01T00:00:00Z",
                            "image_data": {"url": "https://items.example.com/latte.png"}}),
    ], loaded_at)
    land(url, "square_orders", [
        (LOCATION, "ORD1", {"id": "ORD1", "location_id": "LOC1", "customer_id": "SQC2", "state": "COMPLETED",
                            "line_items": [{"uid": "L1", "catalog_object_id": "VAR1", "name": "Latte",
                                            "variation_name": "Large", "quantity": "2",
                                            "base_price_money": {"amount": 450, "currency": "USD"},
                                            "total_money": {"amount": 800, "currency": "USD"}}],
                            "discounts": [{"uid": "D1", "name": "Happy hour", "type": "FIXED_AMOUNT", "scope": "ORDER",
                                           "amount_money": {"amount": 100, "currency": "USD"},
                                           "applied_money": {"amount": 100, "currency": "USD"}}],
                            "total_tax_money": {"amount": 70, "currency": "USD"},
                            "total_discount_money": {"amount": 100, "currency": "USD"},
                            "created_at": "2024-06-01T19:29:00Z", "updated_at": "2024-06-01T19:31:00Z"}),
        (LOCATION, "ORD2", {"id": "ORD2", "location_id": "LOC1", "customer_id": "SQC1", "state": "COMPLETED",
                            "line_items": [{"uid": "L2", "name": "Custom amount", "quantity": "1",
                                            "base_price_money": {"amount": 500, "currency": "USD"}}],
                            "created_at": "2024-07-01T08:00:00Z", "updated_at": "2024-07-02T08:00:00Z"}),
        (LOCATION, "ORD3", {"id": "ORD3", "location_id": "LOC1", "state": "COMPLETED", "line_items": [],
                            "created_at": "2024-07-03T08:00:00Z", "updated_at": "2024-07-03T08:00:00Z"}),
    ], loaded_at)
    land(url, "square_payments", [
        (LOCATION, "PAY1", {"id": "PAY1", "order_id": "ORD1", "customer_id": "SQC2", "location_id": "LOC1",
                            "status": "COMPLETED", "amount_money": {"amount": 870, "currency": "USD"},
                            "total_money": {"amount": 870, "currency": "USD"}, "receipt_number": "R-1",
                            "receipt_url": "https://squareup.com/receipt/preview/PAY1",
                            "created_at": "2024-06-01T12:30:00-07:00", "updated_at": "2024-06-01T12:31:00-07:00"}),
        (LOCATION, "PAY2", {"id": "PAY2", "order_id": "ORD3", "location_id": "LOC1", "status": "COMPLETED",
                            "amount_money": {"amount": 300, "currency": "USD"},
                            "created_at": "2024-07-03T08:00:00Z", "updated_at": "2024-07-03T08:00:00Z"}),
        (LOCATION, "PAY3", {"id": "PAY3", "order_id": "ORD2", "customer_id": "SQC1", "location_id": "LOC1",
                            "status": "COMPLETED", "amount_money": {"amount": 500, "currency": "USD"},
                            "refunded_money": {"amount": 500, "currency": "USD"},
                            "created_at": "2024-07-01T08:00:00Z", "updated_at": "2024-07-02T08:00:00Z"}),
    ], loaded_at)
