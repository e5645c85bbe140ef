"""The warehouse side of extraction: raw landing, watermarks, the run log, connections.

Landing copies a batch into a temporary table with ``COPY`` and upserts it with
``INSERT … ON CONFLICT``: an identical payload changes nothing, so re-landing a
window is a no-op. The caller commits the batch and the watermark it covers in
one transaction (``Warehouse.transaction``).
"""
from __future__ import annotations

import io
import json
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import orjson
import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection


RAW_TABLES = (
    "bigcommerce_orders", "bigcommerce_order_coupons", "bigcommerce_customers", "bigcommerce_subscribers",
    "bigcommerce_products", "bigcommerce_categories", "bigcommerce_order_statuses", "bigcommerce_refunds",
    "square_locations", "square_customers", "square_payments", "square_orders", "square_catalog_objects",
)
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

STATE_DDL = """
create schema if not exists raw;
create schema if not exists state;
create table if not exists state.connections (
    connection_id text primary key,
    source text not null,
    external_id text not null,
    name text not null,
    link_url text,
    enabled boolean not null default true,
    first_seen_at timestamptz not null default now(),
    last_success_at timestamptz
);
create table if not exists state.watermarks (
    connection_id text not null,
    stream text not null,
    watermark timestamptz not null,
    run_id text not null,
    updated_at timestamptz not null default now(),
    primary key (connection_id, stream)
);
create table if not exists state.sync_runs (
    run_id text not null,
    connection_id text not null,
    stream text not null,
    sync_mode text not null,
    started_at timestamptz not null,
    finished_at timestamptz,
    status text not null,
    records_fetched integer not null default 0,
    records_landed integer not null default 0,
    records_flagged integer not null default 0,
    requests integer not null default 0,
    retries integer not null default 0,
    window_start timestamptz,
    window_end timestamptz,
    error text,
    primary key (run_id, connection_id, stream)
);
"""

RAW_DDL = """
create table if not exists raw.{table} (
    connection_id text not null,
    pk text not null,
    payload jsonb not null,
    source_updated_at timestamptz,
    loaded_at timestamptz not null default now(),
    run_id text not null,
    sync_mode text not null,
    flag text,
    primary key (connection_id, pk)
)
"""


@dataclass(frozen=True)
class RawRecord:
    pk: str
    payload: dict
    source_updated_at: datetime | None
    flag: str | None = None


@dataclass
class StreamRun:
    """One row of ``state.sync_runs``, filled in as the stream runs."""

    run_id: str
    connection_id: str
    stream: str
    sync_mode: str
    started_at: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    records_fetched: int = 0
    records_landed: int = 0
    records_flagged: int = 0
    requests: int = 0
    retries: int = 0
    status: str = "running"
    error: str | None = None


NULL_FIELD = "\\N"


def _copy_text(value: str | None) -> str:
    """One field of COPY's text format."""
    if value is None:
        return NULL_FIELD
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _payload_json(payload: dict) -> str:
    """The record as JSON text: orjson (landing's hottest step), the standard library for what orjson
    refuses (integers beyond 64 bits). Key order is irrelevant to jsonb; jsonb cannot hold NUL."""
    try:
        text = orjson.dumps(payload).decode()
    except TypeError:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.replace("\\u0000", "")


