"""What a webhook delivery says, and the table that keeps each event once.

A delivery names a record, not its content: BigCommerce sends only the id (``bigcommerce/webhooks.v3.yml``
``webhook_callback_base``; ``webhook-events/*.json``), Square the object but it is not what the warehouse
lands. So an event only says *which store or location changed*; the micro-batch then extracts that
connection's incremental window with the same code as the schedule.

Table ``raw.webhook_events`` (one row per event, primary key ``(source, event_key)``):

| column | type | note |
|---|---|---|
| ``source`` | text | ``bigcommerce`` / ``square`` |
| ``event_key`` | text | Square: ``event_id`` (unique per event, repeated on redelivery; ``api.json`` ``PaymentCreatedEvent.event_id``). BigCommerce: ``store_hash:scope:hash:created_at`` — ``hash`` is the SHA-1 of the event's ``data``, the same on a redelivery (``https-webhook-overview.mdx``); the store, scope and event time tell apart two real changes that share it (same order id in two stores, two updates of one order) |
| ``connection_id`` | text | ``bigcommerce:<hash>``, ``square:<location_id>``, or ``square:*`` for merchant-wide events (customers) |
| ``scope`` | text | BigCommerce ``scope`` / Square ``type`` |
| ``object_id`` | text | the record's id as sent |
| ``payload`` | jsonb | the delivery body as received |
| ``occurred_at`` | timestamptz | the source's event time |
| ``received_at`` | timestamptz | when the receiver stored it |
| ``claimed_by`` / ``claimed_at`` | text / timestamptz | the micro-batch run that took it (null: waiting) |
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2
from psycopg2.extras import Json

from ecomsync.streams import parse_iso

ASSET_NAME = "webhook_events"
ASSET_URI = "warehouse://raw/webhook_events"
ALL_LOCATIONS = "square:*"

DDL = """
create schema if not exists raw;
create table if not exists raw.webhook_events (
    source text not null,
    event_key text not null,
    connection_id text not null,
    scope text not null,
    object_id text,
    payload jsonb not null,
    occurred_at timestamptz,
    received_at timestamptz not null default now(),
    claimed_by text,
    claimed_at timestamptz,
    primary key (source, event_key)
);
create index if not exists webhook_events_waiting on raw.webhook_events (received_at) where claimed_by is null;
"""


class InvalidEvent(ValueError):
    """A signed delivery whose body is not an event of the source's documented shape."""


@dataclass(frozen=True)
class WebhookEvent:
    source: str
    event_key: str
    connection_id: str
    scope: str
    object_id: str | None
    payload: dict
    occurred_at: datetime | None


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise InvalidEvent("the body is not a JSON object")
    return body


def parse_bigcommerce(body: Any) -> WebhookEvent:
    """``{scope, store_id, data: {type, id, …}, hash, created_at, producer: "stores/<hash>"}``."""
    body = _object(body)
    scope, producer, digest, data = body.get("scope"), body.get("producer"), body.get("hash"), body.get("data")
    if not isinstance(scope, str) or not scope.startswith("store/"):
        raise InvalidEvent(f"scope {scope!r} is not a BigCommerce webhook scope")
    if not isinstance(producer, str) or not producer.startswith("stores/") or len(producer) <= len("stores/"):
        raise InvalidEvent(f"producer {producer!r} does not name a store (stores/<store_hash>)")
    if not isinstance(digest, str) or not digest:
        raise InvalidEvent("the delivery has no hash")
    if not isinstance(data, dict):
        raise InvalidEvent("the delivery has no data object")
    created_at = body.get("created_at")
    try:
        occurred = datetime.fromtimestamp(created_at, UTC) \
            if isinstance(created_at, int) and not isinstance(created_at, bool) else None
    except (OverflowError, OSError, ValueError):
        occurred = None
    store_hash = producer.split("/", 1)[1]
    # The hash covers only ``data`` ({type, id}): two stores' orders with the same id share it.
    return WebhookEvent("bigcommerce", f"{store_hash}:{scope}:{digest}:{created_at}", f"bigcommerce:{store_hash}", scope,
                        None if data.get("id") is None else str(data["id"]), body, occurred)


