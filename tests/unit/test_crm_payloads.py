"""The pure parts of the CRM load: payloads, hashes, the automation decision, planning, batching, the account key."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecomsync.crm import automations as a
from ecomsync.crm import payloads as p
from ecomsync.crm.activecampaign import account_key
from ecomsync.crm.ledger import LedgerEntry, Rejection
from ecomsync.crm.plan import Item, decide
from ecomsync.crm.report import PlanSummary, RunReport, plan_summary

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
STORE = "bigcommerce:k3x9q2m7a1"
LOCATION = "square:LOC1"


def order_row(**overrides) -> dict:
    row = {
        "order_key": f"{STORE}|1001", "connection_id": STORE, "external_id": "1001", "customer_external_id": "11",
        "email": "ada@example.com", "order_number": "1001", "order_url": "https://x/1001", "status": "Completed",
        "total_price_cents": 33632, "shipping_amount_cents": 1999, "tax_amount_cents": 10,
        "discount_amount_cents": 520, "currency": "USD", "shipping_method": "Flat Rate",
        "external_created_at": datetime(2018, 1, 11, 2, 35, 30, tzinfo=UTC),
        "external_updated_at": datetime(2018, 1, 11, 9, 0, tzinfo=UTC),
        "order_products": [{"externalid": "501", "name": "Widget", "price": 1999, "quantity": 2}],
        "order_discounts": [{"name": "SAVE5", "type": "order", "discountAmount": 500}],
        "sync_mode": "incremental", "landed_at": datetime(2026, 11, 1, tzinfo=UTC),
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
                                                        landed_at=datetime(2026, 11, 22, tzinfo=UTC))))
    assert relanded == base
    assert p.payload_hash(p.order_payload(order_row(status="Refunded"))) != base
    assert p.payload_hash({"b": 1, "a": [1, 2]}) == p.payload_hash({"a": [1, 2], "b": 1})


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="naive"):
        p.iso_utc(datetime(2024, 1, 1))


@pytest.mark.parametrize("mode", ["incremental", "catch_up"])
def test_incremental_and_catch_up_records_are_live(mode):  # B9
    assert a.is_live(mode, STORE, NOW - timedelta(days=900), NOW, 24)
    assert a.is_live(mode, LOCATION, None, NOW, 24)


def test_historical_records_are_never_live_on_bigcommerce():  # B9
    assert not a.is_live("historical", STORE, NOW - timedelta(hours=1), NOW, 24)


def test_square_historical_restart_is_live_only_inside_the_window():  # S8
    assert a.is_live("historical", LOCATION, NOW - timedelta(hours=23, minutes=59), NOW, 24)
    assert not a.is_live("historical", LOCATION, NOW - timedelta(hours=24, minutes=1), NOW, 24)
    assert a.is_live("historical", LOCATION, NOW - timedelta(hours=30), NOW, 48)
    assert not a.is_live("historical", LOCATION, None, NOW, 24)
    assert not a.is_live("historical", LOCATION, NOW + timedelta(hours=1), NOW, 24)  # a clock ahead


def test_unknown_sync_mode_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unknown sync_mode 'backfill'"):
        a.is_live("backfill", STORE, NOW, NOW, 24)
    with pytest.raises(ValueError):
        a.is_live(None, STORE, NOW, NOW, 24)


OBJECT_TYPES = ("connection", "contact", "tag", "contact_tag", "list_membership", "ecom_customer", "ecom_order",
                "abandoned_cart")


@given(object_type=st.sampled_from(OBJECT_TYPES), in_crm=st.booleans(), live=st.booleans(),
       is_purchase=st.booleans())
def test_only_a_new_live_write_may_start_an_automation(object_type, in_crm, live, is_purchase):  # B3 B9 S8 S10
    fires = a.may_start_automation(object_type, in_crm=in_crm, live=live, is_purchase=is_purchase)
    expected = (object_type in a.TRIGGERS and not in_crm and live
                and (is_purchase or object_type != "ecom_order"))
    assert fires == expected
    # what the order is sent with: source 1 exactly when it may fire
    assert a.source_flag(fires) == (1 if fires else 0)


def test_a_failed_or_cancelled_payment_never_fires():  # S8 (issue 13: no purchase, no automation)
    assert not a.may_start_automation("ecom_order", in_crm=False, live=True, is_purchase=False)
    assert a.may_start_automation("abandoned_cart", in_crm=False, live=True)


def test_the_audit_counts_writes_per_trigger():
    assert a.audit(["ecom_order", "contact_tag", "ecom_order", "list_membership", "abandoned_cart"]) == {
        "makes_a_purchase": 2, "tag_added": 1, "subscribed_to_list": 1, "abandoned_cart": 1}


@given(column=st.sampled_from(sorted(p.NON_PAYLOAD_COLUMNS)), value=st.one_of(
    st.none(), st.booleans(), st.sampled_from(["historical", "incremental", "catch_up"]),
    st.datetimes(timezones=st.just(UTC))))
def test_non_payload_columns_are_never_sent_nor_hashed(column, value):  # P4
    row = order_row()
    changed = order_row(**{column: value})
    assert p.order_payload(row) == p.order_payload(changed)
    assert p.payload_hash(p.order_payload(row)) == p.payload_hash(p.order_payload(changed))
    assert p.row_hash(row) == p.row_hash(changed)
    assert column not in p.order_payload(changed)


@pytest.mark.parametrize("spelt", ["http://127.0.0.1:8103", "http://localhost:8103/", "HTTP://LocalHost:8103//",
                                   "http://[::1]:8103", " http://127.0.0.1:8103/ "])
def test_one_account_however_its_url_is_spelt(spelt):  # issue 15
    assert account_key(spelt) == "http://localhost:8103"


def test_account_key_drops_default_ports_and_keeps_real_differences():  # issue 15
    assert account_key("https://Acct.API-us1.com:443/") == account_key("https://acct.api-us1.com") == \
        "https://acct.api-us1.com"
    assert account_key("http://acct.example:80") == "http://acct.example"
    assert account_key("https://acct.api-us1.com:8443") != account_key("https://acct.api-us1.com")
    assert account_key("https://one.api-us1.com") != account_key("https://two.api-us1.com")
    with pytest.raises(ValueError):
        account_key("not a url")


def test_bulk_entry_excludes_automations_unless_told_otherwise():  # B9
    contact = {"email": "ada@example.com", "firstName": "Ada", "lastName": "L", "phone": ""}
    assert p.bulk_import_contact(contact, ["bigcommerce-customer"], "3")["exclude_automations"] is True
    assert p.bulk_import_contact(contact, [], None, exclude_automations=False)["exclude_automations"] is False


def test_bulk_batches_hold_at_most_250_contacts():  # B3
    batches = list(p.chunks(range(601), p.BULK_IMPORT_MAX_CONTACTS))
    assert [len(b) for b in batches] == [250, 250, 101]
    assert [x for b in batches for x in b] == list(range(601))
    assert list(p.chunks([], 250)) == []


def test_bulk_entry_subscribes_only_when_given_a_list():  # B7
    contact = p.contact_payload({"email": "ada@example.com", "first_name": "Ada", "last_name": None, "phone": None})
    entry = p.bulk_import_contact(contact, ["bigcommerce-customer"], "3")
    assert entry == {"email": "ada@example.com", "first_name": "Ada", "last_name": "", "phone": "",
                     "tags": ["bigcommerce-customer"], "subscribe": [{"listid": 3}],
                     "exclude_automations": True}
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
    # an update the CRM refused waits too
    assert plan(it, LedgerEntry("7", "old", "synced"), Rejection(it.hash, "field_invalid"))[0] == "skipped"


def test_a_rejection_never_shadows_what_the_ledger_holds():  # issue 15
    it = item()
    # a racing second load got 422 "duplicate" for the payload the first load had pushed
    assert plan(it, LedgerEntry("7", it.hash, "synced"), Rejection(it.hash, "duplicate")) == ("unchanged", "")
    assert plan(it, LedgerEntry("7", "old", "synced"), Rejection("older", "duplicate")) == ("update", "")


def test_list_membership_needs_the_master_list():  # B7
    membership = item("list_membership", "ada@example.com", None)
    assert plan(membership, list_found=False) == ("skipped", "master list missing")
    assert plan(membership)[0] == "create"


def test_plan_summary_counts_and_samples_per_type():
    items = [item(key=f"{STORE}|{n}", payload={"n": n}) for n in range(5)]
    for it, action in zip(items, ["create", "create", "update", "unchanged", "create"]):
        it.action = action
    items[1].fires = True
    summary = plan_summary(items)["ecom_order"]
    assert (summary["create"], summary["update"], summary["unchanged"], summary["skipped"]) == (3, 1, 1, 0)
    assert [s["key"] for s in summary["samples"]] == [f"{STORE}|0", f"{STORE}|1", f"{STORE}|2"]
    assert summary["samples"][0] == {"action": "create", "key": f"{STORE}|0", "payload": {"n": 0}, "source": 0}
    assert summary["samples"][1] == {"action": "create", "key": f"{STORE}|1", "payload": {"n": 1}, "source": 1,
                                     "automation": "makes_a_purchase"}


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


ACTIONS = ("create", "update", "unchanged", "skipped", "remove")


@given(st.lists(st.tuples(st.sampled_from(["contact", "ecom_order", "abandoned_cart"]), st.sampled_from(ACTIONS),
                          st.booleans()), max_size=60), st.integers(min_value=1, max_value=7))
def test_dry_run_plan_is_counts_and_a_bounded_sample_whatever_the_batches(planned, batch):  # P4
    items = []
    for n, (object_type, action, fires) in enumerate(planned):
        it = item(object_type, key=f"{STORE}|{n}", payload={"n": n})
        it.action, it.fires = action, fires and object_type != "contact"
        items.append(it)
    summary = PlanSummary()
    for start in range(0, len(items), batch):
        summary.add(items[start:start + batch])

    assert summary.plan == plan_summary(items)  # batch by batch = all at once
    for object_type, entry in summary.plan.items():
        of_type = [it for it in items if it.object_type == object_type]
        assert {action: entry[action] for action in ACTIONS} == {
            action: sum(it.action == action for it in of_type) for action in ACTIONS}
        assert len(entry["samples"]) == min(3, sum(it.action in ("create", "update", "remove") for it in of_type))
