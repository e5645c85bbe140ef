"""The CRM load against the ActiveCampaign sandbox and a real Postgres whose crm marts come from a real dbt run.

The marts are built once per module from the hand-checked raw fixture (tests/integration/dbt); each test
gets a copy of that database (``create database … template``) and its own sandbox on a loopback port.
Tests that need other mart contents change the copy's crm tables the way a later dbt run would.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
import requests
from psycopg2 import sql
from psycopg2.extras import RealDictCursor

from ecomsync import tasks
from ecomsync.config import CrmSettings, load_config
from ecomsync.crm import payloads
from ecomsync.crm.activecampaign import ActiveCampaignClient
from ecomsync.crm.ledger import LoadAlreadyRunning, SyncStore
from ecomsync.crm.push import run_push
from ecomsync.crm.report import RunReport
from ecomsync.dbt import run_dbt
from ecomsync.http import ApiError
from sandbox.activecampaign import create_app
from sandbox.core import serve
from tests.integration.dbt.raw_warehouse_fixture import (
    LOCATION,
    STORE_A,
    STORE_B,
    create_warehouse_tables,
    land_hand_checked_fixture,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "sandbox-ac-token"
NOW = datetime.now(UTC)
ALL = frozenset({STORE_A, STORE_B, LOCATION})
SETTINGS = CrmSettings(conn_id="activecampaign_default", requests_per_second=5, account_created_on=date(2024, 3, 1),
                       master_list_cutoff=date(2024, 1, 8), master_list_name="Master Contact List",
                       bigcommerce_tag="bigcommerce-customer", square_tag="square-customer",
                       bulk_import_threshold=100, realtime_window_hours=24)
BC, SQ = "bigcommerce-customer", "square-customer"
LIST = "Master Contact List"
# What the first push of the hand-checked marts must leave in the CRM.
EXPECTED = {
    "connections": {STORE_A, STORE_B, LOCATION},
    "contacts": {"ada@example.com", "dan@example.com", "eve@example.com"},
    "contactTags": {("ada@example.com", BC), ("ada@example.com", SQ), ("dan@example.com", BC),
                    ("eve@example.com", SQ)},
    # B7: every contact opted in somewhere (ada in store A, dan as subscriber, eve in Square)
    "contactLists": {("ada@example.com", LIST, "1"), ("dan@example.com", LIST, "1"), ("eve@example.com", LIST, "1")},
    # B6: accepts marketing lives on the e-commerce customer
    "ecomCustomers": {(STORE_A, "11", "ada@example.com", "1"), (STORE_A, "14", "dan@example.com", "1"),
                      (STORE_B, "11", "ada@example.com", "0"), (LOCATION, "SQC1", "ada@example.com", "0"),
                      (LOCATION, "SQC2", "eve@example.com", "1")},
    # (connection, externalid, externalcheckoutid, source); order 2001 has no line items: the CRM refuses it
    "ecomOrders": {(STORE_A, "1001", None, "1"), (STORE_A, "1005", None, "1"), (LOCATION, "PAY1", None, "1"),
                   (LOCATION, "PAY3", None, "1"), (STORE_A, None, "1003", "1")},
}
NO_DUPLICATES = {"connections": 0, "ecomCustomers": 0, "ecomOrders": 0, "contacts": 0, "contactTags": 0,
                 "contactLists": 0}
# connections; dan (no live order: history) bulk-imported with his tag and subscription, no automation; ada and
# eve (new live orders) synced one by one, tagged and subscribed the way the native integration does (B3);
# the square tag; their 3 tag links and 2 subscriptions; customers; orders; cart
FIRST_PUSH_WRITES = 3 + 1 + 2 + 1 + 3 + 2 + 5 + 4 + 1
PHASE = {"connection": 0, "import": 1, "contact": 1, "tag": 2, "contactTag": 2, "contactList": 2, "ecomCustomer": 3,
         "ecomOrder": 4}


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def marts_template(local_pg, tmp_path_factory):
    name = f"test_crm_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    create_warehouse_tables(url)
    land_hand_checked_fixture(url, NOW)
    # The extract registers every location with its dashboard link (tasks.extract_location); the CRM
    # refuses a connection without a linkUrl.
    execute(url, "update state.connections set link_url = %s where connection_id = %s",
            ("https://app.squareup.com/dashboard/locations/LOC1", LOCATION))
    # `run`, not `build`: the marts' own tests live in tests/integration/dbt.
    run_dbt(["run", "--select", "+models/marts/crm"], url, target_path=tmp_path_factory.mktemp("dbt_target"))
    # The dbt contract's is_purchase (branch dbt); until the marts have it, every fixture order is a purchase.
    execute(url, "alter table crm.ecom_orders add column if not exists is_purchase boolean not null default true")
    yield name
    local_pg.drop_database(name)


@pytest.fixture
def warehouse(local_pg, marts_template):
    name = f"test_crm_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(local_pg.url("postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (marts_template,))
            cur.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name),
                                                                         sql.Identifier(marts_template)))
    finally:
        admin.close()
    yield local_pg.url(name)
    local_pg.drop_database(name)


class Crm:
    """One ActiveCampaign sandbox account on a loopback port, and its admin endpoints."""

    def __init__(self, **options):
        self.app = create_app(**options)
        self.server, _ = serve(self.app)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def admin(self, method: str, path: str, body=None):
        response = requests.request(method, f"{self.url}{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def client(self, requests_per_second: float = 50) -> ActiveCampaignClient:
        return ActiveCampaignClient(self.url, TOKEN, requests_per_second=requests_per_second)

    def state(self) -> dict:
        return self.admin("GET", "/__admin/activecampaign/state")

    def writes(self, since: int = 0) -> list[dict]:
        return self.admin("GET", f"/__admin/activecampaign/writes?since={since}")["writes"]

    def automations(self, since: int = 0) -> list[dict]:
        return self.admin("GET", f"/__admin/activecampaign/automations?since={since}")["automations"]

    def fired(self, since: int = 0) -> list[tuple[str, str]]:
        """(trigger, natural key) of every automation the CRM started, in order."""
        return [(entry["trigger"], entry["key"]) for entry in self.automations(since)]

    def duplicates(self) -> dict:
        return self.admin("GET", "/__admin/activecampaign/duplicates")

    def request_log(self) -> list[dict]:
        return self.admin("GET", "/__admin/requests")["requests"]

    def inventory(self) -> dict[str, set]:
        """The account's objects by natural key (our connection ids instead of CRM ids)."""
        state = self.state()
        connections = {c["id"]: f"{c['service']}:{c['externalid']}" for c in state["connections"]}
        contacts = {c["id"]: c["email"] for c in state["contacts"]}
        tags = {t["id"]: t["tag"] for t in state["tags"]}
        lists = {lst["id"]: lst["name"] for lst in state["lists"]}
        return {
            "connections": set(connections.values()),
            "contacts": set(contacts.values()),
            "contactTags": {(contacts[ct["contact"]], tags[ct["tag"]]) for ct in state["contactTags"]},
            "contactLists": {(contacts[cl["contact"]], lists[cl["list"]], cl["status"])
                             for cl in state["contactLists"]},
            "ecomCustomers": {(connections[c["connectionid"]], c["externalid"], c["email"], c["acceptsMarketing"])
                              for c in state["ecomCustomers"]},
            "ecomOrders": {(connections[o["connectionid"]], o["externalid"], o["externalcheckoutid"], o["source"])
                           for o in state["ecomOrders"]},
        }


