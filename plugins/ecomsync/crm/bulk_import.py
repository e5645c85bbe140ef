"""``import/bulk_import`` for the load: what each contact's entry carries, one batch sent and its outcome read.

Source: /work/shared/api-specs/README.md (ActiveCampaign: ≤ 250 contacts, < 400 KB, results via
``import/info``; "a bulk import runs automations unless the request sets ``exclude_automations: true``") and
the official request example of ``/import/bulk_import`` (ac-v3-ecom-contacts-subset.openapi.json).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from ecomsync.crm.activecampaign import ActiveCampaignClient
from ecomsync.crm.plan import Item
from ecomsync.http import ApiError

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
