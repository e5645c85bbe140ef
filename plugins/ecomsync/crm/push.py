"""Push exactly the deltas of the crm marts to ActiveCampaign (P4, B3, B4, B6, B7, B9, B10, B11, S6, S8, S9, S10).

One run:
1. takes the CRM account's advisory lock (two loads never interleave) and opens a report row;
2. reads the crm marts and the ledger, and plans every CRM object: create, update, unchanged,
   skipped (disabled connection, missing dependency, earlier rejection with the same payload);
3. unless it is a dry run, pushes in dependency order — connection → contact → tags and list
   memberships → e-commerce customer → order → abandoned cart — writing each CRM id to the
   ledger the moment the CRM accepted it. An object without a CRM id in the ledger is looked
   up (by external id and connection) before it is created, so a crash or a lost answer
   never creates it twice;
4. writes the run report: counts per object type, requests, warnings, and for a dry run the plan.

A 422 (or another 4xx about the record) is recorded in ``sync.rejections`` and the run goes on;
the record is retried when its payload changes or when the run asks to retry rejections. A mart
row the load cannot turn into a payload (money not in integer cents, unknown ``sync_mode``,
naive timestamp) is recorded there too (``invalid_mart_row``) and never sent.
A disabled connection's records are skipped and nothing of it is deleted (B11, S9). The one deletion:
an order the ledger pushed that the marts now exclude (``crm.excluded_records``, record type ``order``:
archived, failed or cancelled payment …) is taken out of the CRM's figures (``DELETE ecomOrders/{id}``),
its ledger row marked ``removed`` with the reason, counted as ``removed``.

Automations: every write asks ``ecomsync.crm.automations.may_start_automation`` (issue 14). Tags and list
subscriptions that may not start one go through ``import/bulk_import`` with ``exclude_automations``
whatever their number; an order is sent with ``source`` 1 only on the create of a new live purchase. The
run report's ``automations`` counts, per trigger, the writes that could start one (a dry run: the planned
ones). Each phase logs its progress (planned / done / rejected, requests, rate) at least every
``PROGRESS_EVERY_S`` seconds.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

import psycopg2.errors

from ecomsync.config import CrmSettings
from ecomsync.crm import automations as a
from ecomsync.crm import bulk_import as bi
from ecomsync.crm import payloads as p
from ecomsync.crm import report as rp
from ecomsync.crm.activecampaign import ActiveCampaignClient, account_key
from ecomsync.crm.ledger import LedgerEntry, Rejection, SyncStore
from ecomsync.crm.plan import INVALID_MART_ROW, MART_TABLES, Item, decide
from ecomsync.crm.report import Progress, RunReport, plan_summary
from ecomsync.http import ApiError, AuthError

log = logging.getLogger(__name__)

MODES = ("normal", "dry_run", "full_resync")
# Answers that are about the record itself, not the run: the record is rejected, the run goes on.
RECORD_ERROR_STATUSES = frozenset({400, 409, 413, 422})
# Wire fields ActiveCampaign defines for an order; the rest of the planned payload only feeds the hash.
ORDER_WIRE_FIELDS = ("externalid", "externalcheckoutid", "email", "orderNumber", "orderUrl", "totalPrice",
                     "shippingAmount", "taxAmount", "discountAmount", "currency", "shippingMethod",
                     "externalCreatedDate", "externalUpdatedDate", "abandonedDate", "orderProducts",
                     "orderDiscounts")


def run_push(wh_url: str, client: ActiveCampaignClient, crm_settings: CrmSettings, *, run_id: str,
             mode: str = "normal", enabled_connections: set[str], retry_rejected: bool = False,
             workers: int = 4) -> RunReport:
    """One load of the CRM account behind ``client``; ``workers`` threads share its token bucket."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    store = SyncStore(wh_url)
    try:
        store.ensure_schema()
        store.acquire_account_lock(client.account)  # keyed on the normalised account: one lock however it is spelt
        report = RunReport(run_id=run_id, mode=mode, started_at=datetime.now(UTC))
        interrupted = store.mark_interrupted_reports(client.account, run_id,
                                                     lambda spelt: _same_account(spelt, client.account_key))
        if interrupted:
            report.warnings.append(f"{len(interrupted)} earlier load(s) of this account stopped without finishing "
                                   f"(killed?); their run reports are now 'interrupted': {', '.join(interrupted)}")
            log.warning("%s", report.warnings[-1])
        store.start_report(run_id, client.account, mode, report.started_at)
        requests_before = client.requests_made
        try:
            Push(store, client, crm_settings, report, enabled_connections, retry_rejected, workers).run()
            report.status = "success"
        except BaseException as exc:
            report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            report.finished_at = datetime.now(UTC)
            report.requests = client.requests_made - requests_before
            store.finish_report(run_id, report.started_at, finished_at=report.finished_at, status=report.status,
                                counts=report.counts, requests=report.requests, warnings=report.warnings,
                                plan=report.plan, error=report.error, automations=report.automations)
            log.info("CRM load %s (%s): %s; %d requests; counts %s; automations %s; warnings %s", run_id, mode,
                     report.status, report.requests, report.counts, report.automations, report.warnings)
        return report
    finally:
        store.release_account_lock()
        store.close()