@pytest.fixture
def crm():
    account = Crm(enforce_rate_limit=False)
    yield account
    account.close()


# -- helpers -----------------------------------------------------------------------------------
def add_live_order(url: str, email: str, external_id: str, like: str = f"{STORE_A}|1001") -> str:
    """A new order of ``email`` placed just now, landed by an incremental run (a copy of order ``like``)."""
    key = f"{like.split('|')[0]}|{external_id}"
    execute(url, """
        insert into crm.ecom_orders
        select (jsonb_populate_record(o, jsonb_build_object(
            'order_key', %s, 'external_id', %s, 'order_number', %s, 'email', %s, 'sync_mode', 'incremental',
            'external_created_at', now(), 'external_updated_at', now(), 'landed_at', now()))).*
        from crm.ecom_orders o where order_key = %s""", (key, external_id, external_id, email, like))
    return key


def execute(url: str, statement: str, params: tuple = ()) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
    conn.close()


def query(url: str, statement: str, params: tuple = ()) -> list[dict]:
    with psycopg2.connect(url) as conn, conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(statement, params)
        rows = [dict(row) for row in cur.fetchall()]
    conn.close()
    return rows


def push(warehouse: str, crm: Crm, *, mode: str = "normal", enabled=ALL, settings: CrmSettings = SETTINGS,
         retry_rejected: bool = False, requests_per_second: float = 50):
    return run_push(warehouse, crm.client(requests_per_second), settings, run_id=f"run-{uuid.uuid4().hex[:8]}",
                    mode=mode, enabled_connections=set(enabled), retry_rejected=retry_rejected)


def orders_by_key(crm: Crm) -> dict[str, dict]:
    state = crm.state()
    connections = {c["id"]: f"{c['service']}:{c['externalid']}" for c in state["connections"]}
    return {f"{connections[o['connectionid']]}|{o['externalid'] or o['externalcheckoutid']}": o
            for o in state["ecomOrders"]}


def without_source(inventory: dict[str, set]) -> dict[str, set]:
    """The inventory without the orders' stored ``source``: an update sends 0, so it says which write came last."""
    return {**inventory, "ecomOrders": {order[:3] for order in inventory["ecomOrders"]}}


def assert_complete_and_unique(crm: Crm) -> None:
    assert without_source(crm.inventory()) == without_source(EXPECTED)
    assert crm.duplicates() == NO_DUPLICATES


# -- tests -------------------------------------------------------------------------------------
def test_first_push_creates_everything_in_dependency_order(warehouse, crm):  # B3 S10 B6 B7 B12 S7 P4
    report = push(warehouse, crm)

    assert_complete_and_unique(crm)
    writes = crm.writes()
    assert len(writes) == FIRST_PUSH_WRITES
    phases = [PHASE[w["object_type"]] for w in writes]
    assert phases == sorted(phases), [w["object_type"] for w in writes]
    order = next(w["payload"]["ecomOrder"] for w in writes if w["object_type"] == "ecomOrder"
                 and w["payload"]["ecomOrder"].get("externalid") == "1001")
    assert (order["totalPrice"], order["shippingAmount"], order["taxAmount"], order["discountAmount"]) == (
        33632, 1999, 10, 520)
    assert order["externalCreatedDate"] == "2018-01-11T02:35:30Z" and order["source"] == 1
    assert "sync_mode" not in order and "landed_at" not in order

    assert sorted(crm.fired()) == sorted([
        ("tag_added", f"ada@example.com|{BC}"), ("tag_added", f"ada@example.com|{SQ}"),
        ("tag_added", f"eve@example.com|{SQ}"), ("subscribed_to_list", "ada@example.com|list:1"),
        ("subscribed_to_list", "eve@example.com|list:1"), ("makes_a_purchase", f"{STORE_A}|1001"),
        ("makes_a_purchase", f"{STORE_A}|1005"), ("makes_a_purchase", f"{LOCATION}|PAY1"),
        ("makes_a_purchase", f"{LOCATION}|PAY3"), ("abandoned_cart", f"{STORE_A}|1003")])
    [dan] = [w for w in writes if w["object_type"] == "import"]
    assert dan["payload"]["contacts"][0]["exclude_automations"] is True and dan["automations"] == []
    assert report.automations == {"tag_added": 3, "subscribed_to_list": 2, "makes_a_purchase": 4,
                                  "abandoned_cart": 1}
    counts = report.counts
    assert counts["connection"]["created"] == 3 and counts["contact"]["created"] == 3
    assert counts["contact_tag"]["created"] == 4 and counts["list_membership"]["created"] == 3
    assert counts["ecom_customer"]["created"] == 5
    assert (counts["ecom_order"]["created"], counts["ecom_order"]["rejected"]) == (4, 1)
    assert counts["abandoned_cart"]["created"] == 1
    # every object pushed has its CRM id in the ledger
    ledger = query(warehouse, "select object_type, natural_key, crm_id, status from sync.ledger")
    # every object pushed has its CRM id in the ledger, but what import/bulk_import wrote (it answers no ids)
    bulk_imported = {("contact", "dan@example.com"), ("contact_tag", f"dan@example.com|{BC}"),
                     ("list_membership", "dan@example.com")}
    assert {(r["object_type"], r["natural_key"]) for r in ledger if not r["crm_id"]} == bulk_imported
    assert {row["status"] for row in ledger} == {"synced"}
    assert len([r for r in ledger if r["object_type"] == "ecom_order"]) == 4
    [rejection] = query(warehouse, "select * from sync.rejections")
    assert (rejection["natural_key"], rejection["http_status"], rejection["error_code"]) == (
        f"{STORE_B}|2001", 422, "field_missing")
    [row] = query(warehouse, "select run_id, mode, status, counts, requests, warnings, automations "
                             "from sync.run_reports")
    assert (row["run_id"], row["mode"], row["status"], row["counts"]) == (report.run_id, "normal", "success", counts)
    assert row["automations"] == report.automations
    assert row["requests"] == report.requests == len(crm.request_log())
    # The connections are new in this run: nothing can belong to them yet, so no look-up precedes the
    # creates of their customers, orders and carts — one request per created order.
    assert [r for r in crm.request_log() if r["method"] == "GET"
            and r["path"] in ("/api/3/ecomCustomers", "/api/3/ecomOrders")] == []
    assert json.loads(json.dumps(report.as_dict())) == report.as_dict()
    assert TOKEN not in json.dumps(report.as_dict())


def test_objects_of_a_connection_already_in_the_crm_are_looked_up_before_any_create(warehouse, crm):  # S6 B11
    push(warehouse, crm)
    execute(warehouse, "delete from sync.ledger")  # e.g. a new warehouse pointed at the same CRM account
    log_before = len(crm.request_log())

    report = push(warehouse, crm)

    for object_type in ("connection", "ecom_customer", "ecom_order", "abandoned_cart"):
        assert report.counts[object_type]["created"] == 0, object_type
    assert report.counts["ecom_order"]["updated"] == 4
    looked_up = {r["path"] for r in crm.request_log()[log_before:] if r["method"] == "GET"}
    assert {"/api/3/connections", "/api/3/ecomCustomers", "/api/3/ecomOrders"} <= looked_up
    assert_complete_and_unique(crm)


