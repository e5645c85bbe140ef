"""The ActiveCampaign sandbox against its contract: the official-docs OpenAPI subset, errors, limits, CRM inspection."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from sandbox.activecampaign import create_app
from sandbox.core import FaultPlan, serve

SPEC_FILE = Path("/work/shared/api-specs/activecampaign/ac-v3-ecom-contacts-subset.openapi.json")
TOKEN = "sandbox-ac-token"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    document = json.loads(SPEC_FILE.read_text())
    # The documented server is the account's own host; the sandbox serves the same paths on loopback.
    document["servers"] = [{"url": "/api/3"}]
    # The two documented shapes of a contact list overlap, so "oneOf" could never hold: either may match.
    listed = document["paths"]["/contacts"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    listed["anyOf"] = listed.pop("oneOf")
    # The third-party copy has a schema default that fails the spec validator; the schemas themselves are used as they are.
    return OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))


class Crm:
    """A real HTTP client of one sandbox account."""

    def __init__(self, url: str, app):
        self.url, self.app = url, app
        self.http = requests.Session()
        self.http.headers["Api-Token"] = TOKEN

    def call(self, method: str, path: str, body: dict | None = None, **params) -> requests.Response:
        return self.http.request(method, f"{self.url}/api/3/{path}", json=body, params=params or None, timeout=10)

    def admin(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        return requests.request(method, f"{self.url}/__admin/activecampaign/{path}", json=body, timeout=10)

    def state(self) -> dict:
        return self.admin("GET", "state").json()

    def writes(self) -> list[dict]:
        return self.admin("GET", "writes").json()["writes"]

    def duplicates(self) -> dict:
        return self.admin("GET", "duplicates").json()

    # -- building blocks ------------------------------------------------------
    def connection(self, externalid: str = "store-1", service: str = "bigcommerce") -> str:
        answer = self.call("POST", "connections", {"connection": {
            "service": service, "externalid": externalid, "name": f"Store {externalid}",
            "logoUrl": "https://example.com/logo.png", "linkUrl": "https://example.com"}})
        assert answer.status_code == 200, answer.text
        return answer.json()["connection"]["id"]

    def customer(self, connectionid: str, externalid: str = "7", email: str = "anna@example.com") -> str:
        answer = self.call("POST", "ecomCustomers", {"ecomCustomer": {
            "connectionid": connectionid, "externalid": externalid, "email": email, "acceptsMarketing": "1"}})
        assert answer.status_code == 201, answer.text
        return answer.json()["ecomCustomer"]["id"]


def order_payload(connectionid: str, customerid: str, externalid: str | None = "1001", source: int = 1,
                  **overrides) -> dict:
    order = {"externalid": externalid, "source": source, "email": "anna@example.com",
             "orderProducts": [{"externalid": "P1", "name": "Pogo Stick", "price": 4900, "quantity": 1,
                                "category": "Toys", "sku": "POGO-12"},
                               {"externalid": "P2", "name": "Skateboard", "price": 3000, "quantity": 2,
                                "category": "Toys", "sku": "SK8"}],
             "orderDiscounts": [{"name": "1OFF", "type": "order", "discountAmount": 100}],
             "totalPrice": 10800, "shippingAmount": 200, "taxAmount": 0, "discountAmount": 100, "currency": "EUR",
             "connectionid": connectionid, "customerid": customerid, "orderNumber": externalid or "",
             "externalCreatedDate": "2024-03-01T10:00:00+00:00", "shippingMethod": "UPS Ground"}
    order.update(overrides)
    return {"ecomOrder": order}


def cart_payload(connectionid: str, customerid: str, checkout: str = "chk-1", source: int = 1) -> dict:
    payload = order_payload(connectionid, customerid, externalid=None, source=source,
                            externalcheckoutid=checkout, abandonedDate="2024-03-01T12:00:00+00:00")
    del payload["ecomOrder"]["externalid"]
    return payload


@pytest.fixture
def start():
    servers = []

    def run(**options) -> Crm:
        options.setdefault("enforce_rate_limit", False)
        app = create_app(**options)
        server, _ = serve(app)
        servers.append(server)
        return Crm(f"http://127.0.0.1:{server.server_port}", app)

    yield run
    for server in servers:
        server.shutdown()


@pytest.fixture
def crm(start) -> Crm:
    return start()


def conforms(spec: OpenAPI, answer: requests.Response) -> dict:
    spec.validate_response(RequestsOpenAPIRequest(answer.request), RequestsOpenAPIResponse(answer))
    return answer.json()


def assert_error(answer: requests.Response, status: int, code: str, pointer: str) -> None:
    assert answer.status_code == status, answer.text
    errors = answer.json()["errors"]
    assert {"title", "detail", "code", "source"} <= set(errors[0])
    assert (errors[0]["code"], errors[0]["source"]["pointer"]) == (code, f"/data/attributes/{pointer}"), errors


# -- auth -----------------------------------------------------------------------

def test_a_wrong_or_missing_token_is_401(crm):
    for headers in ({"Api-Token": "nope"}, {}):
        answer = requests.get(f"{crm.url}/api/3/connections", headers=headers, timeout=5)
        assert answer.status_code == 401
        assert answer.json() == {"message": "No Result found for Subscriber with id 0"}
    assert crm.writes() == []


# -- connections, customers, orders: shapes from the spec ----------------------------

def test_connections_conform_and_a_second_one_for_the_same_store_is_a_422_duplicate(crm, spec):  # S2, S6
    created = conforms(spec, crm.call("POST", "connections", {"connection": {
        "service": "square", "externalid": "L1", "name": "Main street", "logoUrl": "", "linkUrl": "https://x"}}))
    assert created["connection"]["id"] == "1"
    crm.connection("store-1")
    listed = conforms(spec, crm.call("GET", "connections", **{"filters[service]": "square"}))
    assert [c["externalid"] for c in listed["connections"]] == ["L1"] and listed["meta"]["total"] == "1"
    assert crm.call("GET", "connections", **{"filters[externalid]": "store-1"}).json()["meta"]["total"] == "1"
    conforms(spec, crm.call("GET", "connections/1"))
    renamed = conforms(spec, crm.call("PUT", "connections/1", {"connection": {"name": "High street"}}))
    assert renamed["connection"]["name"] == "High street"
    again = crm.call("POST", "connections", {"connection": {
        "service": "square", "externalid": "L1", "name": "again", "logoUrl": "", "linkUrl": "https://x"}})
    assert_error(again, 422, "duplicate", "externalid")
    assert_error(crm.call("POST", "connections", {"connection": {"service": "square"}}), 422, "field_missing",
                 "externalid")
    conforms(spec, crm.call("DELETE", "connections/1"))
    assert crm.call("GET", "connections/1").status_code == 404


def test_ecom_customers_need_an_existing_connection_and_filter_by_email(crm, spec):  # B6
    answer = crm.call("POST", "ecomCustomers", {"ecomCustomer": {"connectionid": "9", "externalid": "1",
                                                                 "email": "a@example.com"}})
    assert_error(answer, 422, "related_missing", "connectionid")
    connection = crm.connection()
    created = conforms(spec, crm.call("POST", "ecomCustomers", {"ecomCustomer": {
        "connectionid": connection, "externalid": "42", "email": "Juergen.Mueller@Example.com",
        "acceptsMarketing": "1"}}))["ecomCustomer"]
    assert (created["connectionid"], created["externalid"]) == (connection, "42")
    found = conforms(spec, crm.call("GET", "ecomCustomers", **{"filters[email]": "juergen.mueller@example.com"}))
    assert [c["id"] for c in found["ecomCustomers"]] == [created["id"]]
    assert crm.call("GET", "ecomCustomers", **{"filters[externalid]": "42", "filters[connectionid]": "2"}).json()[
        "ecomCustomers"] == []
    updated = conforms(spec, crm.call("PUT", f"ecomCustomers/{created['id']}",
                                      {"ecomCustomer": {"acceptsMarketing": "0"}}))
    assert updated["ecomCustomer"]["acceptsMarketing"] == "0"
    assert conforms(spec, crm.call("GET", f"ecomCustomers/{created['id']}"))["ecomCustomer"]["email"] == \
        "Juergen.Mueller@Example.com"


def test_orders_conform_and_a_put_replaces_all_line_items(crm, spec):  # B4, B12
    connection = crm.connection()
    customer = crm.customer(connection)
    created = conforms(spec, crm.call("POST", "ecomOrders", order_payload(connection, customer)))
    order = created["ecomOrder"]
    assert (order["totalPrice"], order["currency"], order["source"]) == (10800, "EUR", "1")
    assert [p["price"] for p in created["ecomOrderProducts"]] == [4900, 3000]
    assert created["ecomOrderDiscounts"][0]["discountAmount"] == "100"
    read = conforms(spec, crm.call("GET", f"ecomOrders/{order['id']}"))["ecomOrder"]
    assert read["totalPrice"] == "10800" and len(read["orderProducts"]) == 2
    updated = conforms(spec, crm.call("PUT", f"ecomOrders/{order['id']}", {"ecomOrder": {
        "totalPrice": 2500, "orderProducts": [{"externalid": "P3", "name": "Helmet", "price": 2500, "quantity": 1}]}}))
    assert [p["name"] for p in updated["ecomOrderProducts"]] == ["Helmet"]
    assert updated["ecomOrder"]["totalPrice"] == 2500
    lines = crm.call("GET", f"ecomOrders/{order['id']}/orderProducts").json()["ecomOrderProducts"]
    assert [(p["name"], p["price"]) for p in lines] == [("Helmet", "2500")]
    stored = crm.state()["ecomOrders"][0]
    assert [p["name"] for p in stored["orderProducts"]] == ["Helmet"] and stored["orderDiscounts"][0]["name"] == "1OFF"
    totals = crm.call("GET", f"ecomCustomers/{customer}").json()["ecomCustomer"]
    assert (totals["totalRevenue"], totals["totalOrders"]) == ("2500", "1")


def test_order_validation_answers_422_in_the_apis_shape(crm):
    connection = crm.connection()
    customer = crm.customer(connection)

    def post(**overrides) -> requests.Response:
        payload = order_payload(connection, customer)
        payload["ecomOrder"].update(overrides)
        return crm.call("POST", "ecomOrders", payload)

    missing = crm.call("POST", "ecomOrders", {"ecomOrder": {"externalid": "1", "source": 1}})
    assert missing.status_code == 422
    assert {e["source"]["pointer"].rsplit("/", 1)[1] for e in missing.json()["errors"]} == {
        "email", "totalPrice", "currency", "connectionid", "customerid", "externalCreatedDate", "orderProducts"}
    assert {e["code"] for e in missing.json()["errors"]} == {"field_missing"}
    assert_error(post(totalPrice=108.0), 422, "field_invalid", "totalPrice")
    assert_error(post(totalPrice="10800"), 422, "field_invalid", "totalPrice")
    assert_error(post(customerid="99"), 422, "related_missing", "customerid")
    assert_error(post(connectionid="99"), 422, "related_missing", "connectionid")
    assert_error(post(externalid=None), 422, "field_missing", "externalid")
    assert_error(post(orderProducts=[]), 422, "field_missing", "orderProducts")
    assert_error(post(externalCreatedDate="yesterday"), 422, "field_invalid", "externalCreatedDate")
    cart_without_date = cart_payload(connection, customer)
    del cart_without_date["ecomOrder"]["abandonedDate"]
    assert_error(crm.call("POST", "ecomOrders", cart_without_date), 422, "field_missing", "abandonedDate")
    invalid = post(email="not-an-email")
    assert invalid.status_code == 422
    assert invalid.json() == {"errors": [{"title": "Email address is not valid",
                                          "detail": "'not-an-email' is not a valid email address",
                                          "code": "email_invalid", "source": {"pointer": "/data/attributes/email"}}]}
    assert crm.state()["ecomOrders"] == [] and crm.call("GET", "ecomOrders/5").status_code == 404
    assert_error(crm.call("POST", "ecomOrders", {}), 422, "field_missing", "ecomOrder")
    broken = crm.http.post(f"{crm.url}/api/3/ecomOrders", data=b"{not json", timeout=5)
    assert broken.status_code == 400 and broken.json()["errors"][0]["code"] == "invalid_json"


def test_order_filters(crm):
    first, second = crm.connection("store-1"), crm.connection("store-2")
    customer_1, customer_2 = crm.customer(first), crm.customer(second, email="bob@example.com")
    crm.call("POST", "ecomOrders", order_payload(first, customer_1, "1001"))
    crm.call("POST", "ecomOrders", order_payload(second, customer_2, "1001", email="Bob@Example.com"))
    crm.call("POST", "ecomOrders", cart_payload(first, customer_1, "chk-9"))

    def ids(**filters) -> list[str]:
        return [o["id"] for o in crm.call("GET", "ecomOrders", **filters).json()["ecomOrders"]]

    assert ids(**{"filters[externalid]": "1001"}) == ["1", "2"]
    assert ids(**{"filters[externalid]": "1001", "filters[connectionid]": second}) == ["2"]
    assert ids(**{"filters[externalcheckoutid]": "chk-9"}) == ["3"]
    assert ids(**{"filters[email]": "bob@example.com"}) == ["2"]
    assert ids(**{"filters[externalid]": "404"}) == []


# -- contacts, tags, lists --------------------------------------------------------

def test_contact_sync_upserts_by_email_case_insensitively(crm, spec):  # S10, B3
    created = crm.call("POST", "contact/sync", {"contact": {"email": "Zoe@Example.com", "firstName": "Zoë"}})
    assert created.status_code == 201
    contact = conforms(spec, created)["contact"]
    again = crm.call("POST", "contact/sync", {"contact": {"email": "zoe@example.COM", "lastName": "Weiß",
                                                          "phone": "+49 30 1234567"}})
    assert again.status_code == 200 and again.json()["contact"]["id"] == contact["id"]
    found = conforms(spec, crm.call("GET", "contacts", email="ZOE@example.com"))
    assert [(c["firstName"], c["lastName"]) for c in found["contacts"]] == [("Zoë", "Weiß")]
    assert crm.call("GET", "contacts", **{"filters[email]": "zoe@example.com"}).json()["meta"]["total"] == "1"
    assert crm.call("GET", f"contacts/{contact['id']}").json()["contact"]["phone"] == "+49 30 1234567"
    assert_error(crm.call("POST", "contacts", {"contact": {"email": "zoe@example.com"}}), 422, "duplicate", "email")
    assert_error(crm.call("POST", "contact/sync", {"contact": {"firstName": "x"}}), 422, "field_missing", "email")
    assert_error(crm.call("POST", "contact/sync", {"contact": {"email": "zoe@@example"}}), 422, "email_invalid",
                 "email")
    assert crm.duplicates()["contacts"] == 0


def test_tags_and_contact_tags(crm, spec):  # B3
    contact = crm.call("POST", "contact/sync", {"contact": {"email": "a@example.com"}}).json()["contact"]["id"]
    tag = crm.call("POST", "tags", {"tag": {"tag": "bigcommerce-customer", "tagType": "contact"}})
    assert tag.status_code == 201
    tag_id = tag.json()["tag"]["id"]
    assert crm.call("POST", "tags", {"tag": {"tag": "bigcommerce-customer"}}).status_code == 422
    assert [t["id"] for t in crm.call("GET", "tags", search="commerce").json()["tags"]] == [tag_id]
    assert crm.call("GET", "tags", search="square").json()["tags"] == []
    link = conforms(spec, crm.call("POST", "contactTags", {"contactTag": {"contact": contact, "tag": tag_id}}))
    same = conforms(spec, crm.call("POST", "contactTags", {"contactTag": {"contact": int(contact), "tag": int(tag_id)}}))
    assert same["contactTag"]["id"] == link["contactTag"]["id"]
    assert len(crm.state()["contactTags"]) == 1 and crm.duplicates()["contactTags"] == 0
    assert crm.call("POST", "contactTags", {"contactTag": {"contact": "99", "tag": tag_id}}).status_code == 404


def test_lists_and_contact_lists(crm, spec):  # B7
    lists = crm.call("GET", "lists", **{"filters[name]": "Master Contact List"}).json()
    assert lists["meta"]["total"] == "1"
    list_id = lists["lists"][0]["id"]
    contact = crm.call("POST", "contact/sync", {"contact": {"email": "a@example.com"}}).json()["contact"]["id"]
    subscribed = conforms(spec, crm.call("POST", "contactLists", {"contactList": {
        "list": list_id, "contact": contact, "status": 1}}))
    assert subscribed["contactList"]["status"] == 1
    unsubscribed = crm.call("POST", "contactLists", {"contactList": {"list": list_id, "contact": contact,
                                                                     "status": "2"}}).json()
    assert unsubscribed["contactList"]["id"] == subscribed["contactList"]["id"]
    assert [cl["status"] for cl in crm.state()["contactLists"]] == ["2"]
    assert_error(crm.call("POST", "contactLists", {"contactList": {"list": list_id, "contact": contact,
                                                                   "status": 3}}), 422, "field_invalid", "status")
    assert crm.call("POST", "contactLists", {"contactList": {"list": "77", "contact": contact,
                                                             "status": 1}}).status_code == 404


def test_the_master_list_can_be_renamed_deleted_or_absent(crm, start):  # B7
    def names(account: Crm) -> list[str]:
        return [lst["name"] for lst in account.call("GET", "lists").json()["lists"]]

    assert names(crm) == ["Master Contact List"]
    assert crm.admin("PUT", "master-list", {"name": "Newsletter"}).status_code == 200
    assert names(crm) == ["Newsletter"]
    assert crm.call("GET", "lists", **{"filters[name]": "Master Contact List"}).json()["lists"] == []
    contact = crm.call("POST", "contact/sync", {"contact": {"email": "a@example.com"}}).json()["contact"]["id"]
    crm.call("POST", "contactLists", {"contactList": {"list": "1", "contact": contact, "status": 1}})
    assert crm.admin("DELETE", "master-list").status_code == 204
    assert names(crm) == [] and crm.state()["contactLists"] == []
    assert crm.call("POST", "contactLists", {"contactList": {"list": "1", "contact": contact,
                                                             "status": 1}}).status_code == 404
    assert names(start(master_list=False)) == []
    assert names(start(master_list_name="All contacts")) == ["All contacts"]


# -- paging -----------------------------------------------------------------------

def test_paging_by_limit_and_offset_with_a_string_total(crm):
    for n in range(105):
        assert crm.call("POST", "contact/sync", {"contact": {"email": f"c{n}@example.com"}}).ok
    default = crm.call("GET", "contacts").json()
    assert len(default["contacts"]) == 20 and default["meta"]["total"] == "105"
    capped = crm.call("GET", "contacts", limit=500).json()
    assert len(capped["contacts"]) == 100
    last = crm.call("GET", "contacts", limit=100, offset=100).json()
    assert [c["email"] for c in last["contacts"]] == [f"c{n}@example.com" for n in range(100, 105)]
    assert crm.call("GET", "contacts", offset=200).json()["contacts"] == []


# -- rate limit -------------------------------------------------------------------

def test_a_burst_over_five_per_second_gets_429_with_retry_after(start):  # B10
    crm = start(enforce_rate_limit=True)
    answers = [crm.call("GET", "lists") for _ in range(8)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    refused = [a for a in answers[5:] if a.status_code == 429]
    assert refused, [a.status_code for a in answers]
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    time.sleep(1.05)
    assert crm.call("GET", "lists").status_code == 200


def test_a_client_pacing_at_five_per_second_is_never_refused(start):
    crm = start(enforce_rate_limit=True)
    statuses = []
    for _ in range(12):
        # 0.2 s after each answer: any six consecutive requests arrive at least one second apart.
        statuses.append(crm.call("GET", "lists").status_code)
        time.sleep(0.2)
    assert statuses == [200] * 12


def test_the_rate_is_an_option_and_can_be_switched_off(start):
    fast = start(enforce_rate_limit=True, requests_per_second=50)
    assert all(fast.call("GET", "lists").status_code == 200 for _ in range(20))
    off = start()
    assert all(off.call("GET", "lists").status_code == 200 for _ in range(30))
    assert off.admin("PUT", "rate-limit", {"requests_per_second": 2, "enforce": True}).status_code == 200
    assert [off.call("GET", "lists").status_code for _ in range(3)] == [200, 200, 429]
    assert off.admin("GET", "state").status_code == 200  # admin calls never count


# -- automation log and duplicates --------------------------------------------------

def test_the_write_log_names_the_automation_each_order_write_fires(crm):  # B9, S8
    connection = crm.connection()
    customer = crm.customer(connection)
    crm.call("POST", "ecomOrders", order_payload(connection, customer, "1", source=1))
    crm.call("POST", "ecomOrders", order_payload(connection, customer, "2", source=0))
    crm.call("POST", "ecomOrders", cart_payload(connection, customer, "chk-1", source=1))
    historical_cart = crm.call("POST", "ecomOrders", cart_payload(connection, customer, "chk-2", source=0))
    recovered = crm.call("PUT", f"ecomOrders/{historical_cart.json()['ecomOrder']['id']}",
                         {"ecomOrder": {"externalid": "3", "source": 1}})
    assert recovered.status_code == 200 and recovered.json()["ecomOrder"]["externalid"] == "3"
    order_writes = [w for w in crm.writes() if w["object_type"] == "ecomOrder"]
    assert [w["automation"] for w in order_writes] == ["makes_a_purchase", None, "abandoned_cart", None,
                                                       "makes_a_purchase"]
    assert order_writes[0]["payload"]["ecomOrder"]["externalid"] == "1"
    assert [w["seq"] for w in crm.writes()] == list(range(1, len(crm.writes()) + 1))
    assert {w["automation"] for w in crm.writes() if w["object_type"] != "ecomOrder"} == {None}
    assert crm.admin("GET", "writes?since=3").json()["writes"][0]["seq"] == 4


def automations(crm: Crm) -> list[tuple[str, str]]:
    return [(a["trigger"], a["key"]) for a in crm.admin("GET", "automations").json()["automations"]]


def test_an_order_update_with_source_1_fires_again_and_source_0_never(crm):  # B9 S8 S10
    # api-specs README "Automations start on more than orders": undocumented, so the inconvenient reading.
    connection = crm.connection()
    customer = crm.customer(connection)
    order = crm.call("POST", "ecomOrders", order_payload(connection, customer, "1", source=1)).json()["ecomOrder"]
    crm.call("PUT", f"ecomOrders/{order['id']}", {"ecomOrder": {"orderNumber": "1-b", "source": 1}})
    crm.call("PUT", f"ecomOrders/{order['id']}", {"ecomOrder": {"orderNumber": "1-c", "source": 0}})
    cart = crm.call("POST", "ecomOrders", cart_payload(connection, customer, "chk-9", source=1)).json()["ecomOrder"]
    crm.call("PUT", f"ecomOrders/{cart['id']}", {"ecomOrder": {"shippingMethod": "DHL", "source": 1}})
    key = "bigcommerce:store-1|"
    assert automations(crm) == [("makes_a_purchase", key + "1"), ("makes_a_purchase", key + "1"),
                                ("abandoned_cart", key + "chk-9"), ("abandoned_cart", key + "chk-9")]
    writes = [w for w in crm.writes() if w["object_type"] == "ecomOrder"]
    assert [len(w["automations"]) for w in writes] == [1, 1, 0, 1, 1]
    assert writes[0]["automations"] == [{"trigger": "makes_a_purchase", "object_type": "ecomOrder",
                                         "object_id": order["id"]}]


def test_adding_a_tag_and_subscribing_to_a_list_are_triggers_once_each(crm):  # B3 B9
    contact = crm.call("POST", "contact/sync", {"contact": {"email": "Anna@Example.com"}}).json()["contact"]["id"]
    tag = crm.call("POST", "tags", {"tag": {"tag": "bigcommerce-customer", "tagType": "contact"}}).json()["tag"]["id"]
    for _ in range(2):  # the second add finds the existing link: no tag is added, nothing starts
        assert crm.call("POST", "contactTags", {"contactTag": {"contact": contact, "tag": tag}}).status_code == 201
    for status in (1, 1, 2, 1):  # subscribe, again (no change), unsubscribe, re-subscribe
        crm.call("POST", "contactLists", {"contactList": {"list": 1, "contact": contact, "status": status}})
    assert automations(crm) == [("tag_added", "anna@example.com|bigcommerce-customer"),
                                ("subscribed_to_list", "anna@example.com|list:1"),
                                ("subscribed_to_list", "anna@example.com|list:1")]
    assert crm.admin("GET", "automations?since=1").json()["counts"] == {"subscribed_to_list": 2}
    assert [w["automation"] for w in crm.writes() if w["object_type"] == "contact"] == [None]


@pytest.mark.parametrize("where", ["request", "contact"])
def test_a_bulk_import_fires_tag_and_list_automations_unless_it_excludes_them(crm, spec, where):  # B9 S8
    def batch(n: int, exclude: bool | None) -> dict:
        contacts = [{"email": f"c{n}-{i}@example.com", "tags": ["square-customer"], "subscribe": [{"listid": 1}]}
                    for i in range(2)]
        if exclude is not None and where == "contact":
            for contact in contacts:
                contact["exclude_automations"] = exclude
        body = {"contacts": contacts}
        if exclude is not None and where == "request":
            body["exclude_automations"] = exclude
        return body

    for n, exclude in enumerate((True, None, False)):
        queued = conforms(spec, crm.call("POST", "import/bulk_import", batch(n, exclude)))
        for _ in range(3):
            crm.call("GET", "import/info", batchId=queued["batchId"])
    fired = automations(crm)
    assert sorted(fired) == sorted([(trigger, f"c{n}-{i}@example.com|{what}") for n in (1, 2) for i in range(2)
                                    for trigger, what in (("tag_added", "square-customer"),
                                                          ("subscribed_to_list", "list:1"))])
    imports = [w for w in crm.writes() if w["object_type"] == "import"]
    assert [len(w["automations"]) for w in imports] == [0, 4, 4]
    assert crm.state()["contactLists"] and len(crm.state()["contactTags"]) == 6  # applied either way


def test_two_posts_of_the_same_order_are_one_duplicate(crm):  # S6
    connection = crm.connection()
    customer = crm.customer(connection)
    for _ in range(2):
        assert crm.call("POST", "ecomOrders", order_payload(connection, customer, "1001")).status_code == 201
    assert crm.duplicates() == {"connections": 0, "ecomCustomers": 0, "ecomOrders": 1, "contacts": 0,
                                "contactTags": 0, "contactLists": 0}
    crm.call("POST", "ecomOrders", cart_payload(connection, customer, "chk-1"))
    crm.call("POST", "ecomOrders", cart_payload(connection, customer, "chk-1"))
    crm.customer(connection)
    assert crm.duplicates()["ecomOrders"] == 2 and crm.duplicates()["ecomCustomers"] == 1


def test_a_lost_response_then_blind_retry_leaves_a_detectable_duplicate(start):  # S6, B10
    crm = start(faults=FaultPlan(after_n=1, kinds=["lost_response"], methods=["POST"], path_prefix="/api/3/ecomOrders"))
    connection = crm.connection()
    customer = crm.customer(connection)
    with pytest.raises(requests.exceptions.ConnectionError):
        crm.call("POST", "ecomOrders", order_payload(connection, customer, "1001"))
    assert crm.call("POST", "ecomOrders", order_payload(connection, customer, "1001")).status_code == 201
    assert crm.duplicates()["ecomOrders"] == 1
    found = crm.call("GET", "ecomOrders", **{"filters[externalid]": "1001", "filters[connectionid]": connection})
    assert found.json()["meta"]["total"] == "2"


# -- bulk import --------------------------------------------------------------------

def test_bulk_import_is_queued_then_reports_each_contact(crm, spec):  # B3, B7
    contacts = [{"email": "anna@example.com", "first_name": "Anna", "last_name": "Müller", "phone": "+49 30 1",
                 "tags": ["bigcommerce-customer"], "subscribe": [{"listid": 1}]},
                {"email": "invalid.email@invalidDomain", "first_name": "X", "tags": ["bigcommerce-customer"]},
                {"email": "BOB@example.com", "tags": ["square-customer", "bigcommerce-customer"]}]
    queued = conforms(spec, crm.call("POST", "import/bulk_import", {"contacts": contacts}))
    assert queued["queued_contacts"] == 3
    first_poll = conforms(spec, crm.call("GET", "import/info", batchId=queued["batchId"]))
    assert first_poll == {"batchId": queued["batchId"], "status": "queued", "success": [], "failure": []}
    done = crm.call("GET", "import/info", batchId=queued["batchId"]).json()
    assert done["status"] == "completed" and done["failure"] == ["invalid.email@invalidDomain"]
    state = crm.state()
    by_id = {c["id"]: c for c in state["contacts"]}
    assert sorted(by_id[i]["email"] for i in done["success"]) == ["BOB@example.com", "anna@example.com"]
    tags = {t["id"]: t["tag"] for t in state["tags"]}
    assert sorted((by_id[ct["contact"]]["email"], tags[ct["tag"]]) for ct in state["contactTags"]) == [
        ("BOB@example.com", "bigcommerce-customer"), ("BOB@example.com", "square-customer"),
        ("anna@example.com", "bigcommerce-customer")]
    assert [(by_id[cl["contact"]]["email"], cl["list"], cl["status"]) for cl in state["contactLists"]] == [
        ("anna@example.com", "1", "1")]
    assert state["imports"][0]["status"] == "completed"
    again = crm.call("POST", "import/bulk_import", {"contacts": [{"email": "anna@example.com", "last_name": "Weiß"}]})
    for _ in range(3):
        crm.call("GET", "import/info", batchId=again.json()["batchId"])
    assert crm.duplicates()["contacts"] == 0
    assert [c["lastName"] for c in crm.state()["contacts"] if c["email"] == "anna@example.com"] == ["Weiß"]


def test_bulk_import_refuses_oversized_or_invalid_requests(crm):
    too_many = crm.call("POST", "import/bulk_import", {"contacts": [{"email": f"c{n}@example.com"}
                                                                    for n in range(251)]})
    assert too_many.status_code == 400 and too_many.json()["success"] == 0
    big = [{"email": f"c{n}@example.com", "first_name": "x" * 2000} for n in range(250)]
    assert crm.call("POST", "import/bulk_import", {"contacts": big}).status_code == 400
    missing = crm.call("POST", "import/bulk_import", {"contacts": [{"email": "a@example.com"}, {"first_name": "B"}]})
    assert missing.status_code == 400
    assert missing.json()["failureReasons"] == [{"contact": 1, "failureReason": "Field 'email' is required"}]
    assert crm.call("GET", "import/info").json() == {"success": 0, "message": "'batchId' is a required field."}
    assert crm.call("GET", "import/info", batchId="nope").status_code == 400
    assert crm.state()["imports"] == [] and crm.writes() == []


# -- admin controls -------------------------------------------------------------------

def test_an_email_can_be_made_to_answer_422(crm):
    assert crm.admin("PUT", "rejected-emails", {"emails": ["Bad@Example.com"]}).status_code == 200
    assert_error(crm.call("POST", "contact/sync", {"contact": {"email": "bad@example.com"}}), 422, "email_invalid",
                 "email")
    connection = crm.connection()
    answer = crm.call("POST", "ecomCustomers", {"ecomCustomer": {"connectionid": connection, "externalid": "1",
                                                                 "email": "bad@example.com"}})
    assert_error(answer, 422, "email_invalid", "email")
    assert crm.call("POST", "contact/sync", {"contact": {"email": "good@example.com"}}).status_code == 201


def test_reset_forgets_everything(crm):
    crm.connection()
    crm.call("POST", "contact/sync", {"contact": {"email": "a@example.com"}})
    assert crm.admin("POST", "reset").status_code == 204
    state = crm.state()
    assert [lst["name"] for lst in state.pop("lists")] == ["Master Contact List"]
    assert all(rows == [] for rows in state.values()), state
    assert crm.writes() == []


def test_the_cli_dumps_state_duplicates_and_writes(crm):
    connection = crm.connection()
    customer = crm.customer(connection)
    for _ in range(2):
        crm.call("POST", "ecomOrders", order_payload(connection, customer, "1001"))
    done = subprocess.run([sys.executable, "-m", "sandbox", "crm-dump", "--url", crm.url, "--duplicates", "--writes",
                           "--automations"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    dump = json.loads(done.stdout)
    assert [o["externalid"] for o in dump["state"]["ecomOrders"]] == ["1001", "1001"]
    assert dump["duplicates"]["ecomOrders"] == 1
    assert [w["object_type"] for w in dump["writes"]] == ["connection", "ecomCustomer", "ecomOrder", "ecomOrder"]
    assert dump["automations"]["counts"] == {"makes_a_purchase": 2}
    assert [a["write_seq"] for a in dump["automations"]["automations"]] == [3, 4]
    plain = subprocess.run([sys.executable, "-m", "sandbox", "crm-dump", "--url", crm.url],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert set(json.loads(plain.stdout)) == {"state"}