def _location_id(data: dict) -> str | None:
    # payment.location_id, refund.location_id, order_created/order_updated.location_id (api.json *Event examples).
    obj = data.get("object")
    if not isinstance(obj, dict):
        return None
    for value in obj.values():
        if isinstance(value, dict) and isinstance(value.get("location_id"), str):
            return value["location_id"]
    return None


def parse_square(body: Any) -> WebhookEvent:
    """``{merchant_id, type, event_id, created_at, data: {type, id, object}}`` (``PaymentCreatedEvent`` …)."""
    body = _object(body)
    event_id, event_type, data = body.get("event_id"), body.get("type"), body.get("data")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("the event has no event_id")
    if not isinstance(event_type, str) or "." not in event_type:
        raise InvalidEvent(f"type {event_type!r} is not a Square event type")
    if not isinstance(data, dict):
        raise InvalidEvent("the event has no data object")
    created_at = body.get("created_at")
    try:
        occurred = parse_iso(created_at) if isinstance(created_at, str) else None
    except ValueError:
        occurred = None
    location = _location_id(data)
    return WebhookEvent("square", event_id, f"square:{location}" if location else ALL_LOCATIONS, event_type,
                        None if data.get("id") is None else str(data["id"]), body, occurred)


class EventStore:
    """``raw.webhook_events`` on the warehouse: record once, claim for a run, release on failure."""

    def __init__(self, url: str):
        self.url = url
        self._ready = False
        self._lock = threading.Lock()

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        conn = psycopg2.connect(self.url)
        try:
            with conn, conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def ensure_schema(self) -> None:
        with self._lock:
            if self._ready:
                return
            with self._cursor() as cur:
                # No DDL when the schema is there: even CREATE INDEX IF NOT EXISTS takes a SHARE lock on the
                # table before it finds the index, which would queue the receiver's inserts behind a claim.
                cur.execute("select to_regclass('raw.webhook_events') is not null "
                            "and to_regclass('raw.webhook_events_waiting') is not null")
                if not cur.fetchone()[0]:
                    cur.execute("select pg_advisory_xact_lock(hashtext('ecomsync.webhook_events.ddl'))")
                    cur.execute(DDL)
            self._ready = True

    def record(self, event: WebhookEvent) -> bool:
        """Store the event; False when it was already stored (a redelivery: nothing changes)."""
        self.ensure_schema()
        with self._cursor() as cur:
            cur.execute(
                "insert into raw.webhook_events (source, event_key, connection_id, scope, object_id, payload,"
                " occurred_at) values (%s, %s, %s, %s, %s, %s, %s) on conflict (source, event_key) do nothing",
                (event.source, event.event_key, event.connection_id, event.scope, event.object_id,
                 Json(event.payload, dumps=lambda v: json.dumps(v, ensure_ascii=False)), event.occurred_at))
            return cur.rowcount == 1

    def claim(self, run_id: str) -> list[str]:
        """Take every waiting event for ``run_id`` (and what it took before, on a retry); the connections named."""
        self.ensure_schema()
        with self._cursor() as cur:
            cur.execute("update raw.webhook_events set claimed_by = %s, claimed_at = now() "
                        "where claimed_by is null", (run_id,))
            cur.execute("select distinct connection_id from raw.webhook_events where claimed_by = %s "
                        "order by connection_id", (run_id,))
            return [row[0] for row in cur.fetchall()]

    def release(self, run_id: str, connection_ids: list[str]) -> int:
        """Give a failed connection's events back, so the next run takes them again."""
        with self._cursor() as cur:
            cur.execute("update raw.webhook_events set claimed_by = null, claimed_at = null "
                        "where claimed_by = %s and connection_id = any(%s)", (run_id, connection_ids))
            return cur.rowcount

    def waiting(self) -> int:
        self.ensure_schema()
        with self._cursor() as cur:
            cur.execute("select count(*) from raw.webhook_events where claimed_by is null")
            return cur.fetchone()[0]