def test_second_push_without_changes_makes_zero_writes(warehouse, crm):  # P4
    push(warehouse, crm)
    log_before, writes_before = len(crm.request_log()), len(crm.writes())

    report = push(warehouse, crm)

    assert len(crm.writes()) == writes_before
    assert {r["method"] for r in crm.request_log()[log_before:]} == {"GET"}  # only the master-list look-up
    assert report.writes == 0 and report.requests == 1
    assert all(c["created"] == c["updated"] == 0 for c in report.counts.values())
    assert report.counts["ecom_order"]["unchanged"] == 4
    assert report.counts["ecom_order"]["skipped"] == 1  # 2001: rejected before, payload unchanged


def test_changed_order_status_is_pushed_as_an_update(warehouse, crm):  # B4 P4
    push(warehouse, crm)
    order_id = orders_by_key(crm)[f"{STORE_A}|1001"]["id"]
    since = len(crm.writes())
    execute(warehouse, "update crm.ecom_orders set status = 'Refunded', external_updated_at = %s "
                       "where order_key = %s", (NOW, f"{STORE_A}|1001"))

    report = push(warehouse, crm)

    [write] = crm.writes(since)
    assert (write["method"], write["path"], write["object_type"]) == ("PUT", f"/api/3/ecomOrders/{order_id}",
                                                                      "ecomOrder")
    assert report.counts["ecom_order"] == {"created": 0, "updated": 1, "unchanged": 3, "rejected": 0, "skipped": 1,
                                           "removed": 0}
    assert crm.duplicates() == NO_DUPLICATES


def test_historical_sync_sends_source_0_and_fires_nothing(warehouse, crm):  # B9
    execute(warehouse, "update crm.ecom_orders set sync_mode = 'historical'")
    execute(warehouse, "update crm.abandoned_carts set sync_mode = 'historical'")

    push(warehouse, crm)

    orders = crm.inventory()["ecomOrders"]
    assert len(orders) == 5 and {source for *_, source in orders} == {"0"}
    assert [w for w in crm.writes() if w["automation"]] == []
    assert crm.fired() == []  # no tag, no subscription, no order, no cart started anything
    assert crm.duplicates() == NO_DUPLICATES


def test_square_historical_restart_fires_only_recent_orders(warehouse, crm):  # S8 B9
    execute(warehouse, "update crm.ecom_orders set sync_mode = 'historical'")
    recent, old = NOW - timedelta(hours=2), NOW - timedelta(hours=30)
    for key, placed in ((f"{LOCATION}|PAY1", recent), (f"{LOCATION}|PAY3", old), (f"{STORE_A}|1001", recent)):
        execute(warehouse, "update crm.ecom_orders set external_created_at = %s where order_key = %s", (placed, key))

    push(warehouse, crm)

    orders = orders_by_key(crm)
    assert orders[f"{LOCATION}|PAY1"]["source"] == "1"
    assert orders[f"{LOCATION}|PAY3"]["source"] == "0"
    assert orders[f"{STORE_A}|1001"]["source"] == "0"  # a BigCommerce historical sync never fires
    fired = {w["payload"]["ecomOrder"].get("externalid") for w in crm.writes() if w["automation"] == "makes_a_purchase"}
    assert fired == {"PAY1"}

    # the same order, later inside a wider window: already in the CRM, so its update fires nothing
    wider = dataclasses.replace(SETTINGS, realtime_window_hours=48)
    execute(warehouse, "update crm.ecom_orders set order_number = 'R-3b' where order_key = %s", (f"{LOCATION}|PAY3",))
    since = len(crm.automations())
    push(warehouse, crm, settings=wider)
    assert orders_by_key(crm)[f"{LOCATION}|PAY3"]["source"] == "0"
    assert crm.fired(since) == []


def test_master_list_rule_and_missing_list(warehouse, crm):  # B7
    before_cutoff = dataclasses.replace(SETTINGS, account_created_on=date(2023, 12, 1))
    report = push(warehouse, crm, settings=before_cutoff)
    assert crm.inventory()["contactLists"] == set()
    assert "list_membership" not in report.counts and report.warnings == []

    crm.admin("DELETE", "/__admin/activecampaign/master-list")
    report = push(warehouse, crm)

    assert crm.inventory()["contactLists"] == set()
    assert report.counts["list_membership"]["skipped"] == 3
    [warning] = [w for w in report.warnings if "master list" in w]
    assert "'Master Contact List' not found" in warning and "no contact was subscribed" in warning
    [stored] = query(warehouse, "select warnings from sync.run_reports where run_id = %s", (report.run_id,))
    assert warning in stored["warnings"]

    crm.admin("PUT", "/__admin/activecampaign/master-list", {"name": LIST})
    report = push(warehouse, crm)
    assert crm.inventory()["contactLists"] == EXPECTED["contactLists"]
    assert report.counts["list_membership"]["created"] == 3
    assert not [w for w in report.warnings if "master list" in w]


def test_rejected_record_is_recorded_the_run_goes_on_and_it_is_retried(warehouse, crm):  # P4 B10
    crm.admin("PUT", "/__admin/activecampaign/rejected-emails", {"emails": ["eve@example.com"]})

    report = push(warehouse, crm)

    rejections = {r["natural_key"]: r for r in query(warehouse, "select * from sync.rejections")}
    eve = rejections["eve@example.com"]
    assert (eve["object_type"], eve["http_status"], eve["error_code"]) == ("contact", 422, "email_invalid")
    assert eve["error"]["errors"][0]["code"] == "email_invalid"
    assert report.counts["contact"] == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 1, "skipped": 0,
                                        "removed": 0}
    # the run went on: everyone else is in the CRM
    inventory = crm.inventory()
    assert inventory["contacts"] == {"ada@example.com", "dan@example.com"}
    assert inventory["ecomOrders"] >= {(STORE_A, "1001", None, "1"), (LOCATION, "PAY3", None, "1")}
    assert f"{LOCATION}|SQC2" in rejections  # eve's e-commerce customer carries the same email
    assert any("ecom_order record(s) skipped: their customer has no CRM id" in w for w in report.warnings)

    # unchanged payload: not sent again …
    since = len(crm.request_log())
    report = push(warehouse, crm)
    assert not [r for r in crm.request_log()[since:] if r["method"] == "POST" and "eve" in json.dumps(r["body"])]
    assert report.counts["contact"]["skipped"] == 1
    # … unless asked
    report = push(warehouse, crm, retry_rejected=True)
    assert report.counts["contact"]["rejected"] == 1
    assert query(warehouse, "select attempts from sync.rejections where natural_key = 'eve@example.com'") == [
        {"attempts": 2}]

    # a changed payload is retried; accepted, its rejection is cleared and the rest follows
    crm.admin("PUT", "/__admin/activecampaign/rejected-emails", {"emails": []})
    execute(warehouse, "update crm.contacts set first_name = 'Evelyn' where email = 'eve@example.com'")
    report = push(warehouse, crm, retry_rejected=True)
    assert report.counts["contact"]["created"] == 1
    assert query(warehouse, "select natural_key from sync.rejections order by 1") == [
        {"natural_key": f"{STORE_B}|2001"}]
    assert_complete_and_unique(crm)


