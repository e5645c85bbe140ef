"""The pure parts of the CRM load: payloads, hashes, the source flag, planning, batching."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ecomsync.crm import payloads as p
from ecomsync.crm.ledger import LedgerEntry, Rejection
from ecomsync.crm.push import Item, RunReport, decide, plan_summary

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
STORE = "bigcommerce:k3x9q2m7a1"
LOCATION = "square:LOC1"


def order_row(**overrides) -> dict:
    row = {
        "order_key": f"{STORE}|1001", "connection_id": STORE, "external_id": "1001", "customer_external_id": "11",
        "email": "ada@example.com", "order_number": "1001", "order_url": "https://x/1001", "status": "Completed",
        "total_price_cents": 33632, "shipping_amount_cents": 1999, "tax_amount_cents": 10,
        "discount_amount_cents": 520, "currency": "USD", "shipping_method": "Flat Rate",
        "external_created_at": datetime(2018, 1, 11, 2, 35, 30, tzinfo=timezone.utc),
        "external_updated_at": datetime(2018, 1, 11, 9, 0, tzinfo=timezone.utc),
        "order_products": [{"externalid": "501", "name": "Widget", "price": 1999, "quantity": 2}],
        "order_discounts": [{"name": "SAVE5", "type": "order", "discountAmount": 500}],
        "sync_mode": "incremental", "landed_at": datetime(2026, 11, 1, tzinfo=timezone.utc),
    }
    row.update(overrides)
    return row


def test_order_payload_maps_cents_and_utc_times():  # B12, S12
    payload = p.order_payload(order_row(
        external_created_at=datetime(2018, 1, 10, 21, 5, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))))
    assert (payload["totalPrice"], payload["shippingAmount"], payload["taxAmount"], payload["discountAmount"]) == (
        33632, 1999, 10, 520)
    assert payload["externalCreatedDate"] == "2018-01-11T02:35:30Z"
    assert payload["customer_key"] == f"{STORE}|11"
    assert "sync_mode" not in payload and "landed_at" not in payload and "source" not in payload


def test_money_must_be_integer_cents():
    with pytest.raises(ValueError, match="integer cents"):
        p.order_payload(order_row(total_price_cents=336.32))


def test_hash_ignores_sync_mode_and_landing_but_not_status():  # P4, B4
    base = p.payload_hash(p.order_payload(order_row()))
    relanded = p.payload_hash(p.order_payload(order_row(sync_mode="historical",
                                                        landed_at=datetime(2026, 11, 22, tzinfo=timezone.utc))))
    assert relanded == base
    assert p.payload_hash(p.order_payload(order_row(status="Refunded"))) != base
    assert p.payload_hash({"b": 1, "a": [1, 2]}) == p.payload_hash({"a": [1, 2], "b": 1})


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="naive"):
        p.iso_utc(datetime(2024, 1, 1))


@pytest.mark.parametrize("mode", ["incremental", "catch_up"])
def test_incremental_and_catch_up_orders_fire_automations(mode):  # B9
    assert p.order_source(mode, STORE, NOW - timedelta(days=900), NOW, 24) == 1
    assert p.cart_source(mode) == 1


def test_historical_orders_and_carts_fire_nothing():  # B9
    assert p.order_source("historical", STORE, NOW - timedelta(hours=1), NOW, 24) == 0
    assert p.cart_source("historical") == 0


def test_square_historical_restart_fires_only_inside_the_window():  # S8
    assert p.order_source("historical", LOCATION, NOW - timedelta(hours=23, minutes=59), NOW, 24) == 1
    assert p.order_source("historical", LOCATION, NOW - timedelta(hours=24, minutes=1), NOW, 24) == 0
    assert p.order_source("historical", LOCATION, NOW - timedelta(hours=30), NOW, 48) == 1
    assert p.order_source("historical", LOCATION, None, NOW, 24) == 0


def test_unknown_sync_mode_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="sync_mode"):
        p.order_source("backfill", STORE, NOW, NOW, 24)
    with pytest.raises(ValueError, match="sync_mode"):
        p.cart_source(None)


def test_bulk_batches_hold_at_most_250_contacts():  # B3
    batches = list(p.chunks(range(601), p.BULK_IMPORT_MAX_CONTACTS))
    assert [len(b) for b in batches] == [250, 250, 101]
    assert [x for b in batches for x in b] == list(range(601))
    assert list(p.chunks([], 250)) == []


def test_bulk_entry_subscribes_only_when_given_a_list():  # B7
    contact = p.contact_payload({"email": "ada@example.com", "first_name": "Ada", "last_name": None, "phone": None})
    entry = p.bulk_import_contact(contact, ["bigcommerce-customer"], "3")
    assert entry == {"email": "ada@example.com", "first_name": "Ada", "last_name": "", "phone": "",
                     "tags": ["bigcommerce-customer"], "subscribe": [{"listid": 3}]}
    assert "subscribe" not in p.bulk_import_contact(contact, [], None)


def item(object_type="ecom_order", key=f"{STORE}|1001", connection=STORE, payload=None) -> Item:
    return Item(object_type, key, connection, payload or {"x": 1})


def plan(it: Item, entry=None, rejection=None, mode="normal", enabled=(STORE,), list_found=True, retry=False):
    return decide(it, entry, rejection, mode=mode, enabled_connections=set(enabled), master_list_found=list_found,
                  retry_rejected=retry)


def test_planning_by_ledger_hash():  # P4
    it = item()
    assert plan(it) == ("create", "")
    assert plan(it, LedgerEntry("7", it.hash, "synced")) == ("unchanged", "")
    assert plan(it, LedgerEntry("7", "old", "synced")) == ("update", "")
    # bulk-imported contacts have no CRM id yet but are in the CRM
    assert plan(it, LedgerEntry(None, it.hash, "synced")) == ("unchanged", "")


def test_full_resync_ignores_hashes():
    it = item()
    assert plan(it, LedgerEntry("7", it.hash, "synced"), mode="full_resync")[0] == "update"
    link = item("contact_tag", "ada@example.com|bigcommerce-customer", None)
    assert plan(link, LedgerEntry("9", link.hash, "synced"), mode="full_resync")[0] == "unchanged"


def test_disabled_connection_is_skipped_whatever_the_ledger():  # B11, S9
    it = item()
    assert plan(it, enabled=()) == ("skipped", "connection disabled")
    assert plan(it, LedgerEntry("7", "old", "synced"), enabled=("square:OTHER",))[0] == "skipped"


def test_rejected_record_waits_for_a_new_payload_or_a_request():
    it = item()
    assert plan(it, rejection=Rejection(it.hash, "email_invalid"))[0] == "skipped"
    assert plan(it, rejection=Rejection("older payload", "email_invalid"))[0] == "create"
    assert plan(it, rejection=Rejection(it.hash, "email_invalid"), retry=True)[0] == "create"


def test_list_membership_needs_the_master_list():  # B7
    membership = item("list_membership", "ada@example.com", None)
    assert plan(membership, list_found=False) == ("skipped", "master list missing")
    assert plan(membership)[0] == "create"


def test_plan_summary_counts_and_samples_per_type():
    items = [item(key=f"{STORE}|{n}", payload={"n": n}) for n in range(5)]
    for it, action in zip(items, ["create", "create", "update", "unchanged", "create"]):
        it.action = action
    items[0].source = 0
    summary = plan_summary(items)["ecom_order"]
    assert (summary["create"], summary["update"], summary["unchanged"], summary["skipped"]) == (3, 1, 1, 0)
    assert [s["key"] for s in summary["samples"]] == [f"{STORE}|0", f"{STORE}|1", f"{STORE}|2"]
    assert summary["samples"][0] == {"action": "create", "key": f"{STORE}|0", "payload": {"n": 0}, "source": 0}


def test_plan_samples_sent_to_xcom_mask_emails_and_phones():
    contact = Item("contact", "ada.lovelace@example.com", None, p.contact_payload(
        {"email": "ada.lovelace@example.com", "first_name": "Ada", "last_name": "L", "phone": "+44 20 7946 0958"}))
    link = Item("contact_tag", "ada.lovelace@example.com|bigcommerce-customer", None,
                {"email": "ada.lovelace@example.com", "tag": "bigcommerce-customer"})
    order = item(payload=p.order_payload(order_row()))
    for it in (contact, link, order):
        it.action = "create"
    report = RunReport("r1", "dry_run", NOW, plan=plan_summary([contact, link, order]))

    plan = report.as_dict()["plan"]

    [contact_sample], [link_sample], [order_sample] = (plan[t]["samples"] for t in ("contact", "contact_tag",
                                                                                      "ecom_order"))
    assert contact_sample["key"] == "a***@example.com"
    assert contact_sample["payload"] == {"email": "a***@example.com", "firstName": "Ada", "lastName": "L",
                                         "phone": "***58"}
    assert link_sample["key"] == "a***@example.com|bigcommerce-customer"
    assert order_sample["payload"]["email"] == "a***@example.com"
    assert order_sample["payload"]["totalPrice"] == 33632 and order_sample["payload"]["orderProducts"]
    assert "lovelace" not in repr(plan) and "ada@example.com" not in repr(plan) and "7946" not in repr(plan)
    # the report row in the warehouse keeps the plan as it is
    assert report.plan["contact"]["samples"][0]["payload"]["email"] == "ada.lovelace@example.com"
