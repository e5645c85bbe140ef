"""From a crm mart row to what ActiveCampaign receives: payloads, payload hashes, the ``source`` flag.

Pure functions, no I/O. A payload here names its references by our natural keys
(``connection_id``, ``customer_key``); the push swaps in CRM ids just before sending,
so a payload hash depends only on the business data. The mart columns in
``NON_PAYLOAD_COLUMNS`` and the ``source`` flag are never sent nor hashed: re-landing
a row or switching the sync mode must not re-push an unchanged order.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

# Dependency order of the push (issue 7): each type only refers to types before it.
OBJECT_TYPES = ("connection", "contact", "tag", "contact_tag", "list_membership", "ecom_customer",
                "ecom_order", "abandoned_cart")

# Mart columns the load reads for its own decisions (automations: ``ecomsync.crm.automations``), never sent to
# the CRM and never part of a payload hash. The one list of them.
NON_PAYLOAD_COLUMNS = frozenset({"sync_mode", "landed_at", "is_purchase"})

# Part of every mart row hash (crm/diff.py): bump it when a payload function below changes what it builds, so the
# next load compares every row by payload hash again instead of trusting the stored row hashes.
PAYLOAD_VERSION = "1"

BULK_IMPORT_MAX_CONTACTS = 250

T = TypeVar("T")


def payload_hash(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a payload (sorted keys, UTC ISO times)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_value)
    return hashlib.sha256(canonical.encode()).hexdigest()


def row_hash(row: dict[str, Any]) -> str:
    """sha256 of a mart row as read (without ``NON_PAYLOAD_COLUMNS``), any value as text: names a malformed row
    that has no payload."""
    payload_columns = {column: value for column, value in row.items() if column not in NON_PAYLOAD_COLUMNS}
    canonical = json.dumps(payload_columns, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def iso_utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive timestamp {value!r}: the marts hold timestamptz (UTC)")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def connection_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {"service": row["service"], "externalid": row["external_id"], "name": row["name"],
            "logoUrl": row.get("logo_url") or "", "linkUrl": row.get("link_url") or ""}


def contact_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {"email": row["email"], "firstName": row.get("first_name") or "",
            "lastName": row.get("last_name") or "", "phone": row.get("phone") or ""}


def ecom_customer_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {"connection_id": row["connection_id"], "externalid": row["external_id"], "email": row["email"],
            "acceptsMarketing": "1" if row["accepts_marketing"] else "0"}


def order_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "connection_id": row["connection_id"],
        "customer_key": customer_key(row["connection_id"], row["customer_external_id"]),
        "externalid": row["external_id"],
        "email": row["email"],
        "orderNumber": row.get("order_number"),
        "orderUrl": row.get("order_url"),
        "status": row.get("status"),
        "totalPrice": _cents(row, "total_price_cents"),
        "shippingAmount": _cents(row, "shipping_amount_cents"),
        "taxAmount": _cents(row, "tax_amount_cents"),
        "discountAmount": _cents(row, "discount_amount_cents"),
        "currency": row["currency"],
        "shippingMethod": row.get("shipping_method"),
        "externalCreatedDate": iso_utc(row.get("external_created_at")),
        "externalUpdatedDate": iso_utc(row.get("external_updated_at")),
        "orderProducts": list(row.get("order_products") or []),
        "orderDiscounts": list(row.get("order_discounts") or []),
    }


def cart_payload(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "connection_id": row["connection_id"],
        "customer_key": customer_key(row["connection_id"], row["customer_external_id"]),
        "externalcheckoutid": row["external_checkout_id"],
        "email": row["email"],
        "totalPrice": _cents(row, "total_price_cents"),
        "currency": row["currency"],
        "abandonedDate": iso_utc(row["abandoned_at"]),
        "externalCreatedDate": iso_utc(row.get("external_created_at")),
        "externalUpdatedDate": iso_utc(row.get("external_updated_at")),
        "orderProducts": list(row.get("order_products") or []),
    }


def customer_key(connection_id: str, customer_external_id: str | None) -> str | None:
    return f"{connection_id}|{customer_external_id}" if customer_external_id else None


def _cents(row: dict[str, Any], column: str) -> int:
    value = row.get(column)
    if value is None:
        return 0
    if isinstance(value, float) or int(value) != value:
        raise ValueError(f"{column} must be integer cents, got {value!r}")
    return int(value)


def bulk_import_contact(payload: dict[str, Any], tags: Sequence[str], list_id: str | None, *,
                        exclude_automations: bool = True) -> dict[str, Any]:
    """One entry of ``import/bulk_import``: tags by name; a list subscription when the contact opted in (B7).

    ``exclude_automations`` (per contact, as the official request example of ``/import/bulk_import`` places it:
    ac-v3-ecom-contacts-subset.openapi.json) keeps the tags and the subscription from starting automations;
    without it a bulk import runs them (api-specs README, "Automations start on more than orders").
    """
    entry: dict[str, Any] = {"email": payload["email"], "first_name": payload["firstName"],
                             "last_name": payload["lastName"], "phone": payload["phone"], "tags": list(tags),
                             "exclude_automations": exclude_automations}
    if list_id is not None:
        entry["subscribe"] = [{"listid": int(list_id) if str(list_id).isdigit() else list_id}]
    return entry


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