def test_dry_run_writes_nothing_and_returns_the_plan(warehouse, crm):
    report = push(warehouse, crm, mode="dry_run")

    assert crm.writes() == []
    assert {r["method"] for r in crm.request_log()} == {"GET"}
    plan = report.as_dict()["plan"]
    # what the real run will start (test above) — and order 2001, which the CRM will refuse
    assert report.automations == {"tag_added": 3, "subscribed_to_list": 2, "makes_a_purchase": 5,
                                  "abandoned_cart": 1}
    assert "@example.com" in json.dumps(report.plan)
    assert not [email for email in EXPECTED["contacts"] if email in json.dumps(report.as_dict())]
    assert {t: (p["create"], p["update"]) for t, p in plan.items()} == {
        "connection": (3, 0), "contact": (3, 0), "contact_tag": (4, 0), "list_membership": (3, 0),
        "ecom_customer": (5, 0), "ecom_order": (5, 0), "abandoned_cart": (1, 0)}
    sample = plan["ecom_order"]["samples"][0]
    assert sample["action"] == "create" and sample["source"] == 1 and sample["payload"]["orderProducts"]
    assert report.writes == 0
    [stored] = query(warehouse, "select mode, plan, counts, automations from sync.run_reports")
    assert stored["mode"] == "dry_run" and stored["plan"] == json.loads(json.dumps(report.plan))
    assert stored["automations"] == report.automations
    assert query(warehouse, "select count(*) as n from sync.ledger") == [{"n": 0}]

    push(warehouse, crm)
    execute(warehouse, "update crm.ecom_orders set status = 'Shipped' where order_key = %s", (f"{STORE_A}|1005",))
    since = len(crm.writes())
    report = push(warehouse, crm, mode="dry_run")
    assert crm.writes(since) == []
    assert (report.plan["ecom_order"]["update"], report.plan["ecom_order"]["unchanged"]) == (1, 3)
    assert report.plan["ecom_order"]["samples"][0]["key"] == f"{STORE_A}|1005"


def test_full_resync_reupserts_everything_without_duplicates(warehouse, crm):  # S6
    push(warehouse, crm)
    since = len(crm.writes())

    report = push(warehouse, crm, mode="full_resync")

    writes = crm.writes(since)
    creates = [w for w in writes if w["method"] == "POST" and w["object_type"] in ("connection", "ecomCustomer",
                                                                                   "ecomOrder", "tag")]
    assert creates == []
    assert sum(1 for w in writes if w["method"] == "PUT") == 3 + 5 + 5  # connections, customers, orders + cart
    assert report.counts["ecom_order"]["updated"] == 4 and report.counts["contact"]["updated"] == 3
    assert_complete_and_unique(crm)


def test_disabled_connection_is_skipped_and_nothing_is_deleted(warehouse, crm):  # B11 S9
    push(warehouse, crm)
    execute(warehouse, "update crm.ecom_orders set status = 'Refunded' where connection_id = %s", (LOCATION,))
    since, log_since = len(crm.writes()), len(crm.request_log())

    report = push(warehouse, crm, enabled={STORE_A, STORE_B})

    assert crm.writes(since) == []
    assert all(r["method"] != "DELETE" for r in crm.request_log()[log_since:])
    assert_complete_and_unique(crm)
    assert report.counts["connection"]["skipped"] == 1
    assert report.counts["ecom_customer"]["skipped"] == 2 and report.counts["ecom_order"]["skipped"] == 3
    assert any(LOCATION in w and "nothing in the CRM was deleted" in w for w in report.warnings)


def test_recovered_cart_becomes_the_order_in_the_same_record(warehouse, crm):
    push(warehouse, crm)
    cart_id = orders_by_key(crm)[f"{STORE_A}|1003"]["id"]
    execute(warehouse, """
        insert into crm.ecom_orders (order_key, connection_id, external_id, customer_external_id, email, order_number,
            order_url, status, total_price_cents, shipping_amount_cents, tax_amount_cents, discount_amount_cents,
            currency, shipping_method, external_created_at, external_updated_at, order_products, order_discounts,
            sync_mode, landed_at, is_purchase)
        select cart_key, connection_id, external_checkout_id, customer_external_id, email, external_checkout_id,
            null, 'Awaiting Fulfillment', total_price_cents, 0, 0, 0, currency, 'Flat Rate', external_created_at,
            now(), order_products, '[]'::jsonb, 'incremental', now(), true
        from crm.abandoned_carts where cart_key = %s;
        delete from crm.abandoned_carts where cart_key = %s""", (f"{STORE_A}|1003",) * 2)
    since = len(crm.writes())

    push(warehouse, crm)

    [write] = crm.writes(since)
    assert (write["method"], write["path"], write["automation"]) == ("PUT", f"/api/3/ecomOrders/{cart_id}",
                                                                     "makes_a_purchase")
    recovered = orders_by_key(crm)[f"{STORE_A}|1003"]
    assert (recovered["id"], recovered["externalid"], recovered["externalcheckoutid"]) == (cart_id, "1003", "1003")
    assert crm.duplicates() == NO_DUPLICATES
    assert query(warehouse, "select status from sync.ledger where object_type = 'abandoned_cart'") == [
        {"status": "recovered"}]


@pytest.mark.parametrize("slowed_create,object_type", [("/api/3/connections", "connection"),
                                                        ("/api/3/ecomCustomers", "ecom_customer"),
                                                        ("/api/3/ecomOrders", "ecom_order")])
