"""Stream definitions: keys, flags and request parameters, without a server."""
from __future__ import annotations

from datetime import datetime, timezone

from ecomsync.sources import bigcommerce, square
from ecomsync.streams import Window, iso_z, parse_iso, parse_rfc2822

T = datetime(2024, 1, 10, 21, 5, 30, tzinfo=timezone.utc)


def test_rfc2822_dates_become_utc():
    assert parse_rfc2822("Wed, 10 Jan 2018 21:05:30 +0000") == datetime(2018, 1, 10, 21, 5, 30, tzinfo=timezone.utc)
    assert parse_rfc2822("Wed, 10 Jan 2018 16:05:30 -0500") == datetime(2018, 1, 10, 21, 5, 30, tzinfo=timezone.utc)
    assert parse_iso("2018-01-10T23:35:30+02:30") == datetime(2018, 1, 10, 21, 5, 30, tzinfo=timezone.utc)
    assert iso_z(T) == "2024-01-10T21:05:30Z"


def test_guest_checkouts_are_flagged_not_dropped():  # B5
    assert bigcommerce.ORDERS.flag({"id": 1, "customer_id": 0}) == "guest_checkout"
    assert bigcommerce.ORDERS.flag({"id": 2, "customer_id": 17}) is None


def test_square_customers_without_email_are_flagged():  # S1
    customers = next(s for s in square.streams_for("L1", T, 72) if s.name == "customers")
    assert customers.flag({"id": "C1"}) == "missing_email"
    assert customers.flag({"id": "C2", "email_address": "  "}) == "missing_email"
    assert customers.flag({"id": "C3", "email_address": "a@b.example"}) is None


def test_orders_ask_for_line_items_and_shipping_in_the_same_call():  # B12
    params = bigcommerce.ORDERS.build_request(Window(T, None)).params
    assert params["include"] == "consignments.line_items"
    assert params["sort"] == "date_modified:asc" and params["min_date_modified"] == "2024-01-10T21:05:30Z"
    assert "max_date_modified" not in params


def test_coupons_are_fetched_only_for_orders_with_a_coupon_discount():
    coupons = bigcommerce.ORDERS.children[0]
    assert coupons.path_for({"id": 5, "coupon_discount": "0.0000"}) is None
    assert coupons.path_for({"id": 5, "coupon_discount": "5.0000"}) == "/v2/orders/5/coupons"
    assert coupons.primary_key({"id": 3, "order_id": 5}) == "5:3"


def test_category_trees_are_flattened():
    tree = [{"id": 1, "name": "Outdoor", "children": [{"id": 2, "name": "Tents", "children": []}]}]
    flat = bigcommerce.CATEGORIES.transform(tree)
    assert sorted((n["id"], n["name"]) for n in flat) == [(1, "Outdoor"), (2, "Tents")]
    assert all("children" not in n for n in flat)


def test_payments_never_rely_on_the_apis_defaults():  # S3
    """`begin_time` defaults to one year back and `location_id` to the main location."""
    start = datetime(2000, 1, 1, tzinfo=timezone.utc)
    payments = next(s for s in square.streams_for("L2", start, 72) if s.name == "payments")
    params = payments.build_request(Window(None, None)).params
    assert params["location_id"] == "L2" and params["begin_time"] == "2000-01-01T00:00:00Z"
    incremental = payments.build_request(Window(T, None)).params
    assert incremental["updated_at_begin_time"] == "2024-01-10T21:05:30Z"
    assert incremental["sort_field"] == "UPDATED_AT"
    assert payments.lookback_minutes == 72 * 60  # late offline payments (S4)


def test_orders_search_filter_field_matches_sort_field():
    orders = next(s for s in square.streams_for("L1", T, 72) if s.name == "orders")
    body = orders.build_request(Window(T, None)).body
    assert body["location_ids"] == ["L1"]
    assert body["query"]["sort"]["sort_field"] == "UPDATED_AT"
    assert "updated_at" in body["query"]["filter"]["date_time_filter"]
