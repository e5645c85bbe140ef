"""Automations fire exactly when the native integration's would (issue 14), excluded orders leave the CRM's figures
(issues 13 and 14), and a CRM account is one account however its URL is spelt (issue 15).

Real Postgres with crm marts from a real dbt run (the fixtures of test_crm_load), the ActiveCampaign sandbox on a
loopback port; its automation log (``/__admin/activecampaign/automations``) is what the CRM would have started.
"""
# ruff: noqa: F811 — the fixtures (warehouse, crm, marts_template) are test_crm_load's, imported by name.
from __future__ import annotations

import collections
import logging
import os
import uuid

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from ecomsync.crm.ledger import LoadAlreadyRunning, SyncStore
from ecomsync.privacy import erase_contact
from tests.integration.test_crm_load import (  # noqa: F401
    ALL,
    BC,
    LOCATION,
    SETTINGS,
    STORE_A,
    Crm,
    add_live_order,
    crm,
    execute,
    marts_template,
    push,
    query,
    warehouse,
)

BULK_THRESHOLD = SETTINGS.bulk_import_threshold  # 100


def historical_marts(url: str) -> None:
    """Everything in the marts comes from a first (historical) sync, placed long before the run (B9, S8)."""
    execute(url, "update crm.ecom_orders set sync_mode = 'historical', "
                 "external_created_at = least(external_created_at, now() - interval '30 days')")
    execute(url, "update crm.abandoned_carts set sync_mode = 'historical'")


def add_customers(url: str, n: int, tag: str = BC) -> None:
    """``n`` more store customers, tagged, half of them opted in (a subscription each)."""
    execute(url, """
        insert into crm.contacts (email, first_name, last_name, phone, tags, accepts_marketing)
        select 'hist' || i || '@example.com', 'First' || i, 'Last', null, array[%s], mod(i, 2) = 0
        from generate_series(1, %s) as i""", (tag, n))


# -- the rows of issue 14's table -------------------------------------------------------------------
@pytest.mark.parametrize("customers", [40, 150])  # below and above bulk_import_threshold
def test_a_historical_sync_fires_no_automation_of_any_kind(warehouse, crm, customers):  # B9 S8 B3
    historical_marts(warehouse)
    add_customers(warehouse, customers)

    report = push(warehouse, crm)

    assert report.status == "success"
    assert crm.fired() == []
    assert report.automations == {}
    imports = [w for w in crm.writes() if w["object_type"] == "import"]
    assert sum(len(w["payload"]["contacts"]) for w in imports) == customers + 3  # + ada, dan, eve
    assert {c["exclude_automations"] for w in imports for c in w["payload"]["contacts"]} == {True}
    assert not [w for w in crm.writes() if w["object_type"] in ("contactTag", "contactList")]
    # …and yet everything arrived: every tag and every subscription (B3, B7)
    inventory = crm.inventory()
    assert len(inventory["contacts"]) == customers + 3
    assert ("hist2@example.com", BC) in inventory["contactTags"]
    assert ("hist2@example.com", "Master Contact List", "1") in inventory["contactLists"]
    assert {source for *_, source in inventory["ecomOrders"]} == {"0"}
    [stored] = query(warehouse, "select automations from sync.run_reports where run_id = %s", (report.run_id,))
    assert stored["automations"] == {}


def test_a_historical_order_that_changes_later_never_fires(warehouse, crm):  # B9
    historical_marts(warehouse)
    push(warehouse, crm)
    # order 1001 ships: an incremental run lands it again
    execute(warehouse, "update crm.ecom_orders set status = 'Shipped', sync_mode = 'incremental', "
                       "external_updated_at = now() where order_key = %s", (f"{STORE_A}|1001",))
    since = len(crm.writes())

    report = push(warehouse, crm)

    [write] = crm.writes(since)
    assert (write["method"], write["payload"]["ecomOrder"]["source"]) == ("PUT", 0)
    assert crm.fired() == [] and report.automations == {}


