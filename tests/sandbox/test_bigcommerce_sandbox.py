"""The BigCommerce sandbox answers like BigCommerce: shapes (validated against the official
OpenAPI specs), paging, filters, errors, rate limits, determinism, time travel and scale."""
from __future__ import annotations

import json
import resource
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest
import requests
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from sandbox import bigcommerce
from sandbox.bigcommerce_data import COUPONS, DELETED_PRODUCT_IDS, LineFacts, OrderFacts, applied_discounts
from sandbox.core import serve

SPECS = Path("/work/shared/api-specs/bigcommerce")
STORE, OTHER_STORE = bigcommerce.DEFAULT_STORES
NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
WITH_LINES = {"include": "consignments.line_items", "consignment_structure": "object"}


class Sandbox:
    """A served app and a client for one store."""

    def __init__(self, app: bigcommerce.BigCommerceApp):
        self.app = app
        self.server, _ = serve(app)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.http = requests.Session()

    def get(self, path: str, store: str = STORE, token: str | None = None, **params) -> requests.Response:
        headers = {"X-Auth-Token": token if token is not None else bigcommerce.token_for(store)}
        return self.http.get(f"{self.url}/stores/{store}{path}", params=params, headers=headers, timeout=60)

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.http.request(method, f"{self.url}/__admin/bigcommerce{path}", timeout=120, **kwargs)
        assert response.status_code < 400, response.text
        return response

    def dump(self, name: str, store: str = STORE, **params) -> list[dict]:
        return self.admin("GET", f"/{store}/{name}", params=params).json()[name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sandbox():
    served = Sandbox(bigcommerce.create_app(seed=7, now=NOW))
    yield served
    served.close()


@pytest.fixture
def fresh():
    """A sandbox of its own, for tests that change state."""
    served = Sandbox(bigcommerce.create_app(seed=7, now=NOW, enforce_rate_limit=False))
    yield served
    served.close()


# -- conformance with the official specs ---------------------------------------------------------------
# The v2 orders spec declares ``consignments`` and ``line_items`` as oneOf(resource link, full object),
# but the resource-link schemas accept any object, so every real answer is "valid under each of" them.
# Closing those schemas to their declared fields makes oneOf decidable without loosening anything else.
DISAMBIGUATE = {"orders.v2.oas2.yml": ("products_Resource", "orderConsignments_Resource", "orderConsignment_Get")}


@pytest.fixture(scope="module")
def specs(sandbox):
    loaded = {}
    for name, version in (("orders.v2.oas2.yml", "v2"), ("customers.v3.yml", "v3"), ("subscribers.v3.yml", "v3"),
                          ("products_catalog.v3.yml", "v3"), ("category-trees_catalog.v3.yml", "v3"),
                          ("carts.v3.yml", "v3"), ("orders.v3.yml", "v3")):
        spec = yaml.safe_load((SPECS / name).read_text())
        spec["servers"] = [{"url": f"{sandbox.url}/stores/{{store_hash}}/{version}",
                            "variables": {"store_hash": {"default": STORE}}}]
        for schema in DISAMBIGUATE.get(name, ()):
            spec["components"]["schemas"][schema]["additionalProperties"] = False
        loaded[name] = OpenAPI.from_dict(spec)
    return loaded


def _order_with(sandbox: Sandbox, predicate) -> dict:
    return next(order for order in sandbox.dump("orders") if predicate(order))


OPERATIONS = [
    ("orders.v2.oas2.yml", lambda s: ("/v2/orders", {"limit": 50})),
    ("orders.v2.oas2.yml", lambda s: ("/v2/orders", {"limit": 50, "sort": "date_modified:asc", **WITH_LINES})),
    ("orders.v2.oas2.yml", lambda s: (f"/v2/orders/{_order_with(s, lambda o: True)['id']}", {})),
    ("orders.v2.oas2.yml", lambda s: (f"/v2/orders/{_order_with(s, lambda o: True)['id']}/products", {})),
    ("orders.v2.oas2.yml", lambda s: (f"/v2/orders/{_order_with(s, lambda o: True)['id']}/shipping_addresses", {})),
    ("orders.v2.oas2.yml",
     lambda s: (f"/v2/orders/{_order_with(s, lambda o: o['coupon_discount'] != '0.0000')['id']}/coupons", {})),
    ("orders.v2.oas2.yml", lambda s: ("/v2/order_statuses", {})),
    ("customers.v3.yml", lambda s: ("/v3/customers", {"limit": 250})),
    ("subscribers.v3.yml", lambda s: ("/v3/customers/subscribers", {"limit": 250})),
    ("products_catalog.v3.yml", lambda s: ("/v3/catalog/products", {"limit": 250, "include": "images"})),
    ("category-trees_catalog.v3.yml", lambda s: ("/v3/catalog/trees/categories", {})),
    ("category-trees_catalog.v3.yml", lambda s: ("/v3/catalog/trees/1/categories", {})),
    ("carts.v3.yml", lambda s: (f"/v3/carts/{_order_with(s, lambda o: o['status_id'] == 0)['cart_id']}", {})),
    ("orders.v3.yml", lambda s: ("/v3/orders/payment_actions/refunds", {"limit": 250})),
    ("orders.v3.yml", lambda s: ("/v3/orders/payment_actions/refunds", {"limit": 5, "page": 2})),
    ("orders.v3.yml",
     lambda s: (f"/v3/orders/{_order_with(s, lambda o: o['status_id'] == 4)['id']}/payment_actions/refunds", {})),
    ("orders.v3.yml",
     lambda s: (f"/v3/orders/{_order_with(s, lambda o: o['status_id'] == 14)['id']}/payment_actions/refunds", {})),
]


@pytest.mark.parametrize("spec_name, operation", OPERATIONS,
                         ids=[f"{spec}:{i}" for i, (spec, _) in enumerate(OPERATIONS)])
def test_responses_validate_against_the_official_spec(sandbox, specs, spec_name, operation):
    path, params = operation(sandbox)
    response = sandbox.get(path, **params)
    assert response.status_code == 200, response.text
    assert response.content, "a 200 carries a body"
    specs[spec_name].validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))