class Push:
    def __init__(self, store: SyncStore, client: ActiveCampaignClient, settings: CrmSettings, report: RunReport,
                 enabled_connections: set[str], retry_rejected: bool, workers: int):
        self.store, self.client, self.settings, self.report = store, client, settings, report
        self.enabled = set(enabled_connections)
        self.retry_rejected = retry_rejected
        self.workers = max(1, workers)
        self.ledger: dict[tuple[str, str], LedgerEntry] = {}
        self.rejected: dict[tuple[str, str], Rejection] = {}
        self.crm_ids: dict[tuple[str, str], str] = {}
        self.contacts: dict[str, Item] = {}  # by email: what to sync again when the CRM lost a contact
        self.resynced_contacts: set[str] = set()
        self.master_list_id: str | None = None
        # Connections this run created in the CRM: nothing can belong to them yet, so their customers,
        # orders and carts need no look-up before their create. A crash after the create leaves the
        # connection in the ledger, so the rerun looks everything up again.
        self.new_connections: set[str] = set()
        self.lock = threading.Lock()
        # (object type, missing parent) → keys of the objects that wait for it
        self.waiting: dict[tuple[str, str], list[str]] = {}
        self.pool: ThreadPoolExecutor | None = None

    # -- planning -----------------------------------------------------------------------------
    def run(self) -> None:
        marts = self.read_marts()
        if self.report.mode != "dry_run":
            self.store.clear_shadowing_rejections()
        self.ledger, self.rejected = self.store.ledger(), self.store.rejections()
        self.crm_ids = {key: entry.crm_id for key, entry in self.ledger.items() if entry.crm_id}
        if self.settings.master_list_rule_applies:
            self.master_list_id = self.client.find_list(self.settings.master_list_name)
            if self.master_list_id is None:
                self.warn(f"master list {self.settings.master_list_name!r} not found in the CRM (renamed or "
                          "deleted?): no contact was subscribed to it (B7)")
        items = self.plan(marts)
        if self.report.mode == "dry_run":
            self.report.plan = plan_summary(items)
            self.report.automations = a.audit(item.object_type for item in items if item.fires)
            for item in items:
                if item.action in ("unchanged", "skipped"):
                    self.report.count(item.object_type, item.action)
            return
        self.push(items)

    def read_marts(self) -> dict[str, list[dict[str, Any]]]:
        marts = {}
        for table in MART_TABLES:
            try:
                marts[table] = self.store.query(f"select * from crm.{table}")
            except psycopg2.errors.UndefinedTable:
                raise RuntimeError(f"crm.{table} does not exist: run the transform (dbt build) before the load") \
                    from None
        try:
            marts["excluded_orders"] = self.store.query(
                "select connection_id, external_id, reason from crm.excluded_records where record_type = 'order'")
        except psycopg2.errors.UndefinedTable:
            raise RuntimeError("crm.excluded_records does not exist: run the transform (dbt build) "
                               "before the load") from None
        if marts["ecom_orders"] and "is_purchase" not in marts["ecom_orders"][0]:
            self.warn("crm.ecom_orders has no is_purchase column (marts older than the load): every new live "
                      "order is taken for a purchase — rebuild the marts")
        return marts

    def plan(self, marts: dict[str, list[dict[str, Any]]]) -> list[Item]:
        items: list[Item] = []
        malformed: dict[str, int] = {}
        for table, (object_type, key_column) in MART_TABLES.items():
            for row in marts[table]:
                try:
                    items.extend(self.items_of_row(table, row))
                except (ValueError, TypeError) as exc:
                    # One bad row must not cost the rest of the batch: it is rejected with the reason.
                    self.record_rejection(object_type, str(row.get(key_column)), row.get("connection_id"),
                                          p.row_hash(row), None, INVALID_MART_ROW,
                                          {"errors": [{"code": INVALID_MART_ROW, "detail": f"crm.{table}: {exc}"}]},
                                          f"not sent, malformed crm.{table} row: {exc}")
                    malformed[table] = malformed.get(table, 0) + 1
        for table, n in malformed.items():
            self.warn(f"{n} crm.{table} row(s) malformed and not sent: see sync.rejections "
                      f"(error_code {INVALID_MART_ROW}) and fix the model")
        for item in items:
            self.decide(item)
        items.extend(self.removals(marts["excluded_orders"], {i.natural_key for i in items
                                                              if i.object_type == "ecom_order"}))
        self.decide_automations(items)
        self.warn_about_skips(items)
        return items

    def items_of_row(self, table: str, row: dict[str, Any]) -> list[Item]:
        """The CRM objects one mart row asks for; ValueError or TypeError when the row is malformed."""
        if table == "connections":
            return [Item("connection", row["connection_id"], row["connection_id"], p.connection_payload(row))]
        if table == "contacts":
            email = row["email"]
            contact = Item("contact", email, None, p.contact_payload(row))
            items = [contact] + [Item("contact_tag", f"{email}|{tag}", None, {"email": email, "tag": tag})
                                 for tag in sorted(row["tags"] or [])]
            if self.settings.master_list_rule_applies and row["accepts_marketing"]:
                items.append(Item("list_membership", email, None,
                                  {"email": email, "list": self.settings.master_list_name}))
            self.contacts[email] = contact
            return items
        if table == "ecom_customers":
            return [Item("ecom_customer", row["ecom_customer_key"], row["connection_id"], p.ecom_customer_payload(row))]
        if table == "ecom_orders":
            # Marts from before is_purchase take every order for one (with a warning); a null is no purchase.
            return [Item("ecom_order", row["order_key"], row["connection_id"], p.order_payload(row),
                         live=self.is_live(row, row["external_created_at"]),
                         is_purchase=bool(row["is_purchase"]) if "is_purchase" in row else True)]
        return [Item("abandoned_cart", row["cart_key"], row["connection_id"], p.cart_payload(row),
                     live=self.is_live(row, row.get("external_created_at")))]

    def is_live(self, row: dict[str, Any], placed_at: datetime | None) -> bool:
        return a.is_live(row["sync_mode"], row["connection_id"], placed_at, self.report.started_at,
                         self.settings.realtime_window_hours)

    def decide(self, item: Item) -> None:
        key = (item.object_type, item.natural_key)
        item.action, item.reason = decide(item, self.ledger.get(key), self.rejected.get(key), mode=self.report.mode,
                                          enabled_connections=self.enabled,
                                          master_list_found=self.master_list_id is not None,
                                          retry_rejected=self.retry_rejected)

    def removals(self, excluded: list[dict[str, Any]], wanted: set[str]) -> list[Item]:
        """Orders the ledger pushed that the marts now exclude (archived, failed, cancelled …): to be taken out
        of the CRM's figures. A disabled connection's are skipped: nothing of it is deleted (B11)."""
        items = []
        for row in excluded:
            key = f"{row['connection_id']}|{row['external_id']}"
            entry = self.ledger.get(("ecom_order", key))
            if key in wanted or entry is None or entry.crm_id is None or entry.status not in ("synced", "recovered"):
                continue
            item = Item("ecom_order", key, row["connection_id"], {"excluded": row["reason"]}, action="remove",
                        reason=str(row["reason"]))
            if item.connection_id not in self.enabled:
                item.action, item.reason = "skipped", "connection disabled"
            items.append(item)
        return items

    def decide_automations(self, items: list[Item]) -> None:
        """Ask ``may_start_automation`` for every planned object: tags and list memberships last, as a contact is
        live when one of its orders or carts may start an automation in this run (B3: tagged when they buy)."""
        def ask(item: Item) -> bool:
            in_crm = (item.object_type, item.natural_key) in self.ledger or item.action != "create"
            return a.may_start_automation(item.object_type, in_crm=in_crm, live=item.live,
                                          is_purchase=item.is_purchase)

        links = ("contact_tag", "list_membership")
        for item in items:  # connections, contacts, tags and customers ask too: the answer is no
            if item.object_type not in links:
                item.fires = ask(item)
        live_contacts = {item.payload["email"] for item in items if item.fires}
        for item in items:
            if item.object_type in links:
                item.live = item.payload["email"] in live_contacts
                item.fires = ask(item)

    def warn_about_skips(self, items: list[Item]) -> None:
        """One warning per reason (the missing master list already has its own)."""
        hints = {"connection disabled": "nothing in the CRM was deleted (B11, S9)",
                 "rejected before, payload unchanged": "fix the data or run with retry_rejected"}
        by_reason: dict[tuple[str, str], int] = {}
        for item in items:
            if item.action == "skipped" and item.reason in hints:
                scope = item.connection_id if item.reason == "connection disabled" else item.object_type
                by_reason[(item.reason, scope)] = by_reason.get((item.reason, scope), 0) + 1
        for (reason, scope), n in sorted(by_reason.items()):
            self.warn(f"{n} record(s) of {scope} skipped: {reason} — {hints[reason]}")

    # -- pushing ------------------------------------------------------------------------------
    def push(self, items: list[Item]) -> None:
        by_type: dict[str, list[Item]] = {t: [] for t in p.OBJECT_TYPES}
        for item in items:
            if item.action in ("unchanged", "skipped"):
                self.report.count(item.object_type, item.action)
            else:
                by_type[item.object_type].append(item)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="crm-push") as self.pool:
            self.push_in_order(by_type, items)
        if self.resynced_contacts:
            self.warn(f"{len(self.resynced_contacts)} contact(s) were gone from the CRM (deleted there?): synced "
                      "again by email; their other tags and list memberships are sent again by the next run")
        for (object_type, what), keys in sorted(self.waiting.items()):
            self.warn(f"{len(keys)} {object_type} record(s) skipped: their {what} has no CRM id (rejected, skipped "
                      f"or not pushed yet), e.g. {', '.join(sorted(keys)[:3])}")
        removed = self.report.counts.get("ecom_order", {}).get("removed", 0)
        if removed:
            self.warn(f"{removed} order(s) pushed earlier are now excluded by the marts (see crm.excluded_records) "
                      "and were deleted from the CRM; sync.ledger keeps them as 'removed' with the reason")

    def push_in_order(self, by_type: dict[str, list[Item]], items: list[Item]) -> None:
        """connection → contact → tags and lists → e-commerce customer → order → abandoned cart."""
        self.each("connections", by_type["connection"], self.push_connection)
        self.push_contacts(by_type, items)
        self.each("e-commerce customers", by_type["ecom_customer"], self.push_ecom_customer)
        self.each("orders", by_type["ecom_order"], self.push_order)
        self.each("abandoned carts", by_type["abandoned_cart"], self.push_cart)

    def push_contacts(self, by_type: dict[str, list[Item]], items: list[Item]) -> None:
        """Contacts with their tags and list memberships, by the path their automations allow.

        A contact with a new tag or subscription that may not start an automation (history, B9/S8) goes
        through ``import/bulk_import`` with ``exclude_automations`` — whatever the number of such contacts.
        Above ``bulk_import_threshold`` changed contacts, every contact is bulk-imported, each entry excluding
        automations unless all its new links may start one. The rest: ``contact/sync``, then ``contactTags``
        and ``contactLists`` one by one — the way the native integration tags a live new customer (B3).
        """
        links: dict[str, list[Item]] = {}
        for link in by_type["contact_tag"] + by_type["list_membership"]:
            if self.contacts[link.payload["email"]].action == "skipped":  # e.g. rejected before: links wait
                self.wait_for(link, "contact")
                continue
            links.setdefault(link.payload["email"], []).append(link)
        by_type = {**by_type, **{t: [i for i in by_type[t] if i.payload["email"] in links]
                                 for t in ("contact_tag", "list_membership")}}
        quiet = {email for email, pending in links.items() if not all(link.fires for link in pending)}
        changed = {item.natural_key: item for item in by_type["contact"]}
        if len(set(changed) - quiet) > self.settings.bulk_import_threshold:
            bulk = quiet | set(changed) | set(links)
        else:
            bulk = quiet
        if bulk:
            contacts = [changed.get(email) or self.contacts[email] for email in sorted(bulk)]
            allowed = {email for email in bulk if email in links and email not in quiet}
            self.bulk_import_contacts(contacts, items, allowed)
        self.each("contacts", [item for email, item in changed.items() if email not in bulk], self.push_contact)
        singles = {t: [i for i in by_type[t] if i.payload["email"] not in bulk]
                   for t in ("contact_tag", "list_membership")}
        self.resolve_tags({item.payload["tag"] for item in singles["contact_tag"]})
        self.each("contact tags", singles["contact_tag"], self.push_contact_tag)
        self.each("list memberships", singles["list_membership"], self.push_list_membership)

    def each(self, phase: str, items: list[Item], push_one: Callable[[Item], None]) -> None:
        """Push one phase in parallel; the shared token bucket keeps the account at its rate."""
        if not items:
            return
        progress = Progress(phase, len(items), self.client, self.report, {item.object_type for item in items})
        futures = [self.pool.submit(self.guarded, push_one, item) for item in items]
        pending = set(futures)
        failed = False
        while pending and not failed:
            done, pending = wait(pending, timeout=rp.PROGRESS_EVERY_S, return_when=FIRST_EXCEPTION)
            failed = any(future.exception() is not None for future in done)
            progress.log(len(futures) - len(pending))
        for future in pending:
            future.cancel()
        wait([future for future in pending if not future.cancelled()])
        for future in futures:
            if future.done() and not future.cancelled():
                future.result()  # a CRM outage or expired token ends the run; the rerun catches up (B10)
        progress.log(len(futures), final=True)

    def guarded(self, push_one: Callable[[Item], None], item: Item) -> None:
        try:
            push_one(item)
        except AuthError:
            raise
        except ApiError as exc:
            if exc.status == 404 and item.action == "update":
                # Someone deleted it in the CRM: forget the id, look it up or create it again.
                self.store.forget_crm_id(item.object_type, item.natural_key)
                self.crm_ids.pop((item.object_type, item.natural_key), None)
                item.action = "create"
                self.guarded(push_one, item)
            elif exc.status in RECORD_ERROR_STATUSES:
                self.reject(item, exc)
            else:
                raise
        except MissingDependency as exc:
            self.wait_for(item, exc.what)

    def wait_for(self, item: Item, what: str) -> None:
        """``item`` is skipped until its ``what`` (connection, customer, contact) has a CRM id."""
        self.report.count(item.object_type, "skipped")
        with self.lock:
            self.waiting.setdefault((item.object_type, what), []).append(item.natural_key)

    def reject(self, item: Item, exc: ApiError) -> None:
        errors = (exc.body or {}).get("errors") if isinstance(exc.body, dict) else None
        code = next((e.get("code") for e in errors or [] if isinstance(e, dict) and e.get("code")), None)
        self.record_rejection(item.object_type, item.natural_key, item.connection_id, item.hash, exc.status, code,
                              exc.body if exc.body is not None else str(exc),
                              f"rejected by the CRM: HTTP {exc.status} {code}")

    def record_rejection(self, object_type: str, natural_key: str, connection_id: str | None, payload_hash: str,
                         http_status: int | None, code: str | None, error: Any, why: str) -> None:
        if self.report.mode != "dry_run":  # a dry run writes nothing but its report
            self.store.record_rejection(object_type, natural_key, connection_id, payload_hash, http_status, code,
                                        error, self.report.run_id)
        self.report.count(object_type, "rejected")
        self.report.rejections.append({"object_type": object_type, "key": natural_key, "status": http_status,
                                       "code": code})
        log.warning("%s %s %s", object_type, natural_key, why)

    def done(self, item: Item, crm_id: str | None, outcome: str, status: str = "synced") -> None:
        self.store.record_pushed(item.object_type, item.natural_key, item.connection_id, crm_id, item.hash,
                                 self.report.run_id, status)
        if crm_id is not None:
            self.crm_ids[(item.object_type, item.natural_key)] = crm_id
        self.report.count(item.object_type, outcome)

    def crm_id(self, item: Item) -> str | None:
        return self.crm_ids.get((item.object_type, item.natural_key))

    def upsert(self, item: Item, wire: dict[str, Any], look_up: Callable[[], str | None],
               create: Callable[[dict], str], update: Callable[[str, dict], None]) -> None:
        """Update by the ledger's id; without one, look up first (no idempotency key), then create."""
        crm_id = self.crm_id(item) or look_up()
        if crm_id is None:
            self.done(item, create(wire), "created")
            if item.object_type == "connection":
                with self.lock:
                    self.new_connections.add(item.connection_id)
        else:
            update(crm_id, wire)
            self.done(item, crm_id, "updated")

    def push_connection(self, item: Item) -> None:
        wire = item.payload
        self.upsert(item, wire, lambda: self.client.find_connection(wire["service"], wire["externalid"]),
                    self.client.create_connection, self.client.update_connection)

    def push_contact(self, item: Item) -> None:
        # contact/sync upserts by email: no look-up needed, and repeating it is harmless.
        self.done(item, self.client.sync_contact(item.payload), _outcome(item))

    def bulk_import_contacts(self, contacts: list[Item], items: list[Item], automations_allowed: set[str]) -> None:
        """``import/bulk_import`` with tags by name and the list subscription (≤ 250 a call).

        Each entry sets ``exclude_automations`` unless its email is in ``automations_allowed`` (every new
        link of it may start an automation: ``may_start_automation``). The import writes a contact's tags
        and list status too, so its tag and list items are done with it (or skipped with it when the CRM
        refuses the contact). A contact sent only for its links (its own payload unchanged) is not counted.
        """
        tags, subscribed, links = bi.links_by_email(items)
        progress = Progress("bulk import", len(contacts), self.client, self.report, {"contact"})
        for number, batch in enumerate(p.chunks(contacts, p.BULK_IMPORT_MAX_CONTACTS)):
            entries = {item.natural_key: p.bulk_import_contact(
                item.payload, tags.get(item.natural_key, []),
                self.master_list_id if item.natural_key in subscribed else None,
                exclude_automations=item.natural_key not in automations_allowed) for item in batch}
            imported = bi.import_batch(self.client, batch, entries, self.reject)
            for item in batch:
                accepted = item.natural_key in imported
                if accepted and item.action in ("create", "update"):
                    self.done(item, None, _outcome(item))
                if accepted and ("contact", item.natural_key) in self.crm_ids:
                    # The import upserts by email and answers no id: had the CRM lost the contact, the id
                    # known is stale. Forget it; a later tag or subscription looks the contact up by email.
                    self.store.forget_crm_id("contact", item.natural_key)
                    with self.lock:
                        self.crm_ids.pop(("contact", item.natural_key), None)
                for link in links.get(item.natural_key, []):
                    if accepted:
                        self.done(link, None, _outcome(link))
                        if item.natural_key in automations_allowed:
                            self.report.count_automation(link.object_type)
                    else:
                        self.report.count(link.object_type, "skipped")
            progress.log(min(len(contacts), (number + 1) * p.BULK_IMPORT_MAX_CONTACTS))
        progress.log(len(contacts), final=True)

    def resolve_tags(self, names: set[str]) -> None:
        for name in sorted(names):
            if ("tag", name) in self.crm_ids:
                continue
            tag_id = self.client.find_tag(name)
            outcome = "unchanged"
            if tag_id is None:
                tag_id, outcome = self.client.create_tag(name), "created"
            tag = Item("tag", name, None, {"tag": name})
            self.done(tag, tag_id, outcome)

    def contact_id(self, email: str) -> str:
        crm_id = self.crm_ids.get(("contact", email))
        if crm_id is None:
            crm_id = self.client.find_contact(email)
            if crm_id is None:
                raise MissingDependency("contact")
            self.crm_ids[("contact", email)] = crm_id
        return crm_id

    def push_contact_tag(self, item: Item) -> None:
        tag_id = self.crm_ids[("tag", item.payload["tag"])]
        self.link_contact(item, lambda contact_id: self.client.add_contact_tag(contact_id, tag_id), "created")

    def push_list_membership(self, item: Item) -> None:
        assert self.master_list_id is not None  # decide() skipped them otherwise
        list_id = self.master_list_id
        self.link_contact(item, lambda contact_id: self.client.subscribe(contact_id, list_id), _outcome(item))

    @staticmethod
    def ensure_may_fire(item: Item) -> None:
        """contactTags and contactLists start automations and have no switch against it: only a link that
        ``may_start_automation`` allows may take them (push_contacts routes the rest to a bulk import)."""
        if not item.fires:
            raise RuntimeError(f"{item.object_type} {item.natural_key}: would start an automation it may not "
                               "(routing error in push_contacts)")

    def link_contact(self, item: Item, link: Callable[[str], str | None], outcome: str) -> None:
        """Tag or subscribe a contact by its CRM id.

        A 404 means the id is stale — the contact was deleted in the CRM: sync the contact again by email
        (``contact/sync`` answers its live id, creating it if need be) and try once more. A 404 for the live
        id is about something else (the tag or the list): the link is rejected.
        """
        self.ensure_may_fire(item)
        email = item.payload["email"]
        known_id = self.contact_id(email)
        crm_id, not_found = _unless_not_found(link, known_id)
        if not_found is not None:
            live_id = self.resync_contact(email, known_id)
            if live_id != known_id:
                crm_id, not_found = _unless_not_found(link, live_id)
        if not_found is not None:
            self.reject(item, not_found)
        else:
            self.done(item, crm_id, outcome)
            self.report.count_automation(item.object_type)

    def resync_contact(self, email: str, known_id: str) -> str:
        """The contact's live CRM id. A new id means the CRM lost the contact, and with it its tags and list
        membership: the ledger forgets those, so the next run sends them again."""
        contact = self.contacts[email]
        live_id = self.client.sync_contact(contact.payload)
        self.store.record_pushed("contact", email, None, live_id, contact.hash, self.report.run_id)
        self.crm_ids[("contact", email)] = live_id
        if live_id != known_id:
            self.store.forget_contact_links(email)
            with self.lock:
                self.resynced_contacts.add(email)
        return live_id

    def dependency(self, object_type: str, key: str | None, what: str) -> str:
        crm_id = self.crm_ids.get((object_type, key)) if key else None
        if crm_id is None:
            raise MissingDependency(what)
        return crm_id

    def unless_new_connection(self, item: Item, look_up: Callable[[], str | None]) -> Callable[[], str | None]:
        return (lambda: None) if item.connection_id in self.new_connections else look_up

    def push_ecom_customer(self, item: Item) -> None:
        connection = self.dependency("connection", item.connection_id, "connection")
        wire = {k: v for k, v in item.payload.items() if k != "connection_id"} | {"connectionid": connection}
        look_up = self.unless_new_connection(
            item, lambda: self.client.find_ecom_customer(connection, wire["externalid"]))
        self.upsert(item, wire, look_up, self.client.create_ecom_customer, self.client.update_ecom_customer)

    def order_wire(self, item: Item) -> dict[str, Any]:
        """The order or cart as ActiveCampaign takes it, without ``source`` (set by ``write_order``)."""
        wire = {k: item.payload[k] for k in ORDER_WIRE_FIELDS if k in item.payload}
        wire["connectionid"] = self.dependency("connection", item.connection_id, "connection")
        wire["customerid"] = self.dependency("ecom_customer", item.payload["customer_key"], "customer")
        return wire

    def write_order(self, item: Item, wire: dict[str, Any], existing_id: str | None, *, purchase_of: str | None = None
                    ) -> None:
        """Create the order or cart, or update the CRM's record ``existing_id``, with its ``source`` flag.

        ``source`` 1 only when ``may_start_automation`` allowed it (``item.fires``: a new live purchase or
        cart) and the CRM does not have it: an update — including the rerun after a crash between a create
        and its ledger row, whose look-up finds the order — always sends 0. The one update that is a
        creation: ``purchase_of``, the CRM's cart record that becomes this order (a recovered cart).
        """
        fires = item.fires and (existing_id is None or purchase_of is not None)
        wire = {**wire, "source": a.source_flag(fires)}
        if existing_id is None:
            self.done(item, self.client.create_ecom_order(wire), "created")
        else:
            self.client.update_ecom_order(existing_id, wire)
            self.done(item, existing_id, "updated")
        if fires:
            self.report.count_automation(item.object_type)

    def push_order(self, item: Item) -> None:
        if item.action == "remove":
            self.remove_order(item)
            return
        wire = self.order_wire(item)
        existing_id = self.crm_id(item)
        if existing_id is None and item.connection_id not in self.new_connections:
            existing_id = self.client.find_ecom_order(wire["connectionid"], externalid=wire["externalid"])
        # A recovered cart: the same CRM record becomes the order (PUT with the order's externalid).
        cart_key = ("abandoned_cart", item.natural_key)
        cart_id = self.crm_ids.get(cart_key) if existing_id is None else None
        self.write_order(item, wire, existing_id or cart_id, purchase_of=cart_id)
        if cart_id is not None:
            self.store.mark_status(*cart_key, "recovered", self.report.run_id)

    def remove_order(self, item: Item) -> None:
        """Take an order the marts now exclude out of the CRM's figures; the ledger keeps why."""
        crm_id = self.crm_id(item)
        if crm_id is not None:
            self.client.delete_ecom_order(crm_id)  # already gone (404) is as good
        self.store.record_removed(item.object_type, item.natural_key, item.reason, self.report.run_id)
        with self.lock:
            self.crm_ids.pop((item.object_type, item.natural_key), None)
        self.report.count(item.object_type, "removed")

    def push_cart(self, item: Item) -> None:
        wire = self.order_wire(item)
        existing_id = self.crm_id(item)
        if existing_id is None and item.connection_id not in self.new_connections:
            existing_id = self.client.find_ecom_order(wire["connectionid"],
                                                      externalcheckoutid=wire["externalcheckoutid"])
        self.write_order(item, wire, existing_id)

    def warn(self, message: str) -> None:
        if message not in self.report.warnings:
            self.report.warnings.append(message)
            log.warning("%s", message)


class MissingDependency(Exception):
    """An object's parent (connection, customer, contact) has no CRM id: the object waits for a later run."""

    def __init__(self, what: str):
        super().__init__(f"its {what} has no CRM id")
        self.what = what


def _outcome(item: Item) -> str:
    """For upserts that cannot tell (contact/sync, list status, bulk import): new to the ledger means created."""
    return "created" if item.action == "create" else "updated"


def _unless_not_found(call: Callable[[str], Any], crm_id: str) -> tuple[Any, ApiError | None]:
    """``call(crm_id)``'s answer, or the 404 saying the CRM has no such object."""
    try:
        return call(crm_id), None
    except ApiError as exc:
        if exc.status != 404:
            raise
        return None, exc


def _same_account(spelt: str, key: str) -> bool:
    """Whether a report's account URL names the account ``key`` (a URL that cannot be parsed names none)."""
    try:
        return account_key(spelt) == key
    except ValueError:
        return False
