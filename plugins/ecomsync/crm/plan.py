"""What the load plans for one CRM object: the ``Item`` and the rule that picks its action from the ledger
and the rejections (create, update, unchanged, skipped)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ecomsync.crm import payloads as p
from ecomsync.crm.ledger import LedgerEntry, Rejection

# crm mart → (object type, natural key column): what a malformed row of it is rejected as.
MART_TABLES = {"connections": ("connection", "connection_id"), "contacts": ("contact", "email"),
               "ecom_customers": ("ecom_customer", "ecom_customer_key"), "ecom_orders": ("ecom_order", "order_key"),
               "abandoned_carts": ("abandoned_cart", "cart_key")}
INVALID_MART_ROW = "invalid_mart_row"


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