class Warehouse:
    def __init__(self, url: str):
        self.url = url

    def connect(self) -> PgConnection:
        conn = psycopg2.connect(self.url)
        conn.set_client_encoding("UTF8")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        conn = self.connect()
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def ensure_schema(self) -> None:
        with self.transaction() as conn, conn.cursor() as cur:
            # Several extract tasks may start at once: serialise the DDL.
            cur.execute("select pg_advisory_xact_lock(hashtext('ecomsync.ensure_schema'))")
            cur.execute(STATE_DDL)
            for table in RAW_TABLES:
                cur.execute(sql.SQL(RAW_DDL).format(table=sql.Identifier(table)))

    # -- landing -----------------------------------------------------------
    def land(self, conn: PgConnection, table: str, connection_id: str, records: list[RawRecord],
             run_id: str, sync_mode: str, landed_keys: set[str] | None = None) -> int:
        """Upsert ``records`` into ``raw.<table>`` inside the caller's transaction.

        Returns how many rows were inserted or changed (their ``pk`` added to
        ``landed_keys`` when given). A record repeated within the batch (the same
        order on two pages) keeps its newest version.
        """
        if table not in RAW_TABLES or not _TABLE_NAME.match(table):
            raise ValueError(f"unknown raw table {table!r}")
        if not records:
            return 0
        # COPY's text format: JSON needs only its backslashes doubled, far cheaper than CSV-quoting
        # its many double quotes.
        buffer = io.StringIO("".join(
            f"{_copy_text(record.pk)}\t"
            f"{_copy_text(_payload_json(record.payload))}\t"
            f"{record.source_updated_at.isoformat() if record.source_updated_at else NULL_FIELD}\t"
            f"{_copy_text(record.flag)}\t{ordinal}\n"
            for ordinal, record in enumerate(records)))
        with conn.cursor() as cur:
            cur.execute("create temporary table if not exists landing_batch "
                        "(pk text, payload jsonb, source_updated_at timestamptz, flag text, ordinal int) "
                        "on commit delete rows")
            cur.execute("truncate landing_batch")
            cur.copy_expert("copy landing_batch (pk, payload, source_updated_at, flag, ordinal) from stdin", buffer)
            cur.execute(sql.SQL("""
                insert into raw.{table} as target
                    (connection_id, pk, payload, source_updated_at, loaded_at, run_id, sync_mode, flag)
                select distinct on (pk) %(connection_id)s, pk, payload, source_updated_at, now(),
                       %(run_id)s, %(sync_mode)s, flag
                from landing_batch
                order by pk, source_updated_at desc nulls last, ordinal desc
                on conflict (connection_id, pk) do update set
                    payload = excluded.payload,
                    source_updated_at = excluded.source_updated_at,
                    loaded_at = excluded.loaded_at,
                    run_id = excluded.run_id,
                    sync_mode = excluded.sync_mode,
                    flag = excluded.flag
                where target.payload is distinct from excluded.payload
                returning pk
            """).format(table=sql.Identifier(table)),
                {"connection_id": connection_id, "run_id": run_id, "sync_mode": sync_mode})
            landed = [pk for (pk,) in cur.fetchall()]
        if landed_keys is not None:
            landed_keys.update(landed)
        return len(landed)

    # -- watermarks ----------------------------------------------------------
    def watermark(self, connection_id: str, stream: str) -> datetime | None:
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute("select watermark from state.watermarks where connection_id = %s and stream = %s",
                        (connection_id, stream))
            row = cur.fetchone()
        return row[0] if row else None

    def landed_at(self, connection_id: str, table: str, at: datetime) -> frozenset[str]:
        """Primary keys of the landed records of ``raw.<table>`` whose replication time is exactly ``at``
        (a keyset paginator resumes after them instead of reading them again)."""
        if table not in RAW_TABLES:
            raise ValueError(f"unknown raw table {table!r}")
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("select pk from raw.{} where connection_id = %s and source_updated_at = %s")
                        .format(sql.Identifier(table)), (connection_id, at))
            return frozenset(pk for (pk,) in cur.fetchall())

    @staticmethod
    def advance_watermark(conn: PgConnection, connection_id: str, stream: str, watermark: datetime,
                          run_id: str) -> None:
        """Move the watermark forward (never back) in the caller's transaction."""
        with conn.cursor() as cur:
            cur.execute("""
                insert into state.watermarks (connection_id, stream, watermark, run_id, updated_at)
                values (%s, %s, %s, %s, now())
                on conflict (connection_id, stream) do update
                    set watermark = excluded.watermark, run_id = excluded.run_id, updated_at = now()
                    where state.watermarks.watermark < excluded.watermark
            """, (connection_id, stream, watermark, run_id))

    # -- connections -----------------------------------------------------------
    def register_connection(self, connection_id: str, source: str, external_id: str, name: str,
                            link_url: str, enabled: bool) -> bool:
        """Record a store/location; returns True when it is seen for the first time."""
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute("""
                insert into state.connections (connection_id, source, external_id, name, link_url, enabled)
                values (%s, %s, %s, %s, %s, %s)
                on conflict (connection_id) do update
                    set name = excluded.name, link_url = excluded.link_url, enabled = excluded.enabled
                returning (xmax = 0) as inserted
            """, (connection_id, source, external_id, name, link_url, enabled))
            return bool(cur.fetchone()[0])

    def has_completed_historical(self, connection_id: str) -> bool:
        """True once a historical run finished every stream of the connection. One stream's success is not
        enough: after a crash part-way, the rest must still land as historical (B9, S8: no automations)."""
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute("select 1 from state.connections where connection_id = %s and last_success_at is not null "
                        "and exists (select 1 from state.sync_runs where connection_id = %s "
                        "and sync_mode = 'historical' and status = 'success')", (connection_id, connection_id))
            return cur.fetchone() is not None

    def last_success_at(self, connection_id: str) -> datetime | None:
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute("select last_success_at from state.connections where connection_id = %s", (connection_id,))
            row = cur.fetchone()
        return row[0] if row else None

    def mark_success(self, connection_id: str, at: datetime) -> None:
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute("update state.connections set last_success_at = greatest(last_success_at, %s) "
                        "where connection_id = %s", (at, connection_id))

    # -- run log -----------------------------------------------------------------
    def record_stream_run(self, run: StreamRun, conn: PgConnection | None = None) -> None:
        statement = """
            insert into state.sync_runs (run_id, connection_id, stream, sync_mode, started_at, finished_at, status,
                records_fetched, records_landed, records_flagged, requests, retries, window_start, window_end, error)
            values (%(run_id)s, %(connection_id)s, %(stream)s, %(sync_mode)s, %(started_at)s,
                    case when %(status)s = 'running' then null else now() end, %(status)s,
                    %(records_fetched)s, %(records_landed)s, %(records_flagged)s, %(requests)s, %(retries)s,
                    %(window_start)s, %(window_end)s, %(error)s)
            on conflict (run_id, connection_id, stream) do update set
                finished_at = excluded.finished_at, status = excluded.status,
                records_fetched = excluded.records_fetched, records_landed = excluded.records_landed,
                records_flagged = excluded.records_flagged, requests = excluded.requests,
                retries = excluded.retries, window_start = excluded.window_start,
                window_end = excluded.window_end, error = excluded.error
        """
        if conn is not None:
            with conn.cursor() as cur:
                cur.execute(statement, run.__dict__)
            return
        with self.transaction() as own, own.cursor() as cur:
            cur.execute(statement, run.__dict__)

    # -- concurrency -----------------------------------------------------------------
    @contextmanager
    def connection_lock(self, connection_id: str) -> Iterator[None]:
        """One extract per store/location at a time; a second one is refused, not interleaved."""
        conn = self.connect()
        conn.autocommit = True
        key = zlib.crc32(f"ecomsync.extract:{connection_id}".encode())
        try:
            with conn.cursor() as cur:
                cur.execute("select pg_try_advisory_lock(%s)", (key,))
                if not cur.fetchone()[0]:
                    raise ConcurrentRunError(f"another extract of {connection_id} is running; "
                                             "this run was refused so the two cannot interleave")
            yield
        finally:
            conn.close()  # closing the session releases the lock


class ConcurrentRunError(RuntimeError):
    pass
