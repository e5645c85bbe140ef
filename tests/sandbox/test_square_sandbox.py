"""The Square sandbox against the official spec, Square's documented rules, and the official SDK."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openapi_schema_validator
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from sandbox import square
from sandbox.core import serve
from sandbox.square_data import parse_rfc3339, to_us
from tests.conftest import sandbox_admin

SPEC_PATH = Path("/work/shared/api-specs/square/api.json")
HEADERS = {"Authorization": f"Bearer {square.TOKEN}", "Square-Version": "2025-08-20"}
EVER = "2000-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


class Sandbox:
    def __init__(self, app: square.SquareApp):
        self.app = app
        self.server, _ = serve(app)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def get(self, path: str, headers: dict | None = None, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, headers=HEADERS if headers is None else headers, timeout=10)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=HEADERS, timeout=10)

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        return sandbox_admin(self.url, "square", method, path, body)

    def dump(self) -> dict:
        return self.admin("GET", "dump")

    def all_pages(self, path: str, records_key: str, body: dict | None = None, **params) -> list[dict]:
        records, cursor = [], None
        while True:
            if body is not None:
                answer = self.post(path, {**body, **({"cursor": cursor} if cursor else {})})
            else:
                answer = self.get(path, **params, **({"cursor": cursor} if cursor else {}))
            assert answer.status_code == 200, answer.text
            records += answer.json().get(records_key, [])
            cursor = answer.json().get("cursor")
            if not cursor:
                return records


@pytest.fixture
def sandbox():
    running = Sandbox(square.create_app(seed=7))
    yield running
    running.server.shutdown()


def main_location(sandbox: Sandbox) -> str:
    return sandbox.get("/v2/locations").json()["locations"][0]["id"]


# -- conformance with the official spec --------------------------------------------------------------------
def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def undeclared_fields(spec: dict, schema: dict, value, path: str = "") -> list[str]:
    """Fields the spec does not declare (the spec itself allows extras, so a typo would pass unseen)."""
    schema = _resolve(spec, schema)
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for name, inner in value.items():
            if name not in schema["properties"]:
                found.append(f"{path}.{name}")
            else:
                found += undeclared_fields(spec, schema["properties"][name], inner, f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for index, inner in enumerate(value):
            found += undeclared_fields(spec, schema["items"], inner, f"{path}[{index}]")
    return found


def assert_conforms(spec: dict, schema_name: str, body: dict) -> None:
    registry = Registry().with_resource("urn:square", Resource.from_contents(spec, default_specification=DRAFT4))
    validator = openapi_schema_validator.OAS30ReadValidator(
        {"$ref": f"urn:square#/components/schemas/{schema_name}"}, registry=registry)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(body)]
    assert errors == [], errors[:5]
    assert undeclared_fields(spec, {"$ref": f"#/components/schemas/{schema_name}"}, body) == []


def test_every_operation_answers_in_the_spec_shape(sandbox, spec):
    locations = sandbox.get("/v2/locations").json()["locations"]
    location_ids = [loc["id"] for loc in locations]
    variation_id = next(o["id"] for o in sandbox.dump()["catalog_objects"] if o["type"] == "ITEM_VARIATION")
    calls = {
        "ListLocationsResponse": sandbox.get("/v2/locations"),
        "ListCustomersResponse": sandbox.get("/v2/customers", limit=100, count="true"),
        "SearchCustomersResponse": sandbox.post("/v2/customers/search", {
            "limit": 100, "query": {"filter": {"updated_at": {"start_at": EVER}}, "sort": {"field": "CREATED_AT"}}}),
        "ListPaymentsResponse": sandbox.get("/v2/payments", begin_time=EVER, location_id=location_ids[1]),
        "SearchOrdersResponse": sandbox.post("/v2/orders/search", {"location_ids": location_ids, "limit": 1000}),
        "SearchCatalogObjectsResponse": sandbox.post("/v2/catalog/search", {
            "object_types": ["ITEM", "ITEM_VARIATION", "CATEGORY", "IMAGE"], "include_deleted_objects": True,
            "include_related_objects": True}),
        "BatchRetrieveCatalogObjectsResponse": sandbox.post("/v2/catalog/batch-retrieve", {
            "object_ids": [variation_id], "include_related_objects": True}),
    }
    for schema_name, answer in calls.items():
        assert answer.status_code == 200, (schema_name, answer.text)
        assert_conforms(spec, schema_name, answer.json())
    entries = sandbox.post("/v2/orders/search", {"location_ids": location_ids[:1], "return_entries": True})
    assert_conforms(spec, "SearchOrdersResponse", entries.json())
    assert set(entries.json()) <= {"order_entries", "cursor"} and entries.json()["order_entries"]
    everything = sandbox.dump()
    for kind, schema_name in (("payments", "Payment"), ("orders", "Order"), ("customers", "Customer"),
                              ("catalog_objects", "CatalogObject"), ("locations", "Location")):
        for record in everything[kind]:
            assert_conforms(spec, schema_name, record)


def test_errors_answer_in_the_spec_shape(sandbox, spec):
    answers = [
        sandbox.get("/v2/payments", headers={"Authorization": "Bearer wrong"}),
        sandbox.get("/v2/payments", begin_time="yesterday"),
        sandbox.post("/v2/orders/search", {"location_ids": []}),
        sandbox.get("/v2/no-such-thing"),
    ]
    for answer in answers:
        assert answer.status_code in (400, 401, 404)
        assert_conforms(spec, "ListPaymentsResponse", answer.json())
        assert answer.json()["errors"][0]["category"] in ("INVALID_REQUEST_ERROR", "AUTHENTICATION_ERROR")


# -- the defaults and rules of the real API ------------------------------------------------------------------------
def test_payments_default_to_the_last_year_at_the_main_location(sandbox):  # S3
    everything = sandbox.dump()["payments"]
    main = main_location(sandbox)
    year_ago = to_us(datetime.now(UTC) - timedelta(days=365))
    default = sandbox.all_pages("/v2/payments", "payments")
    expected = [p for p in everything if p["location_id"] == main and parse_rfc3339(p["created_at"]) >= year_ago]
    assert {p["id"] for p in default} == {p["id"] for p in expected}
    # Newest first by default.
    assert [p["created_at"] for p in default] == sorted((p["created_at"] for p in default), reverse=True)
    # What the defaults hide: older payments and every other location.
    assert any(parse_rfc3339(p["created_at"]) < year_ago for p in everything if p["location_id"] == main)
    assert len({p["location_id"] for p in everything}) == 4
    for location in sandbox.get("/v2/locations").json()["locations"]:
        found = sandbox.all_pages("/v2/payments", "payments", location_id=location["id"], begin_time=EVER, limit=7)
        assert sorted(p["id"] for p in found) == sorted(p["id"] for p in everything
                                                        if p["location_id"] == location["id"])


def test_payments_page_by_updated_at_in_ascending_order(sandbox):  # S4
    main = main_location(sandbox)
    payments = sandbox.all_pages("/v2/payments", "payments", location_id=main, begin_time=EVER,
                                 sort_field="UPDATED_AT", sort_order="ASC", limit=5)
    stamps = [parse_rfc3339(p["updated_at"]) for p in payments]
    assert stamps == sorted(stamps) and len(payments) > 5
    middle = payments[len(payments) // 2]["updated_at"]
    later = sandbox.all_pages("/v2/payments", "payments", location_id=main, begin_time=EVER,
                              sort_field="UPDATED_AT", sort_order="ASC", updated_at_begin_time=middle)
    assert [p["id"] for p in later] == [p["id"] for p in payments[len(payments) // 2:]]
    old_version = sandbox.get("/v2/payments", headers={**HEADERS, "Square-Version": "2024-01-17"},
                              sort_field="UPDATED_AT")
    assert old_version.status_code == 400 and old_version.json()["errors"][0]["field"] == "sort_field"


def test_limit_over_100_on_payments_is_ignored_and_over_100_on_customers_is_an_error(sandbox):
    assert len(sandbox.get("/v2/payments", begin_time=EVER, limit=500).json()["payments"]) <= 100
    too_many = sandbox.post("/v2/customers/search", {"limit": 101})
    assert too_many.status_code == 400 and too_many.json()["errors"][0]["code"] == "VALUE_TOO_HIGH"


def test_a_changed_parameter_with_a_cursor_is_a_400_on_cursor(sandbox):
    first = sandbox.get("/v2/payments", begin_time=EVER, limit=5).json()
    changed = sandbox.get("/v2/payments", begin_time=EVER, limit=6, cursor=first["cursor"])
    assert changed.status_code == 400
    assert changed.json()["errors"][0]["field"] == "cursor"
    same = sandbox.get("/v2/payments", begin_time=EVER, limit=5, cursor=first["cursor"])
    assert same.status_code == 200 and same.json()["payments"]
    location_ids = [loc["id"] for loc in sandbox.get("/v2/locations").json()["locations"]]
    body = {"location_ids": location_ids, "limit": 10}
    page_one = sandbox.post("/v2/orders/search", body).json()
    other = sandbox.post("/v2/orders/search", {**body, "location_ids": location_ids[:2], "cursor": page_one["cursor"]})
    assert other.status_code == 400 and other.json()["errors"][0]["field"] == "cursor"


def test_cursor_is_absent_on_the_last_page(sandbox):
    everything = sandbox.dump()["customers"]
    answer = sandbox.get("/v2/customers", limit=len(everything))
    assert len(answer.json()["customers"]) == len(everything) and "cursor" not in answer.json()
    short = sandbox.get("/v2/customers", limit=len(everything) - 1).json()
    assert "cursor" in short
    assert len(sandbox.get("/v2/customers", limit=len(everything) - 1, cursor=short["cursor"]).json()["customers"]) == 1


def test_an_invalidated_cursor_is_a_400(sandbox):
    first = sandbox.get("/v2/payments", begin_time=EVER, limit=5).json()
    sandbox.admin("POST", "cursors/invalidate")
    stale = sandbox.get("/v2/payments", begin_time=EVER, limit=5, cursor=first["cursor"])
    assert stale.status_code == 400 and stale.json()["errors"][0]["code"] == "INVALID_CURSOR"
    sandbox.admin("POST", "cursors/invalidate", {"refuse_next": 1})
    fresh = sandbox.get("/v2/payments", begin_time=EVER, limit=5).json()
    assert sandbox.get("/v2/payments", begin_time=EVER, limit=5, cursor=fresh["cursor"]).status_code == 400
    assert sandbox.get("/v2/payments", begin_time=EVER, limit=5, cursor=fresh["cursor"]).status_code == 200
    garbled = sandbox.get("/v2/payments", begin_time=EVER, limit=5, cursor="not-a-cursor")
    assert garbled.status_code == 400 and garbled.json()["errors"][0]["field"] == "cursor"


def test_a_wrong_revoked_or_rotated_token_is_a_401(sandbox):
    wrong = sandbox.get("/v2/locations", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["errors"][0] | {"detail": None} == {"category": "AUTHENTICATION_ERROR",
                                                            "code": "UNAUTHORIZED", "detail": None}
    assert sandbox.get("/v2/locations", headers={}).status_code == 401
    sandbox.admin("PUT", "token", {"token": "rotated"})
    assert sandbox.get("/v2/locations").status_code == 401
    assert sandbox.get("/v2/locations", headers={"Authorization": "Bearer rotated"}).status_code == 200
    sandbox.admin("DELETE", "token")
    revoked = sandbox.get("/v2/locations", headers={"Authorization": "Bearer rotated"})
    assert revoked.status_code == 401 and revoked.json()["errors"][0]["code"] == "ACCESS_TOKEN_REVOKED"


def test_orders_search_takes_at_most_ten_locations(sandbox):
    main = main_location(sandbox)
    eleven = sandbox.post("/v2/orders/search", {"location_ids": [main] * 11})
    assert eleven.status_code == 400 and eleven.json()["errors"][0]["field"] == "location_ids"
    assert sandbox.post("/v2/orders/search", {"location_ids": [main] * 10}).status_code == 200


def test_orders_date_filter_must_match_the_sort_field(sandbox):
    main = main_location(sandbox)
    updated_filter = {"date_time_filter": {"updated_at": {"start_at": EVER}}}
    mismatched = sandbox.post("/v2/orders/search", {"location_ids": [main], "query": {
        "filter": updated_filter, "sort": {"sort_field": "CREATED_AT"}}})
    assert mismatched.status_code == 400 and mismatched.json()["errors"][0]["code"] == "BAD_REQUEST"
    defaulted = sandbox.post("/v2/orders/search", {"location_ids": [main], "query": {"filter": updated_filter}})
    assert defaulted.status_code == 400  # the default sort field is CREATED_AT
    matched = sandbox.all_pages("/v2/orders/search", "orders", body={"location_ids": [main], "limit": 7, "query": {
        "filter": updated_filter, "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}}})
    expected = [o for o in sandbox.dump()["orders"] if o["location_id"] == main]
    assert sorted(o["id"] for o in matched) == sorted(o["id"] for o in expected)
    assert [o["updated_at"] for o in matched] == sorted(o["updated_at"] for o in matched)


def test_catalog_search_begin_time_is_exclusive_and_deleted_objects_are_opt_in(sandbox):
    objects = sandbox.dump()["catalog_objects"]
    live = sandbox.all_pages("/v2/catalog/search", "objects", body={"limit": 4})
    assert {o["id"] for o in live} == {o["id"] for o in objects if not o["is_deleted"]}
    with_deleted = sandbox.all_pages("/v2/catalog/search", "objects", body={"include_deleted_objects": True})
    assert {o["id"] for o in with_deleted} == {o["id"] for o in objects}
    pivot = sorted(objects, key=lambda o: o["updated_at"])[10]
    after = sandbox.all_pages("/v2/catalog/search", "objects", body={
        "include_deleted_objects": True, "begin_time": pivot["updated_at"]})
    assert pivot["id"] not in {o["id"] for o in after}
    assert {o["id"] for o in after} == {o["id"] for o in objects if o["updated_at"] > pivot["updated_at"]}


def test_line_items_resolve_to_item_category_and_image_through_the_catalog(sandbox):
    everything = sandbox.dump()
    catalog = {o["id"]: o for o in everything["catalog_objects"]}
    lines = [line for order in everything["orders"] for line in order["line_items"]]
    custom = [line for line in lines if "catalog_object_id" not in line]
    assert 1 <= len(custom) <= 5  # a few custom amounts
    first_catalog_line = next(line for line in lines if "catalog_object_id" in line)
    resolved = sandbox.post("/v2/catalog/batch-retrieve", {
        "object_ids": [first_catalog_line["catalog_object_id"]], "include_related_objects": True}).json()
    variation = resolved["objects"][0]
    item = next(o for o in resolved["related_objects"] if o["id"] == variation["item_variation_data"]["item_id"])
    assert item["type"] == "ITEM"
    for line in lines:
        if "catalog_object_id" in line:
            variation = catalog[line["catalog_object_id"]]
            item = catalog[variation["item_variation_data"]["item_id"]]
            assert catalog[item["item_data"]["categories"][0]["id"]]["type"] == "CATEGORY"
            assert all(catalog[i]["type"] == "IMAGE" for i in item["item_data"]["image_ids"])
    assert any(catalog[o]["item_data"]["image_ids"] for o in catalog if catalog[o]["type"] == "ITEM")


def test_generated_data_covers_the_hard_cases(sandbox):  # S1, S3
    everything = sandbox.dump()
    customers, payments, orders = everything["customers"], everything["payments"], everything["orders"]
    paying = {p.get("customer_id") for p in payments}
    assert any("email_address" not in c for c in customers)  # S1
    assert any(c["preferences"]["email_unsubscribed"] for c in customers)
    assert any(c["id"] not in paying for c in customers)  # S3
    assert any(not name.isascii() for c in customers for name in (c["given_name"], c["family_name"]))
    assert len({p["amount_money"]["currency"] for p in payments}) >= 3
    refunds = [p for p in payments if p.get("refunded_money")]
    assert any(p["refunded_money"] == p["amount_money"] for p in refunds)
    assert any(p["refunded_money"]["amount"] < p["amount_money"]["amount"] for p in refunds)
    assert any(o.get("discounts") for o in orders) and any(o["tenders"] for o in orders)
    assert any(p.get("is_offline_payment") for p in payments)
    statuses = [loc["status"] for loc in everything["locations"]]
    assert statuses.count("ACTIVE") == 3 and statuses.count("INACTIVE") == 1
    for order in orders:  # totals add up in integer cents
        assert order["total_money"]["amount"] == sum(line["total_money"]["amount"] for line in order["line_items"])
        assert all(isinstance(line["quantity"], str) for line in order["line_items"])


def test_same_seed_same_merchant():
    anchor = datetime(2026, 3, 1, 12, tzinfo=UTC)
    dumps = []
    for seed in (11, 11, 12):
        app = square.create_app(seed=seed, anchor=anchor)
        dumps.append({k: v for k, v in app.store.dump([]).items() if k != "now"})
    assert dumps[0] == dumps[1]
    assert dumps[0]["payments"] != dumps[2]["payments"]


# -- time travel ---------------------------------------------------------------------------------------------
def test_time_travel_changes_show_up_in_updated_at_queries(sandbox):  # S4
    main = main_location(sandbox)
    before = sandbox.admin("GET", "clock")["now"]
    old_payment = next(p for p in sandbox.dump()["payments"] if p["location_id"] == main and not p.get("refund_ids"))
    customer = sandbox.dump()["customers"][0]
    sandbox.admin("POST", "clock", {"hours": 2})
    added = sandbox.admin("POST", "payments", {})
    partial = sandbox.admin("POST", f"payments/{old_payment['id']}/refund", {"amount": 1})["payment"]
    assert partial["refunded_money"]["amount"] == 1 and len(partial["refund_ids"]) == 1
    edited = sandbox.admin("POST", f"customers/{customer['id']}", {"given_name": "Zoë", "email_address": None})
    late = sandbox.admin("POST", "payments", {"offline": True, "created_days_ago": 2})["payment"]
    assert late["offline_payment_details"]["client_created_at"] == late["created_at"]

    changed = sandbox.all_pages("/v2/payments", "payments", location_id=main, begin_time=EVER,
                                sort_field="UPDATED_AT", sort_order="ASC", updated_at_begin_time=before)
    assert {p["id"] for p in changed} == {added["payment"]["id"], old_payment["id"], late["id"]}
    orders = sandbox.all_pages("/v2/orders/search", "orders", body={"location_ids": [main], "query": {
        "filter": {"date_time_filter": {"updated_at": {"start_at": before}}}, "sort": {"sort_field": "UPDATED_AT"}}})
    assert {o["id"] for o in orders} == {added["order"]["id"], old_payment["order_id"], late["order_id"]}
    assert next(o for o in orders if o["id"] == old_payment["order_id"])["refunds"][0]["amount_money"]["amount"] == 1
    customers = sandbox.all_pages("/v2/customers/search", "customers", body={
        "query": {"filter": {"updated_at": {"start_at": before}}}})
    assert {c["id"] for c in customers} == {edited["customer"]["id"], added["customer"]["id"], late["customer_id"]}
    assert "email_address" not in edited["customer"] and edited["customer"]["version"] == customer["version"] + 1
    # The rest of the refund, then no more.
    full = sandbox.admin("POST", f"payments/{old_payment['id']}/refund")["payment"]
    assert full["refunded_money"] == full["amount_money"] and len(full["refund_ids"]) == 2
    too_much = requests.post(f"{sandbox.url}/__admin/square/payments/{old_payment['id']}/refund", json={}, timeout=10)
    assert too_much.status_code == 400


def test_locations_can_be_added_and_deactivated(sandbox):  # S2, S9
    added = sandbox.admin("POST", "locations", {"name": "Zürich Bahnhof", "currency": "CHF", "country": "CH"})
    location_id = added["location"]["id"]
    payment = sandbox.admin("POST", "payments", {"location_id": location_id})["payment"]
    assert payment["amount_money"]["currency"] == "CHF"
    assert [p["id"] for p in sandbox.all_pages("/v2/payments", "payments", location_id=location_id)] == [payment["id"]]
    sandbox.admin("POST", f"locations/{location_id}/deactivate")
    statuses = {loc["id"]: loc["status"] for loc in sandbox.get("/v2/locations").json()["locations"]}
    assert statuses[location_id] == "INACTIVE"


def test_rate_limit_fault_answers_rate_limited(sandbox):
    requests.put(f"{sandbox.url}/__admin/faults", json={"error_rate": 1.0, "kinds": ["429"]}, timeout=5)
    answer = sandbox.get("/v2/locations")
    assert answer.status_code == 429
    assert answer.json()["errors"][0]["code"] == "RATE_LIMITED"
    assert answer.json()["errors"][0]["category"] == "RATE_LIMIT_ERROR"


def test_fixtures_replace_generated_data(tmp_path, spec):
    location = {"id": "LFIXTURE00001", "name": "Fixture Café", "status": "ACTIVE", "currency": "EUR"}
    customer = {"id": "CFIXTURE", "created_at": "2025-01-01T10:00:00Z", "updated_at": "2025-01-02T10:00:00Z",
                "given_name": "Ünal"}
    payment = {"id": "PFIXTURE", "created_at": "2020-01-01T10:00:00Z", "updated_at": "2020-01-01T10:00:05Z",
               "location_id": location["id"], "amount_money": {"amount": 1234, "currency": "EUR"}, "status": "COMPLETED"}
    (tmp_path / "locations.json").write_text(json.dumps({"locations": [location]}))
    (tmp_path / "customers.json").write_text(json.dumps({"customers": [customer]}))
    (tmp_path / "payments.json").write_text(json.dumps({"payments": [payment]}))
    running = Sandbox(square.create_app(seed=1, fixtures_dir=tmp_path))
    try:
        assert running.get("/v2/locations").json() == {"locations": [location]}
        assert running.all_pages("/v2/payments", "payments", begin_time=EVER) == [payment]
        assert running.get("/v2/payments").json() == {}  # older than a year: hidden by the default
        assert running.all_pages("/v2/customers", "customers") == [customer]
        assert running.post("/v2/orders/search", {"location_ids": [location["id"]]}).json() == {}
    finally:
        running.server.shutdown()
    (tmp_path / "payments.json").write_text(json.dumps({"payments": [{"id": "no-times"}]}))
    with pytest.raises(ValueError, match="created_at"):
        square.create_app(fixtures_dir=tmp_path)


def test_a_large_merchant_is_generated_lazily():
    app = square.create_app(seed=3, payments=200_000, customers=20_000)
    running = Sandbox(app)
    try:
        main = main_location(running)
        last = running.get("/v2/payments", location_id=main, begin_time=EVER, sort_order="DESC", limit=100).json()
        assert len(last["payments"]) == 100 and "cursor" in last
        stamps = [p["created_at"] for p in last["payments"]]
        assert stamps == sorted(stamps, reverse=True)
        deep = running.get("/v2/payments", location_id=main, begin_time=EVER, sort_order="DESC", limit=100,
                           cursor=last["cursor"]).json()
        assert deep["payments"][0]["created_at"] < stamps[-1]
        assert not app.store.payments.explicit  # nothing was materialised
    finally:
        running.server.shutdown()


# -- the official SDK -----------------------------------------------------------------------------------------
def test_the_official_sdk_reads_everything(sandbox):
    from square import Square

    client = Square(token=square.TOKEN, base_url=sandbox.url)
    everything = sandbox.dump()
    locations = client.locations.list().locations
    assert [loc.id for loc in locations] == [loc["id"] for loc in everything["locations"]]
    payments = [p for loc in locations for p in client.payments.list(location_id=loc.id, begin_time=EVER, limit=9)]
    assert sorted(p.id for p in payments) == sorted(p["id"] for p in everything["payments"])
    assert all(isinstance(p.amount_money.amount, int) for p in payments)
    assert sorted(c.id for c in client.customers.list(limit=7)) == sorted(c["id"] for c in everything["customers"])
    searched, cursor = [], None
    while True:
        answer = client.customers.search(limit=11, cursor=cursor, query={
            "filter": {"updated_at": {"start_at": EVER}}, "sort": {"field": "CREATED_AT", "order": "ASC"}})
        searched += answer.customers or []
        cursor = answer.cursor
        if not cursor:
            break
    assert [c.id for c in searched] == [c["id"] for c in everything["customers"]]
    orders, cursor = [], None
    while True:
        answer = client.orders.search(location_ids=[loc.id for loc in locations], limit=40, cursor=cursor, query={
            "filter": {"date_time_filter": {"updated_at": {"start_at": EVER}}},
            "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}})
        orders += answer.orders or []
        cursor = answer.cursor
        if not cursor:
            break
    assert sorted(o.id for o in orders) == sorted(o["id"] for o in everything["orders"])
    assert all(line.quantity.isdigit() for o in orders for line in o.line_items)


# -- issue 13: status, refunds, cancelled orders, nameless lines, inactive locations ----------------------------
# Sources: api.json Payment.status ("APPROVED, PENDING, COMPLETED, CANCELED, or FAILED"), CardPaymentDetails.status
# (AUTHORIZED, CAPTURED, VOIDED, FAILED), Payment.refunded_money / refund_ids, OrderState (OPEN, COMPLETED,
# CANCELED), OrderLineItem (only `quantity` required), Location.status (ACTIVE, INACTIVE).
CARD_STATUS = {"APPROVED": "AUTHORIZED", "COMPLETED": "CAPTURED", "CANCELED": "VOIDED", "FAILED": "FAILED"}


def test_generated_payments_cover_every_status_and_their_orders_follow(sandbox, spec):  # S11, S12, G1
    everything = sandbox.dump()
    payments, orders = everything["payments"], {o["id"]: o for o in everything["orders"]}
    assert {p["status"] for p in payments} == set(square.PAYMENT_STATUSES)
    for payment in payments:
        order = orders[payment["order_id"]]  # every payment's order exists
        if "card_details" in payment:
            assert payment["card_details"]["status"] == CARD_STATUS[payment["status"]]
        if payment["status"] != "COMPLETED":
            assert "refunded_money" not in payment and "refund_ids" not in payment
            assert payment["id"] not in {t["payment_id"] for t in order.get("tenders", [])}
        if payment["status"] == "CANCELED":
            assert order["state"] == "CANCELED" and "closed_at" in order and "tenders" not in order
        if payment["status"] in ("APPROVED", "PENDING"):
            assert order["state"] == "OPEN" and "closed_at" not in order
    assert next(p for p in payments if p["status"] == "PENDING")["source_type"] == "BANK_ACCOUNT"
    for order in orders.values():
        paid_by = [p for p in payments if p["order_id"] == order["id"]]
        completed = [p for p in paid_by if p["status"] == "COMPLETED"]
        assert order["state"] == ("COMPLETED" if completed else "CANCELED" if any(
            p["status"] == "CANCELED" for p in paid_by) else "OPEN")
        assert [t["payment_id"] for t in order.get("tenders", [])] == [p["id"] for p in completed]
    # A declined card, then a completed retry on the same order for the same customer.
    retried = [(a, b) for a in payments for b in payments if a["order_id"] == b["order_id"]
               and a["status"] == "FAILED" and b["status"] == "COMPLETED"]
    assert retried
    for declined, retry in retried:
        assert declined["created_at"] < retry["created_at"]
        assert declined.get("customer_id") == retry.get("customer_id")
        assert declined["location_id"] == retry["location_id"]
        assert declined["amount_money"] == retry["amount_money"] == orders[retry["order_id"]]["total_money"]
        assert declined["card_details"]["errors"][0]["code"] == "GENERIC_DECLINE"
    assert any(p["status"] == "FAILED" and orders[p["order_id"]]["state"] == "OPEN" for p in payments)
    # Refunds, full and partial, only of completed payments.
    refunded = [p for p in payments if p.get("refunded_money")]
    assert {p["status"] for p in refunded} == {"COMPLETED"}
    assert any(p["refunded_money"] == p["amount_money"] for p in refunded)
    assert any(0 < p["refunded_money"]["amount"] < p["amount_money"]["amount"] for p in refunded)


def test_generated_custom_amount_lines_may_have_no_name(sandbox):  # S12
    lines = [line for order in sandbox.dump()["orders"] for line in order["line_items"]]
    custom = [line for line in lines if line["item_type"] == "CUSTOM_AMOUNT"]
    assert all("catalog_object_id" not in line for line in custom)
    assert any("name" not in line for line in custom) and any("name" in line for line in custom)
    assert all("name" in line for line in lines if line["item_type"] == "ITEM")


def test_the_inactive_location_holds_history_on_both_sides_of_the_one_year_default(sandbox):  # S3
    everything = sandbox.dump()
    [inactive] = [loc["id"] for loc in everything["locations"] if loc["status"] == "INACTIVE"]
    year_ago = parse_rfc3339(everything["now"]) - square.YEAR
    created = [parse_rfc3339(p["created_at"]) for p in everything["payments"] if p["location_id"] == inactive]
    assert min(created) < year_ago < max(created)
    listed = sandbox.all_pages("/v2/payments", "payments", location_id=inactive, begin_time=EVER)
    assert len(listed) == len(created)
    assert sandbox.all_pages("/v2/payments", "payments") and not any(
        p["location_id"] == inactive for p in sandbox.all_pages("/v2/payments", "payments"))


def test_admin_makes_payments_in_every_status_retries_transitions_and_refunds(sandbox, spec):  # S11, S12, G1
    main = main_location(sandbox)
    made = {status: sandbox.admin("POST", "payments", {"status": status, "amount": 48000})
            for status in square.PAYMENT_STATUSES}
    for status, sale in made.items():
        assert sale["payment"]["status"] == status and sale["payment"]["amount_money"]["amount"] == 48000
        assert sale["order"]["state"] == {"COMPLETED": "COMPLETED", "CANCELED": "CANCELED"}.get(status, "OPEN")
        assert_conforms(spec, "Payment", sale["payment"])
        assert_conforms(spec, "Order", sale["order"])
    # The declined card, then a completed retry on the same order (same customer, same location).
    declined = made["FAILED"]
    retry = sandbox.admin("POST", "payments", {"order_id": declined["order"]["id"]})
    assert retry["payment"]["order_id"] == declined["payment"]["order_id"]
    assert retry["payment"]["customer_id"] == declined["payment"]["customer_id"]
    assert retry["order"]["state"] == "COMPLETED"
    assert [t["payment_id"] for t in retry["order"]["tenders"]] == [retry["payment"]["id"]]
    paid_twice = requests.post(f"{sandbox.url}/__admin/square/payments", json={"order_id": retry["order"]["id"]},
                               timeout=10)
    assert paid_twice.status_code == 400
    # Status transitions move updated_at, so an updated_at increment catches them.
    sandbox.admin("POST", "clock", {"minutes": 5})
    captured = sandbox.admin("POST", f"payments/{made['APPROVED']['payment']['id']}/status",
                             {"status": "COMPLETED"})["payment"]
    assert captured["status"] == "COMPLETED" and captured["card_details"]["status"] == "CAPTURED"
    assert captured["updated_at"] > made["APPROVED"]["payment"]["updated_at"]
    bounced = sandbox.admin("POST", f"payments/{made['PENDING']['payment']['id']}/status", {"status": "FAILED"})
    assert bounced["payment"]["approved_money"]["amount"] == 0
    wrong = requests.post(f"{sandbox.url}/__admin/square/payments/{made['COMPLETED']['payment']['id']}/status",
                          json={"status": "CANCELED"}, timeout=10)
    assert wrong.status_code == 400
    orders = {o["id"]: o for o in sandbox.dump()["orders"]}
    assert orders[captured["order_id"]]["state"] == "COMPLETED"
    assert orders[bounced["payment"]["order_id"]]["state"] == "OPEN"
    # Only money taken can be given back.
    not_taken = requests.post(f"{sandbox.url}/__admin/square/payments/{made['FAILED']['payment']['id']}/refund",
                              json={}, timeout=10)
    assert not_taken.status_code == 400
    partial = sandbox.admin("POST", f"payments/{made['COMPLETED']['payment']['id']}/refund", {"amount": 700})
    assert partial["payment"]["refunded_money"] == {"amount": 700, "currency": "USD"}
    changed = sandbox.all_pages("/v2/payments", "payments", location_id=main, begin_time=EVER,
                                sort_field="UPDATED_AT", sort_order="ASC",
                                updated_at_begin_time=captured["updated_at"])
    assert {captured["id"], bounced["payment"]["id"], partial["payment"]["id"]} <= {p["id"] for p in changed}
    bad = requests.post(f"{sandbox.url}/__admin/square/payments", json={"status": "DECLINED"}, timeout=10)
    assert bad.status_code == 400


def test_admin_custom_amount_without_name_and_an_old_payment_at_an_inactive_location(sandbox, spec):  # S3, S12
    sale = sandbox.admin("POST", "payments", {"amount": 5000})
    [line] = sale["order"]["line_items"]
    assert line["item_type"] == "CUSTOM_AMOUNT" and line["quantity"] == "1"
    assert "name" not in line and "catalog_object_id" not in line
    assert sale["payment"]["amount_money"]["amount"] == sale["order"]["total_money"]["amount"] == 5000
    named = sandbox.admin("POST", "payments", {"amount": 1250, "line_name": "Trinkgeldkasse"})
    assert named["order"]["line_items"][0]["name"] == "Trinkgeldkasse"
    [inactive] = [loc["id"] for loc in sandbox.dump()["locations"] if loc["status"] == "INACTIVE"]
    old = sandbox.admin("POST", "payments", {"location_id": inactive, "amount": 2500, "created_days_ago": 300,
                                             "updated_days_ago": 300})["payment"]
    assert old["amount_money"] == {"amount": 2500, "currency": "CAD"}
    assert old["id"] in {p["id"] for p in sandbox.all_pages("/v2/payments", "payments", location_id=inactive)}
    for record in (sale["payment"], old):
        assert_conforms(spec, "Payment", record)
    assert_conforms(spec, "Order", sale["order"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), payments=st.integers(0, 400), customers=st.integers(0, 40))
def test_generated_sort_keys_are_the_records_times_and_strictly_increase(seed, payments, customers):
    """Any size: each generated record's times are the keys its index is found by (bisection and keyset
    paging rely on it), the keys strictly increase, and a payment's order always exists."""
    data = square.SquareData(seed, datetime(2026, 3, 1, tzinfo=UTC), payments, customers)
    previous: dict[str, int] = {}
    for i in range(payments):
        payment, order = data.sale(i)
        plan = data.payment_plan(i)
        assert (parse_rfc3339(payment["created_at"]), parse_rfc3339(payment["updated_at"])) == (plan.created,
                                                                                                plan.updated)
        assert payment["status"] == plan.status == data.payment_status(i)
        owner = i if order is not None else i - 1
        assert payment["order_id"] == data.order_id(owner) and data.order_index(payment["order_id"]) == owner
        keys = data.order_times(i)
        if order is not None:
            for name in ("created_at", "updated_at", "closed_at"):
                if name in order:
                    assert parse_rfc3339(order[name]) == keys[name], (i, name)
        for name, key in keys.items():
            assert key > previous.get(name, -1), (i, name)
            previous[name] = key


