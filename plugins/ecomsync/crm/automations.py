"""The one place that answers "may this CRM write start an automation?" (B3, B9, S8, S10; issue 14).

ActiveCampaign starts automations on more than orders (source: /work/shared/api-specs/README.md,
ActiveCampaign, "Automations start on more than orders"):

=====================  ==========================================================================
trigger                 what starts it
=====================  ==========================================================================
``tag_added``           a tag newly added to a contact: ``POST contactTags``, or a bulk-import
                        contact's ``tags`` unless the import sets ``exclude_automations``
``subscribed_to_list``  a contact subscribed to a list: ``POST contactLists`` (status 1), or a
                        bulk-import contact's ``subscribe`` unless ``exclude_automations``
``makes_a_purchase``    an ecomOrder written with ``source`` 1 (on a create, and — undocumented — an
                        update may fire again, so updates always send ``source`` 0)
``abandoned_cart``      an abandoned cart (ecomOrder without externalid) written with ``source`` 1
=====================  ==========================================================================

``contact/sync``, ``contactTags`` and ``contactLists`` have no switch: a write that may not start an
automation must not go through them when it adds a tag or a subscription — it goes through
``import/bulk_import`` with ``exclude_automations: true``.

The rule, for the objects that can trigger one (connections, contacts and e-commerce customers
never do):

- never when the CRM already has the object (an update, a re-sent link, an order the ledger ever
  pushed, or one a look-up found after a crash between its create and its ledger row);
- never for history: a ``historical`` sync fires nothing (B9), except that a Square historical
  restart fires for orders placed within the real-time window before the run (S8: 24 h);
  ``incremental`` and ``catch_up`` are real time;
- an order only when it is a purchase (money taken or being taken: ``crm.ecom_orders.is_purchase``);
  a failed, declined or cancelled attempt never fires;
- a contact's new tag or list subscription only when the contact is live: it has an order or cart
  in this run that may itself start an automation (the native integration tags a customer when
  they buy, B3); a contact known only from history is tagged and subscribed without automations.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

HISTORICAL = "historical"
REALTIME_MODES = frozenset({"incremental", "catch_up"})
SYNC_MODES = REALTIME_MODES | {HISTORICAL}

# object type of the load → the automation trigger its write can start
TRIGGERS = {"contact_tag": "tag_added", "list_membership": "subscribed_to_list",
            "ecom_order": "makes_a_purchase", "abandoned_cart": "abandoned_cart"}
SOURCE_REALTIME, SOURCE_HISTORICAL = 1, 0
# SQL over a crm mart row ``m``: a superset of the rows ``is_live`` may call live (anything not historical, and
# Square's historical restarts, S8) — the load's diff reads only these when it looks for the run's new live
# purchases and carts; ``is_live`` and ``may_start_automation`` still decide each of them.
MAYBE_LIVE_SQL = "(m.sync_mode is distinct from 'historical' or m.connection_id like 'square:%%')"


def checked_sync_mode(sync_mode: object) -> str:
    """``sync_mode`` itself; ValueError for anything but incremental, catch_up or historical."""
    if sync_mode not in SYNC_MODES:
        raise ValueError(f"unknown sync_mode {sync_mode!r} (expected incremental, catch_up or historical)")
    return str(sync_mode)


def is_live(sync_mode: object, connection_id: str, placed_at: datetime | None, now: datetime,
            realtime_window_hours: int) -> bool:
    """Whether a record comes from real time (B9, S8): incremental and catch-up are; a historical sync is
    not, except a Square restart's records placed within ``realtime_window_hours`` before ``now``.

    ValueError for an unknown ``sync_mode``.
    """
    mode = checked_sync_mode(sync_mode)
    if mode in REALTIME_MODES:
        return True
    return (connection_id.partition(":")[0] == "square" and placed_at is not None
            and now - timedelta(hours=realtime_window_hours) <= placed_at <= now)


def may_start_automation(object_type: str, *, in_crm: bool, live: bool, is_purchase: bool = False) -> bool:
    """May writing this object start an automation? The one decision every write path asks.

    ``in_crm``: the CRM already has the object (ledger, or a look-up found it); ``live``: the record —
    for tags and list memberships, their contact — comes from real time (``is_live``); ``is_purchase``:
    only read for orders.
    """
    if object_type not in TRIGGERS or in_crm or not live:
        return False
    if object_type == "ecom_order":
        return is_purchase
    return True


def source_flag(may_fire: bool) -> int:
    """The ecomOrder ``source`` for a write: 1 (real time) only when it may start an automation."""
    return SOURCE_REALTIME if may_fire else SOURCE_HISTORICAL


def audit(fired: Iterable[str]) -> dict[str, int]:
    """``{trigger: number of writes that could start one}`` from the object types of those writes."""
    counts: dict[str, int] = {}
    for object_type in fired:
        trigger = TRIGGERS[object_type]
        counts[trigger] = counts.get(trigger, 0) + 1
    return counts
