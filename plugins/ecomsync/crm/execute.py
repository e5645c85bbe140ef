"""Execute one batch of planned CRM writes in dependency order (B3, B4, B6, B7, B10, S6, S10).

connection → contact → tags and list memberships → e-commerce customer → order → abandoned cart. Each CRM id
is written to the ledger the moment the CRM accepted the object; an object without a CRM id in the ledger is
looked up (by external id and connection) before it is created, so a crash or a lost answer never creates it
twice. A 422 (or another 4xx about the record) is recorded in ``sync.rejections`` and the run goes on. An
object whose parent has no CRM id waits (skipped, counted, one warning per kind). Contacts with tags and
subscriptions that may not start an automation go through ``crm/bulk_import.py``; every write's ``fires``
comes from ``automations.may_start_automation`` (asked by the planner). Phases run on ``workers`` threads
sharing the client's token bucket, logging progress at least every ``report.PROGRESS_EVERY_S`` seconds.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from ecomsync.config import CrmSettings
from ecomsync.crm import automations as a
from ecomsync.crm import bulk_import as bi
from ecomsync.crm import payloads as p
from ecomsync.crm import report as rp
from ecomsync.crm.activecampaign import ActiveCampaignClient
from ecomsync.crm.ledger import SyncStore
from ecomsync.crm.plan import Batch, Item
from ecomsync.crm.report import Progress, RunReport
from ecomsync.http import ApiError, AuthError

log = logging.getLogger(__name__)

# Answers that are about the record itself, not the run: the record is rejected, the run goes on.
RECORD_ERROR_STATUSES = frozenset({400, 409, 413, 422})
# Wire fields ActiveCampaign defines for an order; the rest of the planned payload only feeds the hash.
ORDER_WIRE_FIELDS = ("externalid", "externalcheckoutid", "email", "orderNumber", "orderUrl", "totalPrice",
                     "shippingAmount", "taxAmount", "discountAmount", "currency", "shippingMethod",
                     "externalCreatedDate", "externalUpdatedDate", "abandonedDate", "orderProducts",
                     "orderDiscounts")
RUN_WIDE_IDS = frozenset({"connection", "tag"})  # few: their CRM ids are kept for the whole run
WAITING_EXAMPLES = 3


class Executor:
    """Pushes batches of decided items for one run; holds the run's CRM ids of connections and tags and
    the current batch's others."""

    def __init__(self, store: SyncStore, client: ActiveCampaignClient, settings: CrmSettings, report: RunReport,
                 workers: int, master_list_id: str | None):
        self.store, self.client, self.settings, self.report = store, client, settings, report
        self.workers = max(1, workers)
        self.master_list_id = master_list_id
        self.crm_ids: dict[tuple[str, str], str] = store.crm_ids_of_types(tuple(sorted(RUN_WIDE_IDS)))
        self.contacts: dict[str, Item] = {}  # the batch's, by email: what to sync again when the CRM lost one
        self.resynced_contacts = 0
        # Connections this run created in the CRM: nothing can belong to them yet, so their customers,
        # orders and carts need no look-up before their create. A crash after the create leaves the
        # connection in the ledger, so the rerun looks everything up again.
        self.new_connections: set[str] = set()
        self.lock = threading.Lock()
        # (object type, missing parent) → (objects that wait for it, a few of their keys)
        self.waiting: dict[tuple[str, str], tuple[int, list[str]]] = {}
        # Object types with something owed to the next run that no fingerprint of ``crm/skip.py`` covers (the CRM
        # lookup found no contact to link; the CRM lost a contact with its tags and subscription): their mart is
        # not recorded as settled, so the next load reads it again.
        self.owed: set[str] = set()
        self.pool: ThreadPoolExecutor | None = None

    def push_batch(self, batch: Batch) -> None:
        """Push one batch's items in dependency order; each CRM id lands in the ledger as the CRM answers."""
        self.contacts = batch.contacts
        self.begin_batch(batch)
        by_type: dict[str, list[Item]] = {t: [] for t in p.OBJECT_TYPES}
        for item in batch.items:
            if item.action in ("unchanged", "skipped"):
                self.report.count(item.object_type, item.action)
            else:
                by_type[item.object_type].append(item)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="crm-push") as self.pool:
            self.push_in_order(by_type, batch.items)

    def begin_batch(self, batch: Batch) -> None:
        """Known CRM ids for this batch: its objects' (from the ledger entries the planner read) and their
        parents' — customers and carts of orders, contacts of tags and subscriptions. Connections and tags
        (few) are kept for the whole run; the rest is dropped after each batch, so memory follows the batch."""
        self.crm_ids = {key: crm_id for key, crm_id in self.crm_ids.items() if key[0] in RUN_WIDE_IDS}
        self.crm_ids |= {key: entry.crm_id for key, entry in batch.ledger.items() if entry.crm_id}
        parents = set()
        for item in batch.items:
            if item.object_type in ("ecom_order", "abandoned_cart") and item.payload.get("customer_key"):
                parents.add(("ecom_customer", item.payload["customer_key"]))
            if item.object_type == "ecom_order":
                parents.add(("abandoned_cart", item.natural_key))
            if item.object_type in bi.LINKS:
                parents.add(("contact", item.payload["email"]))
        parents -= set(self.crm_ids)
        self.crm_ids |= {key: entry.crm_id for key, entry in self.store.ledger_for(sorted(parents)).items()
                         if entry.crm_id}

    def finish(self) -> None:
        """The run's warnings about what the push could not do."""
        if self.resynced_contacts:
            self.warn(f"{self.resynced_contacts} contact(s) were gone from the CRM (deleted there?): synced "
                      "again by email; their other tags and list memberships are sent again by the next run")
        for (object_type, what), (n, examples) in sorted(self.waiting.items()):
            self.warn(f"{n} {object_type} record(s) skipped: their {what} has no CRM id (rejected, skipped "
                      f"or not pushed yet), e.g. {', '.join(sorted(examples))}")
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
        Above ``bulk_import_threshold`` changed contacts in the batch (a contacts batch holds more rows than the
        threshold, ``push.Load.rows_per_batch``), every contact is bulk-imported, each entry excluding
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
            bi.import_contacts(self, contacts, items, allowed)
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
        if self.pool is None:
            raise RuntimeError("Executor.each outside push_batch: no worker pool")
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
            if exc.looked_up:
                with self.lock:
                    self.owed.add(item.object_type)

    def wait_for(self, item: Item, what: str) -> None:
        """``item`` is skipped until its ``what`` (connection, customer, contact) has a CRM id."""
        self.report.count(item.object_type, "skipped")
        with self.lock:
            n, examples = self.waiting.get((item.object_type, what), (0, []))
            self.waiting[(item.object_type, what)] = (n + 1, [*examples, item.natural_key][:WAITING_EXAMPLES])

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
        self.report.reject(object_type, natural_key, http_status, code)
        log.warning("%s %s %s", object_type, natural_key, why)

    def done(self, item: Item, crm_id: str | None, outcome: str, status: str = "synced") -> None:
        self.store.record_pushed(item.object_type, item.natural_key, item.connection_id, crm_id, item.hash,
                                 self.report.run_id, status, item.row_hash)
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
            if item.object_type == "connection" and item.connection_id is not None:
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
        self.done(item, self.client.sync_contact(item.payload), bi.outcome_of(item))

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
                raise MissingDependency("contact", looked_up=True)
            self.crm_ids[("contact", email)] = crm_id
        return crm_id

    def push_contact_tag(self, item: Item) -> None:
        tag_id = self.crm_ids[("tag", item.payload["tag"])]
        self.link_contact(item, lambda contact_id: self.client.add_contact_tag(contact_id, tag_id), "created")

    def push_list_membership(self, item: Item) -> None:
        assert self.master_list_id is not None  # decide() skipped them otherwise
        list_id = self.master_list_id
        self.link_contact(item, lambda contact_id: self.client.subscribe(contact_id, list_id), bi.outcome_of(item))

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
        self.store.record_pushed("contact", email, None, live_id, contact.hash, self.report.run_id,
                                 row_hash=contact.row_hash)
        self.crm_ids[("contact", email)] = live_id
        if live_id != known_id:
            self.store.forget_contact_links(email)
            with self.lock:
                self.resynced_contacts += 1
                self.owed |= {"contact_tag", "list_membership"}
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
        self.report.warn(message)



class MissingDependency(Exception):
    """An object's parent (connection, customer, contact) has no CRM id: the object waits for a later run.

    ``looked_up``: the CRM was asked and had none (not decided by the ledger alone)."""

    def __init__(self, what: str, looked_up: bool = False):
        super().__init__(f"its {what} has no CRM id")
        self.what, self.looked_up = what, looked_up


def _unless_not_found(call: Callable[[str], Any], crm_id: str) -> tuple[Any, ApiError | None]:
    """``call(crm_id)``'s answer, or the 404 saying the CRM has no such object."""
    try:
        return call(crm_id), None
    except ApiError as exc:
        if exc.status != 404:
            raise
        return None, exc