def test_an_authorization_not_completed_in_time_is_cancelled_by_its_delay_action(sandbox):  # S4, G1
    everything = sandbox.dump()
    approved = next(p for p in everything["payments"] if p["status"] == "APPROVED")
    pending = next(p for p in everything["payments"] if p["status"] == "PENDING")
    now = parse_rfc3339(everything["now"])
    # In flight at the end of the history, as Square shows such payments: the delay action is still ahead.
    assert parse_rfc3339(approved["created_at"]) < now < parse_rfc3339(approved["delayed_until"])
    assert now - parse_rfc3339(pending["created_at"]) < 3 * 86400 * 10**6
    sandbox.admin("POST", "clock", {"hours": 1})
    assert sandbox.admin("GET", "dump?kind=payments")["payments"][-1]["status"] == "APPROVED"
    sandbox.admin("POST", "clock", {"days": 2})
    payments = {p["id"]: p for p in sandbox.dump()["payments"]}
    cancelled = payments[approved["id"]]
    assert cancelled["status"] == "CANCELED" and cancelled["card_details"]["status"] == "VOIDED"
    assert cancelled["updated_at"] > approved["updated_at"]
    order = next(o for o in sandbox.dump()["orders"] if o["id"] == approved["order_id"])
    assert order["state"] == "CANCELED" and "closed_at" in order
    assert payments[pending["id"]]["status"] == "PENDING"  # a bank transfer has no delay action


