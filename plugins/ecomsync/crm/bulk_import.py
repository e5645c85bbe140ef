"""``import/bulk_import`` for the load: what each contact's entry carries, one batch sent and its outcome read.

Source: /work/shared/api-specs/README.md (ActiveCampaign: ≤ 250 contacts, < 400 KB, results via
``import/info``; "a bulk import runs automations unless the request sets ``exclude_automations: true``") and
the official request example of ``/import/bulk_import`` (ac-v3-ecom-contacts-subset.openapi.json).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ecomsync.crm import payloads as p
from ecomsync.crm.activecampaign import ActiveCampaignClient
from ecomsync.crm.plan import Item
from ecomsync.crm.report import Progress
from ecomsync.http import ApiError

if TYPE_CHECKING:
    from ecomsync.crm.execute import Executor

LINKS = ("contact_tag", "list_membership")


def links_by_email(items: Iterable[Item]) -> tuple[dict[str, list[str]], set[str], dict[str, list[Item]]]:
    """(every tag name of each email, the emails to subscribe, the links each email's import writes).

    An entry carries all the contact's tags (re-adding one it has adds nothing) and its subscription unless
    that was skipped (no master list); the pending tag and list items are done with the import.
    """
    tags: dict[str, list[str]] = {}
    subscribed: set[str] = set()
    pending: dict[str, list[Item]] = {}
    for item in items:
        if item.object_type == "contact_tag":
            tags.setdefault(item.payload["email"], []).append(item.payload["tag"])
        if item.object_type == "list_membership" and item.action != "skipped":
            subscribed.add(item.payload["email"])
        if item.object_type in LINKS and item.action in ("create", "update"):
            pending.setdefault(item.payload["email"], []).append(item)
    return tags, subscribed, pending


def import_batch(client: ActiveCampaignClient, batch: list[Item], entries: dict[str, dict],
                 reject: Callable[[Item, ApiError], None]) -> set[str]:
    """Import one batch (≤ 250 contacts); returns the emails the CRM imported, every other contact is rejected.

    A batch failing validation is not queued at all and names its bad entries by index (400
    ``failureReasons``): those are rejected, the rest is sent again. ``import/info`` lists the contacts that
    failed by email. Other errors propagate.
    """
    queued = list(batch)
    while queued:
        try:
            info = client.bulk_import([entries[item.natural_key] for item in queued])
            break
        except ApiError as exc:
            reasons = (exc.body or {}).get("failureReasons") if isinstance(exc.body, dict) else None
            bad = {r["contact"]: r.get("failureReason") for r in reasons or []
                   if isinstance(r, dict) and isinstance(r.get("contact"), int) and 0 <= r["contact"] < len(queued)}
            if exc.status != 400 or not bad:
                raise
            for index, reason in sorted(bad.items(), reverse=True):
                reject(queued.pop(index), ApiError(str(reason), 400, {"errors": [
                    {"code": "bulk_import_validation", "detail": reason}]}))
    else:
        return set()
    failed = {str(email).strip().lower() for email in info.get("failure") or []}
    for item in queued:
        if item.natural_key in failed:
            reject(item, ApiError("bulk import failure", None, {"errors": [
                {"code": "bulk_import_failure", "detail": "import/info lists the contact as failed"}]}))
    return {item.natural_key for item in queued} - failed


def import_contacts(ex: Executor, contacts: list[Item], items: list[Item], automations_allowed: set[str]) -> None:
    """``import/bulk_import`` with tags by name and the list subscription (≤ 250 a call).

    Each entry sets ``exclude_automations`` unless its email is in ``automations_allowed`` (every new
    link of it may start an automation: ``may_start_automation``). The import writes a contact's tags
    and list status too, so its tag and list items are done with it (or skipped with it when the CRM
    refuses the contact). A contact sent only for its links (its own payload unchanged) is not counted.
    """
    tags, subscribed, links = links_by_email(items)
    progress = Progress("bulk import", len(contacts), ex.client, ex.report, {"contact"})
    for number, batch in enumerate(p.chunks(contacts, p.BULK_IMPORT_MAX_CONTACTS)):
        entries = {item.natural_key: p.bulk_import_contact(
            item.payload, tags.get(item.natural_key, []),
            ex.master_list_id if item.natural_key in subscribed else None,
            exclude_automations=item.natural_key not in automations_allowed) for item in batch}
        imported = import_batch(ex.client, batch, entries, ex.reject)
        for item in batch:
            accepted = item.natural_key in imported
            if accepted and item.action in ("create", "update"):
                ex.done(item, None, outcome_of(item))
            if accepted and ("contact", item.natural_key) in ex.crm_ids:
                # The import upserts by email and answers no id: had the CRM lost the contact, the id
                # known is stale. Forget it; a later tag or subscription looks the contact up by email.
                ex.store.forget_crm_id("contact", item.natural_key)
                with ex.lock:
                    ex.crm_ids.pop(("contact", item.natural_key), None)
            for link in links.get(item.natural_key, []):
                if accepted:
                    ex.done(link, None, outcome_of(link))
                    if item.natural_key in automations_allowed:
                        ex.report.count_automation(link.object_type)
                else:
                    ex.report.count(link.object_type, "skipped")
        progress.log(min(len(contacts), (number + 1) * p.BULK_IMPORT_MAX_CONTACTS))
    progress.log(len(contacts), final=True)


def outcome_of(item: Item) -> str:
    """For upserts that cannot tell (contact/sync, list status, bulk import): new to the ledger means created."""
    return "created" if item.action == "create" else "updated"