def test_orders_carry_line_items_and_shipping_method_in_one_call(sandbox):
    orders = sandbox.get("/v2/orders", limit=250, **WITH_LINES).json()
    for order in orders:
        shipping = order["consignments"]["shipping"]
        assert shipping and shipping[0]["shipping_method"] and shipping[0]["line_items"], order["id"]
        assert sum(item["quantity"] for item in shipping[0]["line_items"]) == order["items_total"]
    plain = sandbox.get("/v2/orders", limit=1).json()[0]
    assert set(plain["consignments"]) == {"url", "resource"}


def test_dates_are_rfc2822_utc_and_money_four_decimal_strings(sandbox):
    order = sandbox.get("/v2/orders", limit=1).json()[0]
    assert order["date_created"].endswith("+0000")
    assert parsedate_to_datetime(order["date_created"]).utcoffset() == timedelta(0)
    for field in ("total_inc_tax", "total_ex_tax", "total_tax", "subtotal_ex_tax", "discount_amount", "coupon_discount"):
        whole, _, decimals = order[field].partition(".")
        assert whole.isdigit() and len(decimals) == 4, (field, order[field])
    total = Decimal(order["total_ex_tax"]) + Decimal(order["total_tax"])
    assert total == Decimal(order["total_inc_tax"])


# -- errors -----------------------------------------------------------------------------------------------
def test_a_wrong_or_missing_token_is_a_401_in_each_api_generations_shape(sandbox):
    v2 = sandbox.get("/v2/orders", token="not-the-token")
    assert v2.status_code == 401 and v2.json()[0]["status"] == 401 and v2.json()[0]["message"]
    v3 = sandbox.http.get(f"{sandbox.url}/stores/{STORE}/v3/customers", timeout=30)
    assert v3.status_code == 401
    assert {"status", "title", "type"} <= set(v3.json()) and v3.json()["status"] == 401
    other_stores_token = sandbox.get("/v2/orders", token=bigcommerce.token_for(OTHER_STORE))
    assert other_stores_token.status_code == 401


def test_an_unknown_store_or_order_is_a_404(sandbox):
    assert sandbox.get("/v2/orders", store="nosuchstore", token="x").status_code == 404
    missing = sandbox.get("/v2/orders/999999")
    assert missing.status_code == 404 and missing.json()[0]["status"] == 404
    assert sandbox.get("/v3/carts/00000000-0000-0000-0000-000000000001").status_code == 404


def test_a_bad_date_filter_is_refused_with_the_fields_name(sandbox):
    answer = sandbox.get("/v2/orders", min_date_modified="last tuesday")
    assert answer.status_code == 400 and "min_date_modified" in answer.json()[0]["message"]
    assert sandbox.get("/v3/customers", **{"date_modified:min": "soon"}).status_code == 422