def test_load_killed_between_a_create_and_its_ledger_row_then_rerun_leaves_no_duplicates(
        warehouse, crm, slowed_create, object_type, tmp_path):  # S6 B10
    # The CRM stores these creates at once but answers them seconds later: SIGKILL lands after
    # the write and before the ledger holds the new id — the worst moment for a crash.
    crm.admin("PUT", "/__admin/faults", {"slow_ms": 3000, "methods": ["POST"], "path_prefix": slowed_create})
    settings_json = json.dumps(dataclasses.asdict(SETTINGS), default=str)
    with (tmp_path / "child.log").open("wb") as child_log:
        child = subprocess.Popen(
            [sys.executable, str(REPO / "tests/integration/crm_load_child.py"), warehouse, crm.url,
             ",".join(sorted(ALL)), settings_json],
            cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}"},
            stdout=child_log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not [w for w in crm.writes() if w["path"] == slowed_create]:
                assert child.poll() is None, (tmp_path / "child.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the child load never reached the slowed create"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    crm.admin("PUT", "/__admin/faults", {})
    orphans = [w for w in crm.writes() if w["path"] == slowed_create]
    recorded = query(warehouse, "select count(*) as n from sync.ledger where object_type = %s", (object_type,))
    assert recorded[0]["n"] < len(orphans), "the crash did not fall between a create and its ledger row"

    report = push(warehouse, crm)

    assert report.status == "success"
    assert_complete_and_unique(crm)
    [killed] = query(warehouse, "select status, error from sync.run_reports where run_id = 'killed-run'")
    assert killed["status"] == "interrupted" and report.run_id in killed["error"]
    assert any("killed-run" in w and "interrupted" in w for w in report.warnings)
    assert push(warehouse, crm).writes == 0
    # issue 14: the rerun's look-up finds what the killed run created and updates it with source 0 —
    # each purchase and cart fired exactly once, whichever create the kill fell after
    fired = collections.Counter(crm.fired())
    assert set(fired.values()) == {1}, fired
    assert {key for trigger, key in fired if trigger == "makes_a_purchase"} == {
        f"{STORE_A}|1001", f"{STORE_A}|1005", f"{LOCATION}|PAY1", f"{LOCATION}|PAY3"}


def test_lost_answers_on_creates_are_looked_up_not_repeated(warehouse, crm):  # S6 B10
    crm.admin("PUT", "/__admin/faults", {"kinds": ["lost_response"], "error_rate": 0.3, "methods": ["POST"],
                                          "seed": 11})

    push(warehouse, crm)

    lost = [r for r in crm.request_log() if r["fault"] == "lost_response"]
    assert any(r["path"] in ("/api/3/ecomOrders", "/api/3/ecomCustomers", "/api/3/connections") for r in lost)
    assert_complete_and_unique(crm)
    crm.admin("PUT", "/__admin/faults", {})
    assert push(warehouse, crm).writes == 0


def test_contacts_above_the_threshold_go_through_bulk_import(warehouse, crm):  # B3 B7 S10
    execute(warehouse, """
        insert into crm.contacts (email, first_name, last_name, phone, tags, accepts_marketing)
        select 'bulk' || n || '@example.com', 'First' || n, 'Last', null, array['bigcommerce-customer'], mod(n, 2) = 0
        from generate_series(1, 300) as n""")

    report = push(warehouse, crm)

    writes = crm.writes()
    imports = [w for w in writes if w["object_type"] == "import"]
    # the 300 and dan have no live order: history, bulk-imported without automations; ada and eve one by one
    assert [len(w["payload"]["contacts"]) for w in imports] == [250, 51]
    assert {c["exclude_automations"] for w in imports for c in w["payload"]["contacts"]} == {True}
    assert {w["payload"]["contact"]["email"] for w in writes if w["object_type"] == "contact"} == {
        "ada@example.com", "eve@example.com"}
    assert not [key for _, key in crm.fired() if key.startswith("bulk")]
    inventory = crm.inventory()
    assert len(inventory["contacts"]) == 303
    assert ("bulk7@example.com", BC) in inventory["contactTags"] and len(inventory["contactTags"]) == 304
    assert ("bulk8@example.com", LIST, "1") in inventory["contactLists"]
    assert ("bulk7@example.com", LIST, "1") not in inventory["contactLists"]
    assert len(inventory["contactLists"]) == 153
    assert report.counts["contact"]["created"] == 303
    assert crm.duplicates() == NO_DUPLICATES
    assert push(warehouse, crm).writes == 0


def test_the_real_entry_point_paces_at_the_account_limit(warehouse, local_pg):  # P4
    crm = Crm(enforce_rate_limit=True)
    try:
        summary = tasks.load_crm(load_config(), tasks.Credentials(crm.url, TOKEN), warehouse, run_id="paced")
        assert summary["status"] == "success"
        assert not [r for r in crm.request_log() if r["status"] == 429]
        assert_complete_and_unique(crm)
    finally:
        crm.close()


def test_429_retry_after_is_honoured_and_nothing_is_lost(warehouse):  # B10
    crm = Crm(enforce_rate_limit=True)
    try:
        client = crm.client(requests_per_second=10)  # deliberately faster than the account allows
        run_push(warehouse, client, SETTINGS, run_id="too-fast", enabled_connections=set(ALL))
        limited = [r for r in crm.request_log() if r["status"] == 429]
        assert limited and client.stats().rate_limited == len(limited)
        assert_complete_and_unique(crm)
    finally:
        crm.close()


def test_a_second_concurrent_load_is_refused(warehouse, crm):
    holder = SyncStore(warehouse)
    holder.ensure_schema()
    holder.acquire_account_lock(crm.url)
    try:
        with pytest.raises(LoadAlreadyRunning, match="another CRM load .* is running"):
            push(warehouse, crm)
        assert crm.request_log() == []
    finally:
        holder.close()
    push(warehouse, crm)
    assert_complete_and_unique(crm)


def test_malformed_mart_rows_are_rejected_with_their_reason_and_the_run_goes_on(warehouse, crm):  # P4
    # What a faulty model change could hand the load: money as a fraction, a timestamp without zone, a new mode.
    execute(warehouse, "alter table crm.ecom_orders alter column total_price_cents type numeric")
    execute(warehouse, "update crm.ecom_orders set total_price_cents = 336.32 where order_key = %s",
            (f"{STORE_A}|1001",))
    execute(warehouse, "update crm.ecom_orders set sync_mode = 'backfill' where order_key = %s", (f"{STORE_A}|1005",))
    execute(warehouse, "alter table crm.abandoned_carts alter column abandoned_at type timestamp")
    malformed = {f"{STORE_A}|1001": "integer cents", f"{STORE_A}|1005": "unknown sync_mode 'backfill'",
                 f"{STORE_A}|1003": "naive timestamp"}

    dry = push(warehouse, crm, mode="dry_run")
    assert dry.status == "success" and dry.counts["ecom_order"]["rejected"] == 2
    assert query(warehouse, "select count(*) as n from sync.rejections") == [{"n": 0}]  # a dry run writes nothing

    report = push(warehouse, crm)

    assert report.status == "success"
    rejections = {r["natural_key"]: r for r in query(warehouse, "select * from sync.rejections "
                                                                "where error_code = 'invalid_mart_row'")}
    assert set(rejections) == set(malformed)
    for key, reason in malformed.items():
        assert rejections[key]["http_status"] is None and reason in rejections[key]["error"]["errors"][0]["detail"]
    assert rejections[f"{STORE_A}|1003"]["object_type"] == "abandoned_cart"
    assert report.counts["ecom_order"]["created"] == 2 and report.counts["ecom_order"]["rejected"] == 3  # + 2001
    assert report.counts["abandoned_cart"]["rejected"] == 1
    assert any("2 crm.ecom_orders row(s) malformed" in w for w in report.warnings)
    # the rest of the batch reached the CRM, the malformed rows did not
    orders = crm.inventory()["ecomOrders"]
    assert orders == {(LOCATION, "PAY1", None, "1"), (LOCATION, "PAY3", None, "1")}
    assert crm.inventory()["ecomCustomers"] == EXPECTED["ecomCustomers"]


def test_running_reports_left_by_dead_loads_of_the_account_are_marked_interrupted(warehouse, crm):
    other_account = "http://127.0.0.1:1"
    push(warehouse, crm)  # creates the sync schema
    for run_id, account in (("dead", crm.url), ("elsewhere", other_account)):
        execute(warehouse, "insert into sync.run_reports (run_id, account, mode, started_at, status) "
                           "values (%s, %s, 'normal', now() - interval '1 hour', 'running')", (run_id, account))

    report = push(warehouse, crm)

    statuses = {r["run_id"]: r["status"] for r in query(warehouse, "select run_id, status from sync.run_reports")}
    assert statuses.pop("dead") == "interrupted"
    assert statuses.pop("elsewhere") == "running"  # another account's load may well be alive
    assert set(statuses.values()) == {"success"} and len(statuses) == 2
    assert any("dead" in w and "interrupted" in w for w in report.warnings)


def delete_contact(crm: Crm, email: str) -> None:
    """Someone deletes the contact in the CRM, through its API."""
    [contact_id] = [c["id"] for c in crm.state()["contacts"] if c["email"] == email]
    requests.delete(f"{crm.url}/api/3/contacts/{contact_id}", headers={"Api-Token": TOKEN},
                    timeout=10).raise_for_status()


def test_a_contact_deleted_in_the_crm_is_synced_again_before_linking_it(warehouse, crm):  # S10 B10 B3
    execute(warehouse, "update crm.contacts set accepts_marketing = false where email = 'ada@example.com'")
    push(warehouse, crm)
    ada_ledger = "select crm_id from sync.ledger where object_type = 'contact' and natural_key = 'ada@example.com'"
    [stale] = query(warehouse, ada_ledger)

    # a live subscription (ada buys again) for the deleted contact: contactLists, by its stale id
    delete_contact(crm, "ada@example.com")
    execute(warehouse, "update crm.contacts set accepts_marketing = true where email = 'ada@example.com'")
    add_live_order(warehouse, "ada@example.com", "1010")
    report = push(warehouse, crm)

    assert report.status == "success" and report.counts["list_membership"]["created"] == 1
    assert ("ada@example.com", LIST, "1") in crm.inventory()["contactLists"]
    [fresh] = query(warehouse, ada_ledger)
    assert fresh["crm_id"] != stale["crm_id"]
    assert any("1 contact(s) were gone from the CRM" in w for w in report.warnings)
    # the next run restores the tags that went with the deleted contact — no live order now: without automations
    since = len(crm.automations())
    assert push(warehouse, crm).counts["contact_tag"]["created"] == 2
    assert crm.fired(since) == []
    inventory = crm.inventory()
    assert inventory["contactTags"] == EXPECTED["contactTags"] and inventory["contactLists"] == EXPECTED["contactLists"]
    assert crm.duplicates() == NO_DUPLICATES

    # a new tag for the contact, deleted again: the bulk import (an upsert by email) brings her back whole
    delete_contact(crm, "ada@example.com")
    execute(warehouse, "update crm.contacts set tags = tags || array['vip'] where email = 'ada@example.com'")
    report = push(warehouse, crm)

    assert report.status == "success" and report.counts["contact_tag"]["created"] == 1
    assert ("ada@example.com", "vip") in crm.inventory()["contactTags"]
    [ada] = [c for c in crm.state()["contacts"] if c["email"] == "ada@example.com"]
    assert ada["firstName"] and query(warehouse, ada_ledger) == [{"crm_id": None}]  # the import answers no id

    push(warehouse, crm)
    inventory = crm.inventory()
    assert inventory["contactTags"] == EXPECTED["contactTags"] | {("ada@example.com", "vip")}
    assert inventory["contactLists"] == EXPECTED["contactLists"]
    assert crm.duplicates() == NO_DUPLICATES
    assert push(warehouse, crm).writes == 0


def test_a_subscription_to_a_list_deleted_mid_run_is_rejected(warehouse, crm):  # B7
    execute(warehouse, "update crm.contacts set accepts_marketing = false where email = 'ada@example.com'")
    push(warehouse, crm)
    execute(warehouse, "update crm.contacts set accepts_marketing = true where email = 'ada@example.com'")
    add_live_order(warehouse, "ada@example.com", "1010")  # live: the subscription goes through contactLists

    class ListDeletedAfterTheLookUp(ActiveCampaignClient):
        def subscribe(self, contact_id: str, list_id: str) -> str | None:
            crm.admin("DELETE", "/__admin/activecampaign/master-list")
            return super().subscribe(contact_id, list_id)

    client = ListDeletedAfterTheLookUp(crm.url, TOKEN, requests_per_second=50)
    report = run_push(warehouse, client, SETTINGS, run_id="list-gone", enabled_connections=set(ALL))

    assert report.status == "success" and report.counts["list_membership"]["rejected"] == 1
    [rejection] = query(warehouse, "select * from sync.rejections where object_type = 'list_membership'")
    assert (rejection["natural_key"], rejection["http_status"]) == ("ada@example.com", 404)
    assert not any("gone from the CRM" in w for w in report.warnings)  # ada was there all along
    assert "ada@example.com" in crm.inventory()["contacts"]


# -- the streamed diff (issue 16 item 2) -------------------------------------------------------------
PRIMARY_TYPES = ("connection", "contact", "ecom_customer", "ecom_order", "abandoned_cart")


def test_upgrade_from_a_ledger_without_row_hash_pushes_nothing_again(warehouse, crm):  # P4
    """A ledger written before ``row_hash`` existed: the first load after the upgrade reads every row once,
    finds each unchanged by payload hash, sends nothing and fills ``row_hash`` in; the next leaves them all in
    the warehouse."""
    push(warehouse, crm)
    execute(warehouse, "alter table sync.ledger drop column row_hash")  # the ledger as the old load left it
    since = len(crm.writes())

    upgrade = push(warehouse, crm)

    assert crm.writes(since) == []
    assert upgrade.writes == 0
    assert query(warehouse, "select count(*) as n from sync.ledger where row_hash is null and object_type = any(%s)"
                 " and crm_id is not null", (list(PRIMARY_TYPES),)) == [{"n": 0}]
    rows = sum(query(warehouse, f"select count(*) as n from crm.{t}")[0]["n"]
               for t in ("connections", "contacts", "ecom_customers", "ecom_orders", "abandoned_carts"))
    assert upgrade.diff["rows_read"] == rows
    # the session's time zone does not change a row hash (jsonb spells times in it): read as UTC — by the diff
    # itself, so without the recorded loads a skip would rely on (crm/skip.py)
    execute(warehouse, "delete from sync.mart_loads")
    execute(warehouse, "do $$ begin execute format('alter database %%I set timezone = %%L', current_database(), "
                       "'Asia/Kolkata'); end $$")

    after = push(warehouse, crm)

    assert crm.writes(since) == []
    # only the order the CRM refused (2001, payload unchanged) is still read: it is not in the ledger
    assert after.diff["rows_read"] == 1 and after.counts["ecom_order"]["skipped"] == 1
    assert after.counts["ecom_order"]["unchanged"] == upgrade.counts["ecom_order"]["unchanged"]
    assert after.counts["contact_tag"]["unchanged"] == upgrade.counts["contact_tag"]["unchanged"] == 4


def test_a_changed_row_is_streamed_and_pushed_the_rest_stays_in_the_warehouse(warehouse, crm):  # P4
    push(warehouse, crm)
    execute(warehouse, "update crm.contacts set tags = tags || array['vip'] where email = 'dan@example.com'")
    execute(warehouse, "update crm.ecom_orders set status = 'Shipped' where order_key = %s", (f"{STORE_A}|1005",))
    since = len(crm.writes())

    report = push(warehouse, crm)

    # dan's row (new tag) and order 1005 are read, with the refused order 2001; nothing else
    assert report.diff["rows_read"] == 3
    assert report.counts["ecom_order"]["updated"] == 1 and report.counts["contact_tag"]["created"] == 1
    assert {(w["method"], w["object_type"]) for w in crm.writes(since)} >= {("PUT", "ecomOrder")}


def test_load_memory_does_not_grow_with_the_mart_rows(warehouse, crm):  # P3, P4
    """Peak traced memory of a dry run over 2,000 and over 8,000 new orders: bounded by the batch."""
    def peak_for(n: int) -> tuple[int, RunReport]:
        execute(warehouse, "delete from crm.ecom_orders where starts_with(order_key, %s)", (f"{STORE_A}|mem-",))
        execute(warehouse, """
            insert into crm.ecom_orders
            select (jsonb_populate_record(o, jsonb_build_object(
                'order_key', %s || '|mem-' || g, 'external_id', 'mem-' || g, 'order_number', 'mem-' || g,
                'sync_mode', 'historical'))).*
            from crm.ecom_orders o, generate_series(1, %s) as g where order_key = %s""",
                (STORE_A, n, f"{STORE_A}|1001"))
        tracemalloc.start()
        try:
            report = run_push(warehouse, crm.client(), SETTINGS, run_id=f"mem-{n}", mode="dry_run",
                              enabled_connections=set(ALL), batch_size=250)
            return tracemalloc.get_traced_memory()[1], report
        finally:
            tracemalloc.stop()

    small, small_report = peak_for(2000)
    large, large_report = peak_for(8000)

    assert small_report.plan["ecom_order"]["create"] >= 2000 and large_report.plan["ecom_order"]["create"] >= 8000
    assert len(large_report.plan["ecom_order"]["samples"]) <= 3  # the dry-run plan: counts and a bounded sample
    assert large_report.diff["max_batch_rows"] <= 250 and large_report.diff["batches_read"] >= 8000 // 250
    assert large / small < 1.5, (small, large)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_batches_do_not_change_what_the_crm_gets(warehouse, crm, batch_size):  # P4 B3
    """One row per batch: every parent id (connection, customer, cart, contact) is found from the ledger for
    the batch, the run's live contacts are known before the contacts are pushed — the CRM ends as with one
    batch, with the same automations, and a rerun reads only the refused order."""
    report = run_push(warehouse, crm.client(), SETTINGS, run_id="batched", enabled_connections=set(ALL),
                      batch_size=batch_size)

    assert_complete_and_unique(crm)
    assert len(crm.writes()) == FIRST_PUSH_WRITES
    assert report.automations == {"tag_added": 3, "subscribed_to_list": 2, "makes_a_purchase": 4,
                                  "abandoned_cart": 1}
    assert report.diff["max_batch_rows"] <= max(batch_size, SETTINGS.bulk_import_threshold + 1)
    since = len(crm.writes())
    execute(warehouse, "delete from sync.mart_loads")  # the diff itself reads the rerun, no mart is skipped
    rerun = run_push(warehouse, crm.client(), SETTINGS, run_id="batched-2", enabled_connections=set(ALL),
                     batch_size=batch_size)
    assert crm.writes(since) == [] and rerun.diff["rows_read"] == 1


def test_a_load_that_wrote_the_ledger_leaves_its_statistics_true(warehouse, crm):  # P4, issue 16
    """The next load's diff joins every mart row to sync.ledger; with the never-analysed statistics of a freshly
    filled ledger the planner took it for empty (230.7 s instead of 0.76 s, docs/benchmarks.md)."""
    push(warehouse, crm)
    [stats] = query(warehouse, "select c.reltuples, (select count(*) from sync.ledger) as n "
                               "from pg_class c where c.oid = 'sync.ledger'::regclass")
    assert stats["n"] > 0
    assert stats["reltuples"] == stats["n"]  # -1 (never analysed) without the load's ANALYZE

    store = SyncStore(warehouse)
    try:
        assert store.refresh_statistics() is False  # a load that wrote nothing leaves them to autovacuum
    finally:
        store.close()


def test_a_load_starting_while_another_reads_the_ledger_takes_no_lock_on_it(warehouse, crm):  # S6, P4
    """A first load streams its diff from sync.ledger inside a transaction; a second load's schema check used to
    queue an ACCESS EXCLUSIVE lock (ALTER TABLE … IF NOT EXISTS) behind it, and the first load's next ledger
    query behind that: both hung (found by test_concurrency under load)."""
    push(warehouse, crm)  # the sync tables exist and are current
    reader = psycopg2.connect(warehouse)
    try:
        with reader.cursor() as cur:
            cur.execute("select count(*) from sync.ledger")  # holds ACCESS SHARE until the transaction ends
        store = SyncStore(warehouse)
        try:
            with store.conn.cursor() as cur:
                cur.execute("set lock_timeout = '5s'")  # a hang becomes an error instead of a stuck test
            store.ensure_schema()
            [locks] = query(warehouse, "select count(*) as n from pg_locks l join pg_class c on c.oid = l.relation "
                                       "where c.relname = 'ledger' and l.mode = 'AccessExclusiveLock'")
            assert locks["n"] == 0
        finally:
            store.close()
    finally:
        reader.rollback()
        reader.close()


# -- the mart skip (issue 16: a no-change cycle costs what changed; crm/skip.py) -------------------------------
MART_TABLES = ("connections", "contacts", "ecom_customers", "ecom_orders", "abandoned_carts")


def actions(report: RunReport) -> dict[str, str]:
    return {mart: entry["action"] for mart, entry in report.marts.items()}


def reading(*tables: str) -> dict[str, str]:
    """``actions`` of a load that reads ``tables`` and skips every other mart."""
    return {mart: "read" if mart in tables else "skipped" for mart in MART_TABLES}


def test_a_second_load_without_changes_skips_every_mart_and_reports_as_a_reread_would(warehouse, crm):  # P4 S4
    first = push(warehouse, crm)
    assert actions(first) == reading(*MART_TABLES)
    writes = len(crm.writes())

    # at another pace (a CRM seeded at an open rate, then loaded at 5/s): the same writes, none
    second = push(warehouse, crm, settings=dataclasses.replace(SETTINGS, requests_per_second=7))

    assert crm.writes(writes) == [] and second.writes == 0 and second.requests == 1  # the master-list look-up
    assert actions(second) == reading()
    assert {entry["reason"] for entry in second.marts.values()} == {f"unchanged since load {first.run_id}"}
    assert second.diff["rows_read"] == 0 and second.diff["batches_read"] == 0
    [stored] = query(warehouse, "select marts from sync.run_reports where run_id = %s", (second.run_id,))
    assert stored["marts"] == second.marts and second.as_dict()["marts"] == second.marts
    # its counts and warnings are those the diff itself gives when it reads every mart again
    execute(warehouse, "delete from sync.mart_loads")
    reread = push(warehouse, crm)
    assert actions(reread) == reading(*MART_TABLES) and reread.writes == 0
    assert second.counts == reread.counts and second.warnings == reread.warnings
    assert second.counts["ecom_order"]["unchanged"] == 4 and second.counts["ecom_order"]["skipped"] == 1

    # a dry run skips too, says so in its plan, and records nothing
    loads = query(warehouse, "select * from sync.mart_loads order by mart")
    dry = push(warehouse, crm, mode="dry_run")
    assert actions(dry) == reading() and crm.writes(writes) == []
    assert dry.plan["ecom_order"]["mart"] == f"crm.ecom_orders skipped: unchanged since load {reread.run_id}"
    assert (dry.plan["ecom_order"]["unchanged"], dry.plan["ecom_order"]["skipped"]) == (4, 1)
    assert query(warehouse, "select * from sync.mart_loads order by mart") == loads
    # a full resync never skips
    resync = push(warehouse, crm, mode="full_resync")
    assert actions(resync) == reading(*MART_TABLES)
    assert {entry["reason"] for entry in resync.marts.values()} == {"a full resync reads every row"}


def test_a_changed_or_deleted_mart_row_makes_only_its_mart_read(warehouse, crm):  # P4 S4 B4
    push(warehouse, crm)
    orders = orders_by_key(crm)
    execute(warehouse, "update crm.ecom_orders set status = 'Shipped' where order_key = %s", (f"{STORE_A}|1005",))
    since = len(crm.writes())

    changed = push(warehouse, crm)

    assert actions(changed) == reading("ecom_orders")
    assert changed.marts["ecom_orders"]["reason"].startswith("crm.ecom_orders changed since load")
    assert [(w["method"], w["path"]) for w in crm.writes(since)] == [
        ("PUT", f"/api/3/ecomOrders/{orders[f'{STORE_A}|1005']['id']}")]

    # an order the marts now exclude (archived later): its row leaves crm.ecom_orders, it leaves the CRM
    execute(warehouse, """insert into crm.excluded_records (connection_id, external_id, record_type, reason)
                          select connection_id, external_id, 'order', 'archived_order' from crm.ecom_orders
                          where order_key = %s""", (f"{STORE_A}|1001",))
    execute(warehouse, "delete from crm.ecom_orders where order_key = %s", (f"{STORE_A}|1001",))
    since = len(crm.writes())

    deleted = push(warehouse, crm)

    assert actions(deleted) == reading("ecom_orders")
    assert [(w["method"], w["path"]) for w in crm.writes(since)] == [
        ("DELETE", f"/api/3/ecomOrders/{orders[f'{STORE_A}|1001']['id']}")]
    assert deleted.counts["ecom_order"]["removed"] == 1
    assert actions(push(warehouse, crm)) == reading()


def test_a_new_payload_version_makes_every_mart_read(warehouse, crm, monkeypatch):  # P4 S4
    push(warehouse, crm)
    since = len(crm.writes())
    monkeypatch.setattr(payloads, "PAYLOAD_VERSION", "2")

    bumped = push(warehouse, crm)

    assert actions(bumped) == reading(*MART_TABLES)
    # (and the ledger rows of the connections that the customers, orders and carts wait for: new row hashes)
    assert all("the load's settings changed since load" in entry["reason"] for entry in bumped.marts.values())
    rows = sum(query(warehouse, f"select count(*) as n from crm.{t}")[0]["n"] for t in MART_TABLES)
    assert bumped.diff["rows_read"] == rows  # every row compared by payload hash again …
    assert crm.writes(since) == []  # … and none differs
    assert actions(push(warehouse, crm)) == reading()


def test_a_renamed_master_list_makes_the_contacts_read(warehouse, crm):  # B7 P4 S4
    push(warehouse, crm)
    renamed = dataclasses.replace(SETTINGS, master_list_name="Newsletter")
    crm.admin("PUT", "/__admin/activecampaign/master-list", {"name": "Newsletter"})

    report = push(warehouse, crm, settings=renamed)

    assert actions(report) == reading("contacts")
    assert report.counts["list_membership"]["updated"] == 3  # subscribed to the list of that name
    assert actions(push(warehouse, crm, settings=renamed)) == reading()


def test_a_connection_enabled_again_makes_its_marts_read(warehouse, crm):  # B11 S9 P4 S4
    push(warehouse, crm)
    customer = f"{STORE_B}|11"
    execute(warehouse, "update crm.ecom_customers set accepts_marketing = true where ecom_customer_key = %s",
            (customer,))
    since = len(crm.writes())

    disabled = push(warehouse, crm, enabled=ALL - {STORE_B})

    assert actions(disabled) == {**reading(*MART_TABLES), "contacts": "skipped"}  # contacts have no connection
    assert crm.writes(since) == []
    assert disabled.counts["ecom_customer"]["skipped"] == 1

    enabled = push(warehouse, crm)  # the mart did not change since: the enabled connections did

    assert enabled.marts["ecom_customers"]["action"] == "read"
    assert [(w["method"], w["object_type"]) for w in crm.writes(since)] == [("PUT", "ecomCustomer")]
    assert (STORE_B, "11", "ada@example.com", "1") in crm.inventory()["ecomCustomers"]


def test_an_erased_ledger_row_or_rejection_makes_its_mart_read(warehouse, crm):  # P4 S4 B10
    push(warehouse, crm)
    execute(warehouse, "delete from sync.ledger where object_type = 'contact_tag' and natural_key = %s",
            (f"dan@example.com|{BC}",))

    tag = push(warehouse, crm)

    assert actions(tag) == reading("contacts")
    assert tag.marts["contacts"]["reason"].startswith("its sync.ledger/sync.rejections rows changed since load")
    assert tag.counts["contact_tag"]["created"] == 1  # sent again: the ledger no longer says the CRM has it
    assert crm.inventory()["contactTags"] == EXPECTED["contactTags"] and crm.duplicates() == NO_DUPLICATES

    execute(warehouse, "delete from sync.rejections where natural_key = %s", (f"{STORE_B}|2001",))  # a hand fix
    since = len(crm.request_log())

    retried = push(warehouse, crm)

    assert actions(retried) == reading("ecom_orders")
    assert retried.counts["ecom_order"]["rejected"] == 1  # sent again, refused again
    assert [r for r in crm.request_log()[since:] if r["method"] == "POST" and r["path"] == "/api/3/ecomOrders"]


def test_a_load_that_failed_in_a_mart_makes_that_mart_read_again(warehouse, crm):  # P4 S4 B10
    class OrdersDown(ActiveCampaignClient):
        def create_ecom_order(self, payload: dict) -> str:
            raise ApiError("ecomOrders unavailable", 503)

    with pytest.raises(ApiError):
        run_push(warehouse, OrdersDown(crm.url, TOKEN, requests_per_second=50), SETTINGS, run_id="orders-down",
                 enabled_connections=set(ALL))
    assert {r["mart"] for r in query(warehouse, "select mart from sync.mart_loads")} == {
        "connections", "contacts", "ecom_customers"}  # recorded once each phase completed

    report = push(warehouse, crm)

    assert actions(report) == reading("ecom_orders", "abandoned_carts")
    assert report.counts["ecom_order"]["created"] == 4
    assert_complete_and_unique(crm)


def test_a_parent_accepted_later_makes_the_marts_waiting_for_it_read(warehouse, crm):  # S4 S6 P4
    """The location's connection is refused: its customers, orders and cart wait (their marts are settled, the
    wait depends on the connection's ledger row only). Its row fixed, the connection is created and — their own
    rows unchanged — the customers, orders and cart are read again and pushed."""
    execute(warehouse, "update crm.connections set name = '' where connection_id = %s", (LOCATION,))
    refused = push(warehouse, crm)
    assert refused.counts["connection"]["rejected"] == 1 and refused.counts["ecom_customer"]["skipped"] == 2
    assert actions(push(warehouse, crm)) == reading()  # nothing changed: everything still waits

    execute(warehouse, "update crm.connections set name = 'Square Location' where connection_id = %s", (LOCATION,))
    fixed = push(warehouse, crm)

    assert actions(fixed) == reading("connections", "ecom_customers", "ecom_orders", "abandoned_carts")
    assert fixed.counts["ecom_customer"]["created"] == 2 and fixed.counts["ecom_order"]["created"] == 2
    assert_complete_and_unique(crm)


def test_sync_tables_from_before_the_mart_skip_are_upgraded_and_every_mart_read(warehouse, crm):  # P4 S4
    push(warehouse, crm)
    # the sync schema as the load before the mart skip left it
    execute(warehouse, "drop table sync.mart_loads; alter table sync.run_reports drop column marts")
    since = len(crm.writes())

    upgraded = push(warehouse, crm)

    assert actions(upgraded) == reading(*MART_TABLES) and crm.writes(since) == []
    assert {entry["reason"] for entry in upgraded.marts.values()} == {
        "no complete load of it with nothing owed is recorded"}
    assert actions(push(warehouse, crm)) == reading()