def test_the_request_log_counts_every_api_request_by_path_and_leaves_admin_calls_out(sandbox):  # S4, P3
    """What the extract tests count requests with (issue 16: merchant streams once per run): every API request,
    answered or refused, is one entry with its method, path, query and body; ``/__admin`` calls are not."""
    from collections import Counter

    requests.delete(f"{sandbox.url}/__admin/requests", timeout=5)
    main = sandbox.dump()["locations"][0]["id"]
    sandbox.get("/v2/locations")
    sandbox.post("/v2/customers/search", {"limit": 100})
    sandbox.post("/v2/customers/search", {"limit": 0})  # refused: still a request made
    sandbox.get("/v2/payments", location_id=main, begin_time=EVER)
    sandbox.get("/v2/locations", headers={})  # 401 without a token
    log = requests.get(f"{sandbox.url}/__admin/requests", timeout=5).json()["requests"]
    assert Counter((entry["method"], entry["path"]) for entry in log) == {
        ("GET", "/v2/locations"): 2, ("POST", "/v2/customers/search"): 2, ("GET", "/v2/payments"): 1}
    assert [entry["status"] for entry in log] == [200, 200, 400, 200, 401]
    assert log[1]["body"] == {"limit": 100} and f"location_id={main}" in log[3]["query"]
    assert [entry["seq"] for entry in log] == sorted(entry["seq"] for entry in log)
