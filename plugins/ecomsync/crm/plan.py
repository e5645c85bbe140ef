"""What the load plans for the CRM objects of one batch of streamed mart rows (``crm/diff.py``).

``Item``: one CRM object with its payload; ``decide``: its action from its ledger entry and rejection (create,
update, unchanged, skipped); ``Planner``: a batch of mart rows → items, each decided, each asked whether its
write may start an automation (``automations.may_start_automation``, the one decision point). Malformed rows
become rejections (``invalid_mart_row``) through the callback the load gives, never a crash of the batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from ecomsync.config import CrmSettings
from ecomsync.crm import automations as a
from ecomsync.crm import payloads as p
from ecomsync.crm.diff import ROW_HASH, Mart
from ecomsync.crm.ledger import LedgerEntry, Rejection, SyncStore

INVALID_MART_ROW = "invalid_mart_row"
LINKS = ("contact_tag", "list_membership")


@dataclass
class Item:
    """One CRM object the marts want: its planned payload and what to do with it."""

    object_type: str
    natural_key: str
    connection_id: str | None
    payload: dict[str, Any]
    live: bool = False  # from real time (automations.is_live); for a tag or list link: its contact is live
    is_purchase: bool = False  # orders only: money taken or being taken
    action: str = ""  # create | update | unchanged | skipped | remove
    reason: str = ""
    fires: bool = False  # the write may start an automation (automations.may_start_automation)
    row_hash: str | None = None  # the mart row's hash (crm/diff.py) for the object the row is about; links: None

    @cached_property
    def hash(self) -> str:
        return p.payload_hash(self.payload)


def decide(item: Item, entry: LedgerEntry | None, rejection: Rejection | None, *, mode: str,
           enabled_connections: set[str], master_list_found: bool, retry_rejected: bool) -> tuple[str, str]:
    """(action, reason) for one object: create, update, unchanged or skipped."""
    if item.connection_id is not None and item.connection_id not in enabled_connections:
        return "skipped", "connection disabled"
    if item.object_type == "list_membership" and not master_list_found:
        return "skipped", "master list missing"
    in_crm = entry is not None and not (entry.crm_id is None and entry.status != "synced")
    accepted_as_is = in_crm and entry.payload_hash == item.hash and entry.status in ("synced", "recovered")
    # A rejection never shadows what the ledger holds: the CRM accepted that very payload (e.g. a racing
    # second load's 422 "duplicate" of it) — only a payload the CRM never took waits as "rejected before".
    if (rejection is not None and rejection.payload_hash == item.hash and not retry_rejected
            and not accepted_as_is):
        return "skipped", "rejected before, payload unchanged"
    if not in_crm:
        return "create", ""
    if mode == "full_resync":
        # Full resync ignores hashes; a tag link has nothing to update, it exists or not.
        return ("unchanged", "") if item.object_type == "contact_tag" else ("update", "full resync")
    if accepted_as_is:
        return "unchanged", ""
    return "update", ""


@dataclass
class Batch:
    """One batch's planned items, its contacts by email (what to sync again when the CRM lost one) and the
    ledger entries of its objects."""

    items: list[Item]
    contacts: dict[str, Item] = field(default_factory=dict)
    ledger: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)


# reject(object_type, natural_key, connection_id, payload_hash, error_code, error, why)
RejectRow = Callable[[str, str, str | None, str, str, dict, str], None]


class Planner:
    """Turns batches of mart rows into decided items (see the module docstring)."""

    def __init__(self, store: SyncStore, settings: CrmSettings, *, mode: str, enabled_connections: set[str],
                 master_list_found: bool, retry_rejected: bool, started_at: datetime, live_emails: set[str]):
        self.store, self.settings, self.mode = store, settings, mode
        self.enabled, self.master_list_found, self.retry_rejected = enabled_connections, master_list_found, \
            retry_rejected
        self.started_at = started_at
        self.live_emails = live_emails  # contacts with a new live order or cart in this run (B3)
        self.malformed: dict[str, int] = {}  # mart table → rows rejected as malformed
        self.orders_without_is_purchase = False

    def plan(self, mart: Mart, rows: list[dict[str, Any]], reject: RejectRow | None) -> Batch:
        """The batch's items, decided. ``reject`` records a malformed row (None: only planning, e.g. to find
        the run's live contacts — nothing recorded)."""
        batch = Batch([])
        for row in rows:
            try:
                batch.items.extend(self.items_of_row(mart.table, row, batch.contacts))
            except (ValueError, TypeError) as exc:
                if reject is None:
                    continue
                # One bad row must not cost the rest of the batch: it is rejected with the reason.
                reject(mart.object_type, str(row.get(mart.key_column)), row.get("connection_id"),
                       p.row_hash({k: v for k, v in row.items() if k != ROW_HASH}), INVALID_MART_ROW,
                       {"errors": [{"code": INVALID_MART_ROW, "detail": f"crm.{mart.table}: {exc}"}]},
                       f"not sent, malformed crm.{mart.table} row: {exc}")
                self.malformed[mart.table] = self.malformed.get(mart.table, 0) + 1
        keys = [(item.object_type, item.natural_key) for item in batch.items]
        batch.ledger = self.store.ledger_for(keys)
        rejected = self.store.rejections_for(keys)
        for item in batch.items:
            key = (item.object_type, item.natural_key)
            item.action, item.reason = decide(item, batch.ledger.get(key), rejected.get(key), mode=self.mode,
                                              enabled_connections=self.enabled,
                                              master_list_found=self.master_list_found,
                                              retry_rejected=self.retry_rejected)
        self.decide_automations(batch)
        return batch

    def items_of_row(self, table: str, row: dict[str, Any], contacts: dict[str, Item]) -> list[Item]:
        """The CRM objects one mart row asks for; ValueError or TypeError when the row is malformed."""
        row_hash = row.pop(ROW_HASH, None)
        if table == "connections":
            items = [Item("connection", row["connection_id"], row["connection_id"], p.connection_payload(row))]
        elif table == "contacts":
            email = row["email"]
            contact = Item("contact", email, None, p.contact_payload(row))
            items = [contact] + [Item("contact_tag", f"{email}|{tag}", None, {"email": email, "tag": tag})
                                 for tag in sorted(row["tags"] or [])]
            if self.settings.master_list_rule_applies and row["accepts_marketing"]:
                items.append(Item("list_membership", email, None,
                                  {"email": email, "list": self.settings.master_list_name}))
            contacts[email] = contact
        elif table == "ecom_customers":
            items = [Item("ecom_customer", row["ecom_customer_key"], row["connection_id"],
                          p.ecom_customer_payload(row))]
        elif table == "ecom_orders":
            # Marts from before is_purchase take every order for one (with a warning); a null is no purchase.
            self.orders_without_is_purchase |= "is_purchase" not in row
            items = [Item("ecom_order", row["order_key"], row["connection_id"], p.order_payload(row),
                          live=self.is_live(row, row["external_created_at"]),
                          is_purchase=bool(row["is_purchase"]) if "is_purchase" in row else True)]
        else:
            items = [Item("abandoned_cart", row["cart_key"], row["connection_id"], p.cart_payload(row),
                          live=self.is_live(row, row.get("external_created_at")))]
        items[0].row_hash = row_hash
        return items

    def is_live(self, row: dict[str, Any], placed_at: datetime | None) -> bool:
        return a.is_live(row["sync_mode"], row["connection_id"], placed_at, self.started_at,
                         self.settings.realtime_window_hours)

    def decide_automations(self, batch: Batch) -> None:
        """Ask ``may_start_automation`` for every planned object. A tag or list membership's contact is live when
        one of its orders or carts may start an automation in this run (``live_emails``, found before the
        contacts are planned: B3, tagged when they buy)."""
        for item in batch.items:  # connections, contacts, tags and customers ask too: the answer is no
            if item.object_type in LINKS:
                item.live = item.payload["email"] in self.live_emails
            in_crm = (item.object_type, item.natural_key) in batch.ledger or item.action != "create"
            item.fires = a.may_start_automation(item.object_type, in_crm=in_crm, live=item.live,
                                                is_purchase=item.is_purchase)