def test_a_new_live_order_fires_once_and_never_again_when_it_ships(warehouse, crm):  # B4 S10
    historical_marts(warehouse)
    push(warehouse, crm)
    key = add_live_order(warehouse, "ada@example.com", "124")
    since = len(crm.automations())

    report = push(warehouse, crm)
    execute(warehouse, "update crm.ecom_orders set status = 'Shipped', external_updated_at = now() "
                       "where order_key = %s", (key,))
    shipped = push(warehouse, crm)

    assert crm.fired(since) == [("makes_a_purchase", key)]
    assert report.automations == {"makes_a_purchase": 1} and shipped.automations == {}
    assert shipped.counts["ecom_order"]["updated"] == 1


def test_a_failed_payment_is_no_purchase_and_fires_nothing(warehouse, crm):  # S8 (issue 13 row 3)
    historical_marts(warehouse)
    push(warehouse, crm)
    key = add_live_order(warehouse, "eve@example.com", "PAY9", like=f"{LOCATION}|PAY1")
    execute(warehouse, "update crm.ecom_orders set is_purchase = false, total_price_cents = 0 where order_key = %s",
            (key,))
    since = len(crm.writes())

    push(warehouse, crm)

    [write] = crm.writes(since)
    assert (write["method"], write["payload"]["ecomOrder"]["source"]) == ("POST", 0)
    assert crm.fired() == []


def test_a_live_new_customer_is_tagged_the_way_the_native_integration_does(warehouse, crm):  # B3 S10
    historical_marts(warehouse)
    push(warehouse, crm)
    execute(warehouse, "insert into crm.contacts (email, first_name, last_name, phone, tags, accepts_marketing) "
                       "values ('new@example.com', 'New', 'Buyer', null, array[%s], true)", (BC,))
    execute(warehouse, "insert into crm.ecom_customers (ecom_customer_key, connection_id, external_id, email, "
                       "accepts_marketing) values (%s, %s, '99', 'new@example.com', true)", (f"{STORE_A}|99", STORE_A))
    key = add_live_order(warehouse, "new@example.com", "125")
    execute(warehouse, "update crm.ecom_orders set customer_external_id = '99' where order_key = %s", (key,))
    since = len(crm.writes())

    report = push(warehouse, crm)

    assert sorted(crm.fired()) == sorted([("tag_added", f"new@example.com|{BC}"),
                                          ("subscribed_to_list", "new@example.com|list:1"),
                                          ("makes_a_purchase", key)])
    assert report.automations == {"tag_added": 1, "subscribed_to_list": 1, "makes_a_purchase": 1}
    assert [w["object_type"] for w in crm.writes(since) if w["object_type"] in ("import", "contactTag", "contactList")] \
        == ["contactTag", "contactList"]


def test_a_dry_run_shows_the_automations_before_anything_is_sent(warehouse, crm):  # B9
    historical_marts(warehouse)
    push(warehouse, crm)
    add_live_order(warehouse, "ada@example.com", "126")

    dry = push(warehouse, crm, mode="dry_run")
    real = push(warehouse, crm)

    assert dry.automations == real.automations == {"makes_a_purchase": 1}
    [sample] = dry.plan["ecom_order"]["samples"]
    assert (sample["source"], sample["automation"]) == (1, "makes_a_purchase")


# -- issue 13/14: an order now excluded is taken out of the CRM's figures ----------------------------
def test_an_order_excluded_after_it_was_pushed_is_deleted_with_its_reason(warehouse, crm):  # B4 P4 (issue 13)
    push(warehouse, crm)
    order_id = next(o["id"] for o in crm.state()["ecomOrders"] if o["externalid"] == "1005")
    execute(warehouse, """
        insert into crm.excluded_records (connection_id, record_type, external_id, reason, detail)
        values (%s, 'order', '1005', 'archived_order', 'is_deleted: true');
        delete from crm.ecom_orders where order_key = %s""", (STORE_A, f"{STORE_A}|1005"))
    dry = push(warehouse, crm, mode="dry_run")
    assert dry.plan["ecom_order"]["remove"] == 1
    assert order_id in {o["id"] for o in crm.state()["ecomOrders"]}  # a dry run deletes nothing

    report = push(warehouse, crm)

    assert report.counts["ecom_order"]["removed"] == 1
    assert "1005" not in {o["externalid"] for o in crm.state()["ecomOrders"]}
    assert [r for r in crm.request_log() if r["method"] == "DELETE"][0]["path"] == f"/api/3/ecomOrders/{order_id}"
    assert query(warehouse, "select status, status_reason, crm_id from sync.ledger where natural_key = %s",
                 (f"{STORE_A}|1005",)) == [{"status": "removed", "status_reason": "archived_order", "crm_id": None}]
    assert any("deleted from the CRM" in w for w in report.warnings)
    assert push(warehouse, crm).writes == 0  # removed once