# -- paging and filters -------------------------------------------------------------------------------------
def test_pages_past_the_last_one_and_empty_results_are_204_without_body(sandbox):
    total = len(sandbox.dump("orders"))
    last_page = -(-total // 50)
    assert sandbox.get("/v2/orders", page=last_page, limit=50).status_code == 200
    beyond = sandbox.get("/v2/orders", page=last_page + 1, limit=50)
    assert beyond.status_code == 204 and beyond.content == b""
    nothing = sandbox.get("/v2/orders", min_date_modified=format_datetime(NOW + timedelta(days=1)))
    assert nothing.status_code == 204 and nothing.content == b""


def test_v2_pages_cover_every_order_once_in_date_modified_order(sandbox):
    seen, page = [], 1
    while (answer := sandbox.get("/v2/orders", page=page, limit=7, sort="date_modified:asc")).status_code == 200:
        seen.extend(answer.json())
        page += 1
    everything = sandbox.dump("orders")
    assert sorted(o["id"] for o in seen) == sorted(o["id"] for o in everything)
    assert len({o["id"] for o in seen}) == len(seen)
    stamps = [parsedate_to_datetime(o["date_modified"]) for o in seen]
    assert stamps == sorted(stamps)
    descending = sandbox.get("/v2/orders", limit=250, sort="date_modified:desc").json()
    assert [o["id"] for o in descending] == [o["id"] for o in reversed(seen)]
    assert sandbox.get("/v2/orders", limit=500).headers and len(sandbox.get("/v2/orders", limit=500).json()) <= 250


def test_date_filters_accept_rfc2822_and_iso_and_are_inclusive(sandbox):
    orders = sandbox.dump("orders")
    low, high = orders[10], orders[30]
    as_rfc = sandbox.get("/v2/orders", limit=250, min_date_modified=low["date_modified"],
                         max_date_modified=high["date_modified"]).json()
    iso = lambda value: parsedate_to_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    as_iso = sandbox.get("/v2/orders", limit=250, min_date_modified=iso(low["date_modified"]),
                         max_date_modified=iso(high["date_modified"])).json()
    expected = [o["id"] for o in orders
                if parsedate_to_datetime(low["date_modified"]) <= parsedate_to_datetime(o["date_modified"])
                <= parsedate_to_datetime(high["date_modified"])]
    assert [o["id"] for o in as_rfc] == [o["id"] for o in as_iso] == expected
    assert low["id"] in expected and high["id"] in expected
    created = sandbox.get("/v2/orders", limit=250, min_date_created=low["date_created"]).json()
    assert {o["id"] for o in created} == {o["id"] for o in orders
                                          if parsedate_to_datetime(o["date_created"])
                                          >= parsedate_to_datetime(low["date_created"])}


def test_customer_and_status_filters(sandbox):
    orders = sandbox.dump("orders")
    customer_id = Counter(o["customer_id"] for o in orders if o["customer_id"]).most_common(1)[0][0]
    by_customer = sandbox.get("/v2/orders", limit=250, customer_id=customer_id).json()
    assert [o["id"] for o in by_customer] == [o["id"] for o in orders if o["customer_id"] == customer_id]
    incomplete = sandbox.get("/v2/orders", limit=250, status_id=0).json()
    assert incomplete and [o["id"] for o in incomplete] == [o["id"] for o in orders if o["status_id"] == 0]


def test_v3_customers_paginate_with_meta_and_filter(sandbox):
    customers = sandbox.dump("customers")
    first = sandbox.get("/v3/customers", limit=15, page=2, sort="date_modified:asc").json()
    pagination = first["meta"]["pagination"]
    assert pagination["total"] == len(customers) and pagination["per_page"] == 15
    assert pagination["current_page"] == 2 and pagination["total_pages"] == -(-len(customers) // 15)
    assert pagination["count"] == len(first["data"]) == 15
    assert {"previous", "current", "next"} <= set(pagination["links"])
    middle = customers[20]["date_modified"]
    since = sandbox.get("/v3/customers", limit=250, **{"date_modified:min": middle}).json()["data"]
    assert [c["id"] for c in since] == [c["id"] for c in customers if c["date_modified"] >= middle]
    picked = sandbox.get("/v3/customers", **{"id:in": "3,5,8"}).json()["data"]
    assert [c["id"] for c in picked] == [3, 5, 8]
    email = next(c["email"] for c in customers if c.get("email") and "@" in c["email"])
    by_email = sandbox.get("/v3/customers", **{"email:in": f" {email.upper()} "}).json()["data"]
    assert [c["email"] for c in by_email] == [email]


def test_products_filter_by_category_and_date_and_include_images(sandbox):
    products = sandbox.dump("products")
    category = products[0]["categories"][0]
    in_category = sandbox.get("/v3/catalog/products", limit=250, categories=category).json()["data"]
    assert [p["id"] for p in in_category] == [p["id"] for p in products if category in p["categories"]]
    assert all("images" not in p for p in in_category)
    with_images = sandbox.get("/v3/catalog/products", limit=250, include="images").json()["data"]
    assert all(p["images"] and p["images"][0]["url_standard"].startswith("https://") for p in with_images)
    recent = sandbox.get("/v3/catalog/products", **{"date_modified:min": products[-3]["date_modified"]}).json()
    assert [p["id"] for p in recent["data"]] == [p["id"] for p in products[-3:]]


def test_category_trees_flat_and_nested(sandbox):
    flat = sandbox.get("/v3/catalog/trees/categories").json()["data"]
    nested = sandbox.get("/v3/catalog/trees/1/categories").json()["data"]

    def walk(nodes):
        for node in nodes:
            yield node
            yield from walk(node["children"])

    assert {(c["category_id"], c["parent_id"]) for c in flat} == {(n["id"], n["parent_id"]) for n in walk(nested)}
    assert any(node["children"] and any(child["children"] for child in node["children"]) for node in nested)


# -- the generated data ---------------------------------------------------------------------------------------
def test_generated_data_is_realistic(sandbox):
    orders = sandbox.dump("orders", **WITH_LINES)
    customers = sandbox.dump("customers")
    subscribers = sandbox.dump("subscribers")
    product_ids = {p["id"] for p in sandbox.dump("products")}
    assert len(orders) >= 100 and len(customers) >= 30
    assert {o["status_id"] for o in orders} == set(range(15)), "all 15 statuses"
    assert any(o["customer_id"] == 0 for o in orders), "guest checkouts"
    assert len({o["currency_code"] for o in orders}) >= 3
    refunded = [o for o in orders if o["status_id"] == 4]
    partially = [o for o in orders if o["status_id"] == 14]
    assert refunded and partially
    assert {o["refunded_amount"] for o in orders} == {"0.0000"}, "v2 spec: refunded_amount always returns 0"
    assert any(o["coupon_discount"] != "0.0000" for o in orders) and any(o["discount_amount"] != "0.0000" for o in orders)
    assert {o["is_email_opt_in"] for o in orders} == {True, False}
    names = [c["first_name"] + c["last_name"] for c in customers]
    assert any(not name.isascii() for name in names), "non-ASCII names"
    emails = [c.get("email") for c in customers]
    assert None in emails, "a customer without email"
    assert any(e and "@" not in e for e in emails), "an invalid email"
    assert any(e and (e != e.strip() or e != e.lower()) for e in emails), "mixed case or spaces"
    other = {c["email"].strip().lower() for c in sandbox.dump("customers", store=OTHER_STORE) if c.get("email")}
    assert {e.strip().lower() for e in emails if e} & other, "the same email shops in both stores"
    assert {tuple(s["consents"]) for s in subscribers} == {(), ("marketing_newsletter",)}
    line_products = {item["product_id"] for o in orders for item in o["consignments"]["shipping"][0]["line_items"]}
    assert line_products - product_ids == set(DELETED_PRODUCT_IDS)
    created = [parsedate_to_datetime(o["date_created"]) for o in orders]
    assert NOW - timedelta(days=731) < min(created) and max(created) < NOW - timedelta(hours=1)
    incomplete = [o for o in orders if o["status_id"] == 0]
    assert incomplete and all(parsedate_to_datetime(o["date_created"]) < NOW - timedelta(hours=1) for o in incomplete)
    coupon_orders = [o for o in orders if o["coupon_discount"] != "0.0000"]
    coupons = sandbox.dump("coupons")
    assert {c["order_id"] for c in coupons} == {o["id"] for o in coupon_orders}


def test_the_same_seed_gives_the_same_stores_and_another_seed_does_not():
    twins = [Sandbox(bigcommerce.create_app(seed=seed, now=NOW)) for seed in (11, 11, 12)]
    try:
        dumps = [(s.dump("orders", **WITH_LINES), s.dump("customers"), s.dump("subscribers")) for s in twins]
        assert dumps[0] == dumps[1]
        assert dumps[0] != dumps[2]
    finally:
        for served in twins:
            served.close()


# -- rate limits ------------------------------------------------------------------------------------------------
def test_every_answer_carries_the_rate_limit_headers_and_the_quota_is_enforced():
    served = Sandbox(bigcommerce.create_app(seed=1, now=NOW, quota=5, window_ms=60_000))
    try:
        answers = [served.get("/v2/order_statuses") for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 5 + [429]
        assert [int(a.headers["X-Rate-Limit-Requests-Left"]) for a in answers] == [4, 3, 2, 1, 0, 0]
        for answer in answers:
            assert answer.headers["X-Rate-Limit-Requests-Quota"] == "5"
            assert answer.headers["X-Rate-Limit-Time-Window-Ms"] == "60000"
            assert 0 < int(answer.headers["X-Rate-Limit-Time-Reset-Ms"]) <= 60_000
        assert "retry" in answers[-1].json()[0]["message"].lower()
        # the quota is per store
        assert served.get("/v2/order_statuses", store=OTHER_STORE).status_code == 200
        served.admin("PUT", f"/{STORE}/quota", json={"quota": 2, "window_ms": 50})
        assert served.get("/v3/customers").headers["X-Rate-Limit-Requests-Quota"] == "2"
    finally:
        served.close()


def test_without_enforcement_the_headers_still_come_and_nothing_is_refused(fresh):
    answers = [fresh.get("/v2/order_statuses") for _ in range(160)]  # beyond any real quota (150)
    assert all(a.status_code == 200 and "X-Rate-Limit-Requests-Left" in a.headers for a in answers)


def test_the_fault_plan_still_applies(fresh):
    requests.put(f"{fresh.url}/__admin/faults", json={"burst_5xx": 1}, timeout=10)
    failed = fresh.get("/v2/orders")
    assert failed.status_code == 503 and failed.json()[0]["status"] == 503
    assert fresh.get("/v2/orders").status_code == 200


# -- admin: time travel and mutations ---------------------------------------------------------------------------------
def test_time_travel_new_orders_status_changes_refunds_and_edits_appear_after_the_watermark(fresh):
    before = fresh.dump("orders")
    watermark = max(parsedate_to_datetime(o["date_modified"]) for o in before)
    clock = fresh.admin("POST", "/clock", json={"advance_seconds": 3600}).json()["now"]
    assert datetime.fromisoformat(clock.replace("Z", "+00:00")) >= NOW + timedelta(hours=1)
    added = fresh.admin("POST", f"/{STORE}/orders", json={"count": 2, "customer_id": 3}).json()["orders"]
    assert [o["id"] for o in added] == [before[-1]["id"] + 1, before[-1]["id"] + 2]
    pending = next(o for o in before if o["status_id"] == 1)
    fresh.admin("PUT", f"/{STORE}/orders/{pending['id']}", json={"status_id": 4})
    completed = next(o for o in before if o["status_id"] == 10)
    fresh.admin("POST", f"/{STORE}/orders/{completed['id']}/refunds", json={"amount": "1.2500"})
    fresh.admin("PUT", f"/{STORE}/customers/5", json={"first_name": "Åsa"})
    fresh.admin("PUT", f"/{STORE}/subscribers/1", json={"consents": []})

    changed = fresh.get("/v2/orders", limit=250, sort="date_modified:asc",
                        min_date_modified=format_datetime(watermark + timedelta(seconds=1))).json()
    # changed in the same second: ties keep id order
    assert [o["id"] for o in changed] == sorted([added[0]["id"], added[1]["id"], pending["id"], completed["id"]])
    by_id = {o["id"]: o for o in changed}
    assert by_id[pending["id"]]["status_id"] == 4, "a status change alone, without a refund"
    assert by_id[completed["id"]]["status_id"] == 14 and by_id[completed["id"]]["refunded_amount"] == "0.0000"
    [refund] = fresh.get(f"/v3/orders/{completed['id']}/payment_actions/refunds").json()["data"]
    assert refund["total_amount"] == 1.25 and refund["created"] == clock
    assert fresh.get(f"/v3/orders/{pending['id']}/payment_actions/refunds").json()["data"] == []
    assert by_id[pending["id"]]["date_created"] == pending["date_created"]
    assert all(o["customer_id"] == 3 for o in added)
    # the whole list still holds every order once, in date_modified order
    everything = fresh.get("/v2/orders", limit=250, sort="date_modified:asc").json()
    assert len(everything) == len(before) + 2 and everything[-4:] == changed
    customers = fresh.get("/v3/customers", **{"date_modified:min": clock}).json()["data"]
    assert [(c["id"], c["first_name"]) for c in customers] == [(5, "Åsa")]
    subscribers = fresh.get("/v3/customers/subscribers", **{"date_modified:min": clock}).json()["data"]
    assert [(s["id"], s["consents"]) for s in subscribers] == [(1, [])]


def test_a_rotated_token_replaces_the_old_one_and_a_revoked_one_locks_everyone_out(fresh):
    fresh.admin("PUT", f"/{STORE}/token", json={"token": "rotated"})
    assert fresh.get("/v2/orders").status_code == 401
    assert fresh.get("/v2/order_statuses", token="rotated").status_code == 200
    fresh.admin("DELETE", f"/{STORE}/token")
    assert fresh.get("/v2/order_statuses", token="rotated").status_code == 401


def test_a_fixtures_folder_replaces_a_stores_data(tmp_path):
    source = Sandbox(bigcommerce.create_app(seed=3, now=NOW, stores=("fixturestore",)))
    try:
        orders = source.dump("orders", store="fixturestore", **WITH_LINES)[:5]
        folder = tmp_path / "fixturestore"
        folder.mkdir()
        (folder / "orders.json").write_text(json.dumps(orders))
        (folder / "customers.json").write_text(json.dumps(source.dump("customers", store="fixturestore")[:3]))
        (folder / "coupons.json").write_text(json.dumps(source.dump("coupons", store="fixturestore")))
    finally:
        source.close()
    replayed = Sandbox(bigcommerce.create_app(fixtures_dir=tmp_path, now=NOW))
    try:
        assert replayed.get("/v2/orders", store="fixturestore", limit=250, **WITH_LINES).json() == orders
        plain = replayed.get(f"/v2/orders/{orders[0]['id']}", store="fixturestore").json()
        assert set(plain["consignments"]) == {"url", "resource"}
        lines = replayed.get(f"/v2/orders/{orders[0]['id']}/products", store="fixturestore").json()
        assert lines == orders[0]["consignments"]["shipping"][0]["line_items"]
        assert len(replayed.get("/v3/customers", store="fixturestore").json()["data"]) == 3
        assert replayed.get("/v3/catalog/products", store="fixturestore").json()["data"] == []
        assert replayed.get("/v2/orders", store=STORE).status_code == 200, "the other stores stay generated"
    finally:
        replayed.close()


def test_a_fixture_record_without_dates_is_refused_with_its_file_and_position(tmp_path):
    (tmp_path / "badstore").mkdir()
    (tmp_path / "badstore" / "customers.json").write_text(json.dumps([{"id": 1, "email": "a@example.com"}]))
    with pytest.raises(ValueError, match=r"customers\.json: record 0"):
        bigcommerce.create_app(fixtures_dir=tmp_path)


# -- scale -----------------------------------------------------------------------------------------------------------
def test_a_million_order_store_serves_a_late_page_without_building_its_orders():
    tracemalloc.start()
    try:
        app = bigcommerce.create_app(seed=5, now=NOW, enforce_rate_limit=False, stores=(STORE,),
                                     orders=1_000_000, customers=50_000)
        served = Sandbox(app)
        try:
            late = served.get("/v2/orders", page=3990, limit=250, sort="date_modified:asc", **WITH_LINES)
            assert late.status_code == 200
            ids = [o["id"] for o in late.json()]
            first_id = 100 + 3989 * 250
            assert ids == list(range(first_id, first_id + 250))
            assert served.get(f"/v2/orders/{ids[7]}", **WITH_LINES).json() == late.json()[7]
            stamps = [parsedate_to_datetime(o["date_modified"]) for o in late.json()]
            assert stamps == sorted(stamps)
            since = served.get("/v2/orders", limit=250, min_date_modified=late.json()[-1]["date_modified"]).json()
            assert since[0]["id"] == ids[-1] and len(since) == 250
            last = served.get("/v2/orders", page=4000, limit=250)
            assert last.json()[-1]["id"] == 100 + 1_000_000 - 1
            assert served.get("/v2/orders", page=4001, limit=250).status_code == 204
            customers = served.get("/v3/customers", page=200, limit=250).json()
            assert customers["meta"]["pagination"]["total"] == 50_000 and customers["data"][-1]["id"] == 50_000
        finally:
            served.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB: orders must not be materialised"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 2 * 2**20  # KiB on Linux: under 2 GiB


# -- issue 13: money, refunds, archived orders, discounts and paging as the real API has them ---------------------------
def _cents(value) -> int:
    cents = Decimal(str(value)) * 100
    assert cents == cents.to_integral_value(), value
    return int(cents)


def test_a_share_of_orders_is_shown_in_another_currency_than_the_one_paid_in(sandbox):  # B12
    """currencies guide, "Orders": ``default_currency_code`` is the transactional currency, ``currency_code``
    only the one the shopper browsed in; the exchange rates are from the store's default currency."""
    orders = sandbox.dump("orders")
    differing = [o for o in orders if o["currency_code"] != o["default_currency_code"]]
    assert 0 < len(differing) < len(orders) / 2
    for order in orders:
        store_default = order["store_default_currency_code"]
        assert store_default == orders[0]["store_default_currency_code"]
        if order["default_currency_code"] == store_default:
            assert Decimal(order["store_default_to_transactional_exchange_rate"]) == 1
        if order["currency_code"] == store_default:
            assert Decimal(order["currency_exchange_rate"]) == 1
    assert any(o["default_currency_code"] != o["store_default_currency_code"] for o in differing)


def test_refunds_are_read_from_v3_and_add_up_to_the_refunded_statuses(sandbox):  # B4, G1
    orders = {o["id"]: o for o in sandbox.dump("orders")}
    refunds = sandbox.get("/v3/orders/payment_actions/refunds", limit=250).json()["data"]
    assert [r["id"] for r in refunds] == sorted(r["id"] for r in refunds), "ordered by refund id"
    created = [r["created"] for r in refunds]
    assert created == sorted(created)
    by_order: dict[int, int] = Counter()
    for refund in refunds:
        by_order[refund["order_id"]] += _cents(refund["total_amount"])
        assert _cents(refund["total_amount"]) == sum(_cents(p["amount"]) for p in refund["payments"])
    full = {i for i, o in orders.items() if o["status_id"] == 4}
    partial = {i for i, o in orders.items() if o["status_id"] == 14}
    assert full and partial and set(by_order) == full | partial
    for order_id in full:
        assert by_order[order_id] == _cents(orders[order_id]["total_inc_tax"])
    for order_id in partial:
        assert 0 < by_order[order_id] < _cents(orders[order_id]["total_inc_tax"])
    per_order = sandbox.get(f"/v3/orders/{min(partial)}/payment_actions/refunds").json()["data"]
    assert per_order == [r for r in refunds if r["order_id"] == min(partial)]


def test_refund_filters_and_paging_follow_the_spec(sandbox):
    refunds = sandbox.dump("refunds")
    assert len(refunds) > 6
    middle = refunds[len(refunds) // 2]
    since = sandbox.get("/v3/orders/payment_actions/refunds", limit=250, **{"created:min": middle["created"]}).json()
    assert [r["id"] for r in since["data"]] == [r["id"] for r in refunds if r["created"] >= middle["created"]]
    until = sandbox.get("/v3/orders/payment_actions/refunds", limit=250, **{"created:max": middle["created"]}).json()
    assert [r["id"] for r in until["data"]] == [r["id"] for r in refunds if r["created"] <= middle["created"]]
    picked = sandbox.get("/v3/orders/payment_actions/refunds",
                         **{"order_id:in": f"{refunds[0]['order_id']},{refunds[2]['order_id']}"}).json()["data"]
    assert [r["order_id"] for r in picked] == [refunds[0]["order_id"], refunds[2]["order_id"]]
    page = sandbox.get("/v3/orders/payment_actions/refunds", limit=3, page=2).json()
    assert page["data"] == refunds[3:6]
    assert page["meta"]["pagination"]["total"] == len(refunds) and page["meta"]["pagination"]["current_page"] == 2
    assert sandbox.get("/v3/orders/payment_actions/refunds", **{"created:min": "soon"}).status_code == 422
    assert sandbox.get("/v3/orders/999999/payment_actions/refunds").status_code == 404


def test_an_admin_refund_is_a_new_refund_record_and_sets_the_status(fresh):  # B4
    order = next(o for o in fresh.dump("orders") if o["status_id"] == 10)
    total = _cents(order["total_inc_tax"])
    fresh.admin("POST", "/clock", json={"advance_seconds": 60})
    partial = fresh.admin("POST", f"/{STORE}/orders/{order['id']}/refunds", json={"amount": "4.0000"}).json()
    assert partial["status_id"] == 14 and partial["refunded_amount"] == "0.0000"
    assert partial["date_modified"] != order["date_modified"]
    rest = fresh.admin("POST", f"/{STORE}/orders/{order['id']}/refunds", json={}).json()
    assert rest["status_id"] == 4
    refunds = fresh.get(f"/v3/orders/{order['id']}/payment_actions/refunds").json()["data"]
    assert [_cents(r["total_amount"]) for r in refunds] == [400, total - 400]
    everything = fresh.dump("refunds")
    assert [r["id"] for r in everything[-2:]] == [r["id"] for r in refunds]
    assert refunds[0]["id"] > max(r["id"] for r in everything[:-2])
    again = fresh.http.post(f"{fresh.url}/__admin/bigcommerce/{STORE}/orders/{order['id']}/refunds", json={},
                            timeout=30)
    assert again.status_code == 400
    created = fresh.admin("POST", f"/{STORE}/orders", json={"count": 1, "status_id": 4}).json()["orders"][0]
    [own] = fresh.get(f"/v3/orders/{created['id']}/payment_actions/refunds").json()["data"]
    assert _cents(own["total_amount"]) == _cents(created["total_inc_tax"])


def test_archived_orders_are_listed_with_is_deleted_and_archiving_bumps_date_modified(fresh):  # B4
    orders = fresh.dump("orders")
    archived = [o for o in orders if o["is_deleted"]]
    assert 0 < len(archived) < len(orders) / 5, "a share of generated orders is archived"
    live = next(o for o in orders if not o["is_deleted"] and o["status_id"] == 10)
    fresh.admin("POST", "/clock", json={"advance_seconds": 60})
    after = fresh.admin("POST", f"/{STORE}/orders/{live['id']}/archive").json()
    assert after["is_deleted"] is True
    assert parsedate_to_datetime(after["date_modified"]) > parsedate_to_datetime(live["date_modified"])
    newest = fresh.get("/v2/orders", limit=1, sort="date_modified:desc").json()[0]
    assert newest["id"] == live["id"] and newest["is_deleted"] is True


def test_cancelled_declined_and_incomplete_orders_are_in_the_generated_mix(sandbox):  # B4
    statuses = Counter(o["status_id"] for o in sandbox.dump("orders"))
    assert statuses[5] and statuses[6] and statuses[0]


def test_line_discounts_add_up_to_the_orders_coupon_and_manual_discount(sandbox):  # B12, G1
    """orders v2 ``orderProductAppliedDiscounts``: an order-level discount is spread over the lines in proportion
    to their price; the coupon carries its code, a manual discount has none."""
    orders = sandbox.dump("orders", **WITH_LINES)
    coupons = {c["order_id"]: c for c in sandbox.dump("coupons")}
    seen_coupon = seen_manual = False
    for order in orders:
        lines = order["consignments"]["shipping"][0]["line_items"]
        coupon_share = [d for line in lines for d in line["applied_discounts"] if d["code"] is not None]
        manual_share = [d for line in lines for d in line["applied_discounts"] if d["code"] is None]
        assert sum(_cents(d["amount"]) for d in coupon_share) == _cents(order["coupon_discount"]), order["id"]
        assert sum(_cents(d["amount"]) for d in manual_share) == _cents(order["discount_amount"]), order["id"]
        if coupon_share:
            seen_coupon = True
            assert {d["code"] for d in coupon_share} == {coupons[order["id"]]["code"]}
            assert {d["id"] for d in coupon_share} == {str(coupons[order["id"]]["coupon_id"])}
        if manual_share:
            seen_manual = True
            assert {(d["id"], d["name"], d["target"]) for d in manual_share} == {("manual-discount", "Manual Discount",
                                                                                  "order")}
        discount = _cents(order["coupon_discount"]) + _cents(order["discount_amount"])
        subtotal = sum(_cents(line["total_ex_tax"]) for line in lines)
        for line in lines:  # in proportion to the line's price, to the cent
            share = sum(_cents(d["amount"]) for d in line["applied_discounts"])
            assert abs(share - discount * _cents(line["total_ex_tax"]) / subtotal) <= 2, (order["id"], line["id"])
    assert seen_coupon and seen_manual


def test_a_customer_edited_between_two_page_reads_moves_to_the_end_so_page_numbers_skip_one(fresh):  # B2, B8
    """"Paging under change" (../shared/api-specs/README.md): the sandbox shows it, so the pipeline must page by keyset."""
    everyone = fresh.get("/v3/customers", limit=250, sort="date_modified:asc").json()["data"]
    fresh.admin("PUT", f"/{STORE}/customers/3", json={"last_name": "Ødegård", "after_pages": 1})
    first = fresh.get("/v3/customers", limit=10, page=1, sort="date_modified:asc").json()["data"]
    second = fresh.get("/v3/customers", limit=10, page=2, sort="date_modified:asc").json()["data"]
    assert 3 in [c["id"] for c in first], "customer 3 sits on page one"
    read = [c["id"] for c in first + second]
    assert everyone[10]["id"] not in read, "the record at the page boundary shifted onto page one: skipped"
    assert fresh.get("/v3/customers", limit=250, sort="date_modified:asc").json()["data"][-1]["id"] == 3


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.tuples(st.integers(0, 50_000), st.integers(1, 5)), min_size=1, max_size=6),
       coupon=st.sampled_from([None, *COUPONS]), manual=st.sampled_from([0, 1, 500, 999]))
def test_any_order_s_line_discounts_add_up_and_follow_the_line_prices(lines, coupon, manual):  # B12
    """orders v2 ``orderProductAppliedDiscounts``: ``(total_discount * price_ex_tax) / subtotal_ex_tax`` per line,
    the shares adding up to the order's coupon and manual discount exactly, for any prices and quantities."""
    facts = OrderFacts(order_id=7, created=0, modified=0, status_id=10, customer_id=1, currency="USD",
                       lines=[LineFacts(70 + n, 100, "P", "S", unit, qty) for n, (unit, qty) in enumerate(lines)],
                       shipping_cents=0, shipping_method="Flat Rate", coupon=coupon, manual_discount_cents=manual,
                       email_opt_in=False, country=("United States", "US", "Texas", "Austin", "78701"),
                       refund_share=25)
    shares = {line.line_id: applied_discounts(facts, line) for line in facts.lines}
    subtotal = facts.subtotal_cents
    for code, total in ([(coupon[0], facts.coupon_cents)] if coupon else []) + [(None, manual)]:
        per_line = {line_id: sum(_cents(d["amount"]) for d in found if d["code"] == code)
                    for line_id, found in shares.items()}
        if not subtotal:  # nothing to spread over: no share anywhere
            assert set(per_line.values()) == {0}
            continue
        assert sum(per_line.values()) == total
        for line in facts.lines:
            assert abs(per_line[line.line_id] - total * line.unit_cents * line.quantity / subtotal) < 1