def test_an_excluded_order_of_a_disabled_connection_is_not_deleted(warehouse, crm):  # B11
    push(warehouse, crm)
    execute(warehouse, "insert into crm.excluded_records (connection_id, record_type, external_id, reason, detail) "
                       "values (%s, 'order', 'PAY1', 'payment_failed', 'FAILED')", (LOCATION,))
    execute(warehouse, "delete from crm.ecom_orders where order_key = %s", (f"{LOCATION}|PAY1",))

    report = push(warehouse, crm, enabled=ALL - {LOCATION})

    assert not [r for r in crm.request_log() if r["method"] == "DELETE"]
    assert report.counts["ecom_order"]["removed"] == 0


# -- issue 15: one account, one lock; a rejection never shadows the ledger --------------------------
@pytest.mark.parametrize("spelt", ["http://localhost:{port}/", "HTTP://127.0.0.1:{port}//", "http://[::1]:{port}"])
def test_two_spellings_of_one_account_take_one_lock(warehouse, crm, spelt):  # P4 (issue 15)
    holder = SyncStore(warehouse)
    holder.ensure_schema()
    holder.acquire_account_lock(spelt.format(port=crm.server.server_port))
    try:
        with pytest.raises(LoadAlreadyRunning):
            push(warehouse, crm)  # the client spells it http://127.0.0.1:<port>
        assert crm.request_log() == []
    finally:
        holder.close()


def test_erase_locks_an_account_once_however_its_reports_spell_it(warehouse, crm):  # P4 (issue 15)
    push(warehouse, crm)
    port = crm.server.server_port
    execute(warehouse, "insert into sync.run_reports (run_id, account, mode, started_at, status) "
                       "values ('other-spelling', %s, 'normal', now(), 'success')", (f"http://localhost:{port}/",))

    report = erase_contact(warehouse, "dan@example.com", dry_run=True)  # LoadAlreadyRunning before the fix

    assert report.dry_run


def test_a_rejection_never_shadows_what_the_ledger_already_has(warehouse, crm):  # P4 (issue 15)
    push(warehouse, crm)
    # what a racing second load leaves: a 422 "duplicate" for the very payload the first load pushed
    execute(warehouse, """
        insert into sync.rejections (object_type, natural_key, connection_id, payload_hash, http_status, error_code,
                                     error, run_id)
        select object_type, natural_key, connection_id, payload_hash, 422, 'duplicate', '{}'::jsonb, 'racer'
        from sync.ledger where object_type in ('connection', 'ecom_customer')""")

    report = push(warehouse, crm)

    assert report.counts["connection"]["unchanged"] == 3 and report.counts["connection"]["skipped"] == 0
    assert report.counts["ecom_customer"]["skipped"] == 0
    assert not [w for w in report.warnings if "of connection skipped" in w or "of ecom_customer skipped" in w]
    assert query(warehouse, "select count(*) as n from sync.rejections where run_id = 'racer'") == [{"n": 0}]


# -- issue 19: progress per phase ----------------------------------------------------------------------
def test_each_phase_logs_its_progress(warehouse, crm, caplog, monkeypatch):
    monkeypatch.setattr("ecomsync.crm.report.PROGRESS_EVERY_S", 0.0)  # every wait reports, as a long phase would
    caplog.set_level(logging.INFO, logger="ecomsync.crm")
    historical_marts(warehouse)

    push(warehouse, crm)

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CRM ")]
    for phase, planned in (("connections", 3), ("bulk import", 3), ("e-commerce customers", 5), ("orders", 5),
                           ("abandoned carts", 1)):
        assert any(line.startswith(f"CRM {phase} finished: {planned}/{planned} done") for line in lines), lines
    assert any("in progress" in line for line in lines)
    assert all("requests/s" in line for line in lines if " done, " in line)


# -- the property: random sequences of syncs -------------------------------------------------------
ORDERS = (f"{STORE_A}|1001", f"{STORE_A}|1005", f"{LOCATION}|PAY1", f"{LOCATION}|PAY3")
MODES = ("historical", "incremental", "catch_up")
step = st.one_of(
    st.tuples(st.just("land"), st.sampled_from(ORDERS), st.sampled_from(MODES), st.booleans(), st.booleans()),
    st.tuples(st.just("push")),
    st.tuples(st.just("dry_run")),
    st.tuples(st.just("lose_ledger_row"), st.sampled_from(ORDERS)),  # killed between a create and its ledger row
    st.tuples(st.just("restart")),  # a historical restart re-lands every order it has
)


@settings(max_examples=10, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=2, max_size=8))
def test_any_sequence_of_syncs_fires_one_purchase_automation_at_most_and_none_for_history(
        local_pg, marts_template, steps):  # B3 B9 S8 S10 P4
    name = f"test_crm_prop_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(local_pg.url("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name),
                                                                     sql.Identifier(marts_template)))
    admin.close()
    url = local_pg.url(name)
    account = Crm(enforce_rate_limit=False)
    store = SyncStore(url)
    store.ensure_schema()  # the sync tables, as the first load creates them
    store.close()
    try:
        # the marts start without the orders; each "land" brings one in (or changes it)
        execute(url, "create table held_orders as select * from crm.ecom_orders where order_key = any(%s); "
                     "delete from crm.ecom_orders", (list(ORDERS),))
        first_context: dict[str, bool] = {}  # order → whether its first push may fire (live purchase)
        landed: dict[str, tuple[str, bool, bool]] = {}  # order → (mode, recent, is_purchase)
        for action, *args in steps + [("push",)]:
            if action == "land":
                key, mode, recent, is_purchase = args
                land(url, key, mode, recent, is_purchase)
                landed[key] = (mode, recent, is_purchase)
            elif action == "restart":
                for key in list(landed):
                    mode, recent, is_purchase = landed[key]
                    land(url, key, "historical", recent, is_purchase)
                    landed[key] = ("historical", recent, is_purchase)
            elif action == "lose_ledger_row":
                execute(url, "delete from sync.ledger where object_type = 'ecom_order' and natural_key = %s",
                        (args[0],))
            else:
                assert push(url, account, mode="normal" if action == "push" else "dry_run").status == "success"
                if action == "push":
                    for key, (mode, recent, is_purchase) in landed.items():
                        live = mode != "historical" or (key.startswith("square:") and recent)
                        first_context.setdefault(key, live and is_purchase)
        fired = collections.Counter(account.fired())
        purchases = {key: n for (trigger, key), n in fired.items() if trigger == "makes_a_purchase"}
        assert all(n == 1 for n in fired.values()), fired  # at most one automation per object and trigger
        assert purchases == {key: 1 for key, fires in first_context.items() if fires}, (purchases, first_context)
        live_contacts = {entry["contact"] for entry in account.automations()
                         if entry["trigger"] in ("makes_a_purchase", "abandoned_cart")}
        assert {entry["contact"] for entry in account.automations()
                if entry["trigger"] in ("tag_added", "subscribed_to_list")} <= live_contacts
    finally:
        account.close()
        local_pg.drop_database(name)


def land(url: str, key: str, mode: str, recent: bool, is_purchase: bool) -> None:
    """An extract run of ``mode`` lands order ``key`` (new, or changed: its status moves on)."""
    placed = "now() - interval '1 hour'" if recent else "now() - interval '400 days'"
    execute(url, f"""
        insert into crm.ecom_orders select * from held_orders h where h.order_key = %(key)s
            and not exists (select from crm.ecom_orders o where o.order_key = %(key)s);
        update crm.ecom_orders set sync_mode = %(mode)s, is_purchase = %(purchase)s,
               external_created_at = {placed}, status = status || '+', external_updated_at = now()
        where order_key = %(key)s""", {"key": key, "mode": mode, "purchase": is_purchase})

