"""The warehouse side of extraction: raw landing, watermarks, the run log, connections.

Landing copies a batch into a temporary table with ``COPY`` and upserts it with
``INSERT … ON CONFLICT``: an identical payload changes nothing, so re-landing a
window is a no-op, and an older copy (``source_updated_at``) never replaces a newer
landed one. A page of records none of which is landed yet (a historical run, an
empty table) is copied straight into the raw table instead: one pass through Postgres,
nothing to replace. Either way each record's JSON is written only as ``COPY`` reads it
(``_PageJson``), so the client serialises while Postgres parses. The caller commits the batch and
the watermark it covers in one transaction (``Warehouse.transaction``).

A record Postgres cannot hold (``jsonb`` refuses ``\\u0000``, lone surrogates, …) never costs
its batch: the batch is re-copied record by record and each refused record goes to
``state.rejected_records`` with the reason and its JSON text, exactly as serialised.
Landing never edits that text.

While ``connection_lock`` is held, every transaction runs on the session that holds the
advisory lock: if that session dies (Postgres restarted), the lock died with it and the
next write raises ``LockLostError`` instead of writing beside a second run.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

log = logging.getLogger(__name__)

# raw.bigcommerce_order_coupons (the per-order /coupons call, gone since line items carry applied_discounts)
# is no longer created; a warehouse made before keeps it, and privacy.erase still erases from it.
RAW_TABLES = (
    "bigcommerce_orders", "bigcommerce_customers", "bigcommerce_subscribers",
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
alter table state.sync_runs add column if not exists records_rejected integer not null default 0;
-- Records the extract could not land (issue 15): why, and their JSON text as serialised from the API's answer.
create table if not exists state.rejected_records (
    connection_id text not null,
    raw_table text not null,
    record_key text not null,            -- the primary key, or 'sha256:<hash of payload_text>' when unreadable
    pk text,                             -- null when the primary key could not be read
    reason text not null,                -- e.g. 'payload_not_storable: unsupported Unicode escape sequence'
    payload_text text not null,          -- the record's JSON text (escapes kept: \\u0000 stays six characters)
    run_id text not null,
    first_rejected_at timestamptz not null default now(),
    last_rejected_at timestamptz not null default now(),
    primary key (connection_id, raw_table, record_key)
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

# The changes to what dbt reads that carry no landing time (issue 16): a raw record deleted (the privacy erase, a
# hand fix), a raw table truncated, a connection added, enabled, disabled or deleted. Triggers write them, so no
# writer can forget to; the incremental models read the events since their cutoff instead of comparing whole tables
# with their inputs on every build (dbt_project/macros/change_events.sql), and dbt's on-run-end purges the events
# every model has read. An event names a record by (connection_id, pk) only, never its content.
CHANGE_EVENTS_DDL = """
do $$
begin
    if to_regclass('state.change_events') is null then
        create table state.change_events (
            relation text not null,          -- 'raw.bigcommerce_orders', 'state.connections', ...
            connection_id text,              -- null for a truncate
            pk text,                         -- the record's primary key; null for a truncate
            change text not null,            -- 'delete' | 'truncate' | 'connection_added' | 'connection_enabled'
                                             -- | 'connection_disabled' (a deleted connection: 'delete') | 'created'
            changed_at timestamptz not null default now()
        );
        -- deletions before the table existed (a warehouse of an older version) were not recorded: the models
        -- compare whole tables for one more look-back
        insert into state.change_events (relation, change) values ('state.change_events', 'created');
    end if;
end
$$;
create index if not exists change_events_changed_at on state.change_events (changed_at);
create or replace function state.record_deleted_rows() returns trigger language plpgsql as $$
begin
    insert into state.change_events (relation, connection_id, pk, change)
    select tg_table_schema || '.' || tg_table_name, connection_id, pk, 'delete' from deleted_rows;
    return null;
end
$$;
create or replace function state.record_truncate() returns trigger language plpgsql as $$
begin
    insert into state.change_events (relation, change) values (tg_table_schema || '.' || tg_table_name, 'truncate');
    return null;
end
$$;
create or replace function state.record_connection_changes() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into state.change_events (relation, connection_id, pk, change)
        select 'state.connections', connection_id, connection_id, 'connection_added' from new_rows;
    elsif tg_op = 'DELETE' then
        insert into state.change_events (relation, connection_id, pk, change)
        select 'state.connections', connection_id, connection_id, 'delete' from old_rows;
    else
        insert into state.change_events (relation, connection_id, pk, change)
        select 'state.connections', new_rows.connection_id, new_rows.connection_id,
               case when new_rows.enabled then 'connection_enabled' else 'connection_disabled' end
        from new_rows
        inner join old_rows using (connection_id)
        where new_rows.enabled is distinct from old_rows.enabled;
    end if;
    return null;
end
$$;
create or replace trigger record_added_connections after insert on state.connections
    referencing new table as new_rows for each statement execute function state.record_connection_changes();
create or replace trigger record_enabled_changes after update on state.connections
    referencing old table as old_rows new table as new_rows
    for each statement execute function state.record_connection_changes();
create or replace trigger record_deleted_rows after delete on state.connections
    referencing old table as old_rows for each statement execute function state.record_connection_changes();
create or replace trigger record_truncate after truncate on state.connections
    for each statement execute function state.record_truncate();
"""
# dbt reads what landed since a cutoff (change detection, the scheduled data tests of the staging views): without an
# index every such read scanned the whole heap (raw.square_payments and raw.square_orders keep their payloads inline:
# 0.5 GB each at scale 1, several reads per build).
RAW_LOADED_AT_INDEX_DDL = "create index if not exists {index} on raw.{table} (loaded_at)"
RAW_CHANGE_TRIGGERS_DDL = """
create or replace trigger record_deleted_rows after delete on raw.{table}
    referencing old table as deleted_rows for each statement execute function state.record_deleted_rows();
create or replace trigger record_truncate after truncate on raw.{table}
    for each statement execute function state.record_truncate();
"""


@dataclass(frozen=True)
class RawRecord:
    pk: str
    payload: dict
    source_updated_at: datetime | None
    flag: str | None = None


@dataclass(frozen=True)
class RejectedRecord:
    """A record that did not land: ``pk`` when readable, the reason (no record content), the JSON text."""

    pk: str | None
    reason: str
    payload_text: str

    @property
    def record_key(self) -> str:
        if self.pk is not None and storable_text(self.pk):
            return self.pk
        return "sha256:" + hashlib.sha256(self.payload_text.encode("utf-8", "backslashreplace")).hexdigest()


@dataclass
class LandResult:
    changed: int = 0  # rows inserted or replaced
    rejected: list[RejectedRecord] = field(default_factory=list)
    landed_keys: list[str] = field(default_factory=list)  # the pk of each row inserted or replaced

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)


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
    records_rejected: int = 0
    status: str = "running"
    error: str | None = None


NULL_FIELD = "\\N"


def _copy_text(value: str | None) -> str:
    """One field of COPY's text format (PostgreSQL 15 docs, COPY, "Text Format": backslash, tab, newline and
    carriage return escaped; ``\\N`` is null)."""
    if value is None:
        return NULL_FIELD
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_json(text: bytes) -> bytes:
    """``_copy_text`` of a ``payload_utf8`` text, in UTF-8: only its backslashes need doubling. JSON text never
    holds a raw tab, newline or carriage return (RFC 8259 §7: control characters in strings are escaped; orjson and
    the standard library write no whitespace but spaces), so the three other scans of ~7 KB per order are skipped."""
    return text.replace(b"\\", b"\\\\")


def _copy_line(record: RawRecord, text: bytes, before: bytes, middle: bytes, after: bytes) -> bytes:
    """One record as a COPY text line, UTF-8: ``before``, then its ``pk``, JSON text and ``source_updated_at``,
    ``middle``, its ``flag``, ``after`` (the fields of the target's other columns, already escaped)."""
    at = record.source_updated_at
    return b"".join((before, _copy_text(record.pk).encode(), b"\t", _copy_json(text), b"\t",
                     at.isoformat().encode() if at is not None else b"\\N", middle,
                     _copy_text(record.flag).encode(), after))


def _raw_line_fields(connection_id: str, run_id: str, sync_mode: str) -> tuple[bytes, bytes]:
    """``_copy_line``'s ``before`` and ``middle`` for a raw table (see ``raw_copy_lines``)."""
    return f"{_copy_text(connection_id)}\t".encode(), f"\t{_copy_text(run_id)}\t{_copy_text(sync_mode)}\t".encode()


def raw_copy_lines(connection_id: str, rows: list[tuple[RawRecord, str]], run_id: str, sync_mode: str) -> str:
    """``rows`` (record, its ``payload_json`` text) as COPY text lines of a raw table's columns ``connection_id, pk,
    payload, source_updated_at, run_id, sync_mode, flag`` (``loaded_at`` is left to its default): the lines the
    landing's direct path streams into the raw table."""
    before, middle = _raw_line_fields(connection_id, run_id, sync_mode)
    return b"".join(_copy_line(record, text.encode(), before, middle, b"\n") for record, text in rows).decode()


class UnstorablePayload(ValueError):
    """The record has a value no JSON text can carry faithfully."""


def payload_utf8(payload: Any) -> bytes:
    """The record as JSON text in UTF-8, never edited afterwards: orjson (landing's hottest step; it writes the
    ``orjson.Fragment`` literals of ``ecomsync.http.parse_json`` verbatim); the standard library for what
    orjson refuses (integers beyond 64 bits, lone surrogates — then as ASCII escapes, so the text is valid
    UTF-8). Payloads parsed by ``ecomsync.http.parse_json`` hold no NaN/inf floats (orjson would write null).
    Raises ``UnstorablePayload`` when neither can write it."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        try:
            return _stdlib_json(payload).encode()
        except (TypeError, ValueError) as exc:
            raise UnstorablePayload(f"no faithful JSON text ({type(exc).__name__})") from None


def payload_json(payload: Any) -> str:
    """``payload_utf8`` as a str."""
    return payload_utf8(payload).decode()


def _stdlib_json(payload: Any) -> str:
    """``json.dumps`` (ASCII escapes) with ``orjson.Fragment`` literals written verbatim."""
    marker, literals = uuid.uuid4().hex, []

    def literal(value: Any) -> str:
        if not isinstance(value, orjson.Fragment):
            raise TypeError(f"{type(value).__name__} is not JSON")
        literals.append(orjson.dumps(value).decode())
        return f"{marker}:{len(literals) - 1}"

    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=literal)
    for index, value in enumerate(literals):
        text = text.replace(f'"{marker}:{index}"', value, 1)
    return text


def storable_text(value: Any) -> bool:
    """True for a str Postgres ``text`` can hold (no NUL, valid UTF-8: no lone surrogates)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True



class _PageJson:
    """A page's landable records, each serialised (``payload_utf8``) once, in order, when a COPY first reads it: the
    JSON of one record is written while Postgres parses the lines before it, two processes at once instead of one
    after the other. ``rows``: (record, its JSON text) so far; ``rejected``: (position in the page, rejection) of
    each payload no JSON text carries."""

    def __init__(self, candidates: list[tuple[int, RawRecord]]):
        self.candidates = candidates  # (position in the page, record) whose pk and flag are storable
        self._next = 0
        self.rows: list[tuple[RawRecord, bytes]] = []
        self.rejected: list[tuple[int, RejectedRecord]] = []

    def __iter__(self) -> Iterator[tuple[RawRecord, bytes]]:
        """Every row: those serialised already, then the others as they are reached (so a COPY that failed
        part-way can be followed by another pass over the whole page)."""
        done = 0
        while True:
            if done < len(self.rows):
                yield self.rows[done]
                done += 1
            elif self._next < len(self.candidates):
                position, record = self.candidates[self._next]
                self._next += 1
                try:
                    self.rows.append((record, payload_utf8(record.payload)))
                except UnstorablePayload as exc:
                    self.rejected.append((position, RejectedRecord(record.pk, f"payload_not_storable: {exc}",
                                                                   fallback_json_text(record.payload))))
            else:
                return

    def lines(self, before: bytes, middle: bytes, after: Callable[[int], bytes]) -> _LineFile:
        """The page as COPY text lines (``_copy_line``; ``after`` of the row's ordinal), read as they are written."""
        return _LineFile(_copy_line(record, text, before, middle, after(ordinal))
                         for ordinal, (record, text) in enumerate(self))


class _LineFile:
    """A file for ``cursor.copy_expert``: each ``read`` returns the next line, ``b""`` at the end (psycopg2 sends
    what ``read`` returns, whatever its length, as one CopyData message, until an empty one)."""

    def __init__(self, lines: Iterator[bytes]):
        self._lines = lines

    def read(self, size: int = -1) -> bytes:
        return next(self._lines, b"")


_SCHEMA_TABLES = tuple(f"raw.{table}" for table in RAW_TABLES) + tuple(
    re.findall(r"create table if not exists (state\.\w+)", STATE_DDL)) + ("state.change_events",)
# each raw table's two triggers and state.connections' four
_CHANGE_TRIGGERS = 2 * len(RAW_TABLES) + 4


def _schema_current(cur) -> bool:
    """Every table of STATE_DDL and RAW_DDL exists, with its change-event triggers and ``loaded_at`` index, and the
    newest column STATE_DDL adds is there."""
    cur.execute("select bool_and(to_regclass(name) is not null) from unnest(%s::text[]) as name",
                (list(_SCHEMA_TABLES),))
    if not cur.fetchone()[0]:
        return False
    cur.execute("select count(*) from pg_trigger where tgname in ('record_deleted_rows', 'record_truncate', "
                "'record_added_connections', 'record_enabled_changes') and tgrelid = any(%s::regclass[])",
                ([*_SCHEMA_TABLES[:len(RAW_TABLES)], "state.connections"],))
    if cur.fetchone()[0] < _CHANGE_TRIGGERS:
        return False
    cur.execute("select count(*) from pg_indexes where schemaname = 'raw' and indexname = any(%s)",
                ([f"{table}_loaded_at" for table in RAW_TABLES],))
    if cur.fetchone()[0] < len(RAW_TABLES):
        return False
    cur.execute("select exists (select 1 from information_schema.columns where table_schema = 'state' "
                "and table_name = 'sync_runs' and column_name = 'records_rejected')")
    return bool(cur.fetchone()[0])


# The general landing path's first round trip, after the direct path's savepoint is closed one of two ways.
_RELEASE_DIRECT = "release savepoint landing_direct; "
_ROLLBACK_DIRECT = "rollback to savepoint landing_direct; release savepoint landing_direct; "
_PREPARE_BATCH = ("create temporary table if not exists landing_batch "
                  "(pk text, payload jsonb, source_updated_at timestamptz, flag text, ordinal int) "
                  "on commit delete rows; truncate landing_batch; savepoint landing_copy")


class Warehouse:
    def __init__(self, url: str):
        self.url = url
        self._held: PgConnection | None = None  # the session holding connection_lock's advisory lock
        self._held_for: str | None = None

    def connect(self) -> PgConnection:
        conn = psycopg2.connect(self.url)
        conn.set_client_encoding("UTF8")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """One transaction, committed on success. Inside ``connection_lock`` it runs on the lock's own
        session, so nothing is written once the lock is gone (``LockLostError``)."""
        if self._held is not None:
            with self._on_held_session() as conn:
                yield conn
            return
        conn = self.connect()
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    @contextmanager
    def _on_held_session(self) -> Iterator[PgConnection]:
        conn = self._held
        assert conn is not None
        if conn.closed:
            raise self._lock_lost(None)
        try:
            with conn:
                yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            if conn.closed:  # the server ended the session, and the advisory lock with it
                raise self._lock_lost(exc) from None
            raise

    def _lock_lost(self, exc: BaseException | None) -> LockLostError:
        cause = f" ({type(exc).__name__}: {exc.diag.message_primary or 'connection closed'})" \
            if isinstance(exc, psycopg2.Error) and exc.diag is not None and exc.diag.message_primary else \
            (f" ({type(exc).__name__})" if exc is not None else "")
        return LockLostError(
            f"the warehouse session holding the extract lock of {self._held_for} ended{cause} — Postgres "
            "restarted or the connection dropped, so the advisory lock is gone and another run may hold it now; "
            "this run stopped before writing again. The next run resumes from the committed watermark.")

    def ensure_schema(self) -> None:
        """Create or upgrade the ``raw`` and ``state`` tables; no DDL (and no lock) when they are current: the
        ``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` of STATE_DDL takes an ACCESS EXCLUSIVE lock even when the
        column exists (PostgreSQL 15 docs, ALTER TABLE), which would queue every extract behind any open reader
        of ``state.sync_runs`` (and every later reader behind it)."""
        with self.transaction() as conn, conn.cursor() as cur:
            if _schema_current(cur):
                return
            # Several extract tasks may start at once: serialise the DDL, and check again once the lock is ours (each
            # statement reads the catalog anew): the task that waited must not re-run the DDL — CREATE OR REPLACE
            # TRIGGER takes a SHARE ROW EXCLUSIVE lock per raw table — while the first one already lands, which
            # deadlocked a landing holding one raw table and wanting another (CI, two Square locations at once).
            cur.execute("select pg_advisory_xact_lock(hashtext('ecomsync.ensure_schema'))")
            if _schema_current(cur):
                return
            cur.execute(STATE_DDL)
            cur.execute(CHANGE_EVENTS_DDL)
            for table in RAW_TABLES:
                cur.execute(sql.SQL(RAW_DDL).format(table=sql.Identifier(table)))
                cur.execute(sql.SQL(RAW_LOADED_AT_INDEX_DDL).format(index=sql.Identifier(f"{table}_loaded_at"),
                                                                     table=sql.Identifier(table)))
                cur.execute(sql.SQL(RAW_CHANGE_TRIGGERS_DDL).format(table=sql.Identifier(table)))

    # -- landing -----------------------------------------------------------
    def land(self, conn: PgConnection, table: str, connection_id: str, records: list[RawRecord],
             run_id: str, sync_mode: str) -> int:
        """``land_batch``, returning only how many rows were inserted or changed."""
        return self.land_batch(conn, table, connection_id, records, run_id, sync_mode).changed

    def land_batch(self, conn: PgConnection, table: str, connection_id: str, records: list[RawRecord],
                   run_id: str, sync_mode: str) -> LandResult:
        """Upsert ``records`` into ``raw.<table>`` inside the caller's transaction.

        A record repeated within the batch (the same order on two pages) keeps its newest version; a
        landed row is replaced only by a different payload whose ``source_updated_at`` is not older (either
        side null, or the landed row flagged ``future_timestamp``: replaced). Records Postgres refuses are
        recorded in ``state.rejected_records`` (same transaction) and returned in ``LandResult.rejected``; a
        record that lands clears its old rejection.

        Round trips of a page of new keys: the savepoint with the key look-up, the ``COPY`` (each record
        serialised as Postgres reads the page: ``_PageJson``), the release with the clean-up of old rejections.
        """
        if table not in RAW_TABLES or not _TABLE_NAME.match(table):
            raise ValueError(f"unknown raw table {table!r}")
        result = LandResult()
        if not records:
            return result
        unkeyed: list[tuple[int, RejectedRecord]] = []
        candidates: list[tuple[int, RawRecord]] = []
        for position, record in enumerate(records):
            if storable_text(record.pk) and (record.flag is None or storable_text(record.flag)):
                candidates.append((position, record))
                continue
            try:  # an unstorable payload is named first, as it would be for a storable key
                text = payload_json(record.payload)
            except UnstorablePayload as exc:
                unkeyed.append((position, RejectedRecord(record.pk, f"payload_not_storable: {exc}",
                                                         fallback_json_text(record.payload))))
                continue
            unkeyed.append((position, RejectedRecord(None, "invalid_primary_key: not storable as text", text)))
        page = _PageJson(candidates)
        refused: list[RejectedRecord] = []
        if candidates:
            with conn.cursor() as cur:
                landed, unwind = self._copy_new_rows(cur, table, connection_id, page, run_id, sync_mode)
                if landed:
                    result.landed_keys = [record.pk for record, _ in page.rows]
                else:
                    result.landed_keys, refused = self._upsert(cur, table, connection_id, page, run_id, sync_mode,
                                                               unwind)
        result.changed = len(result.landed_keys)
        result.rejected = [rejection for _, rejection in sorted(unkeyed + page.rejected, key=lambda r: r[0])]
        result.rejected += refused
        self.record_rejections(conn, table, connection_id, result.rejected, run_id)
        return result

    @staticmethod
    def _copy_new_rows(cur, table: str, connection_id: str, page: _PageJson, run_id: str,
                       sync_mode: str) -> tuple[bool, str]:
        """The fast path of a page of new records (a historical run, an empty table): ``COPY`` straight into
        ``raw.<table>``, one pass through Postgres instead of two (temporary table, then upsert).

        Taken only when no key repeats within the page and none of the page's keys is landed yet for the
        connection (an index look-up, in the round trip that takes the savepoint), so nothing is replaced and the
        newer-wins rule has nothing to decide. Under the savepoint: if Postgres refuses the page (a value
        ``jsonb`` cannot hold, or a row another session landed meanwhile — unique violation), it is rolled back
        and the page takes the general path, which rejects record by record. On success the savepoint is
        released in the round trip that clears the landed keys' old rejections. Returns whether the page landed
        here and, when not, the statements that close the savepoint (the general path's first round trip runs
        them)."""
        keys = [record.pk for _, record in page.candidates]
        if len(set(keys)) != len(keys):
            return False, ""
        cur.execute(sql.SQL("savepoint landing_direct; "
                            "select exists (select from raw.{table} where connection_id = %s and pk = any(%s))")
                    .format(table=sql.Identifier(table)), (connection_id, keys))
        if cur.fetchone()[0]:
            return False, _RELEASE_DIRECT
        before, middle = _raw_line_fields(connection_id, run_id, sync_mode)
        try:
            # loaded_at: its column default now(), the transaction's time, as on the general path
            cur.copy_expert(sql.SQL("copy raw.{table} (connection_id, pk, payload, source_updated_at, run_id, "
                                    "sync_mode, flag) from stdin").format(table=sql.Identifier(table))
                            .as_string(cur), page.lines(before, middle, lambda _: b"\n"))
        except (psycopg2.DataError, psycopg2.IntegrityError):
            return False, _ROLLBACK_DIRECT
        cur.execute("release savepoint landing_direct; delete from state.rejected_records "
                    "where connection_id = %s and raw_table = %s and record_key = any(%s)",
                    (connection_id, table, [record.pk for record, _ in page.rows]))
        return True, ""

    @classmethod
    def _upsert(cls, cur, table: str, connection_id: str, page: _PageJson, run_id: str, sync_mode: str,
                unwind: str) -> tuple[list[str], list[RejectedRecord]]:
        """The general path: ``COPY`` the page into the temporary ``landing_batch``, then one ``INSERT … ON
        CONFLICT … WHERE`` (with the clean-up of old rejections, in one round trip). Returns the keys inserted
        or replaced and the records Postgres refused. ``unwind`` (``""``, ``_RELEASE_DIRECT`` or
        ``_ROLLBACK_DIRECT``) closes the direct path's savepoint first, in the same round trip."""
        if unwind == _RELEASE_DIRECT:  # each statement a literal (tests/reliability/test_security_static.py)
            cur.execute(_RELEASE_DIRECT + _PREPARE_BATCH)
        elif unwind == _ROLLBACK_DIRECT:
            cur.execute(_ROLLBACK_DIRECT + _PREPARE_BATCH)
        else:
            cur.execute(_PREPARE_BATCH)
        refused = cls._copy_batch(cur, page)
        cur.execute(sql.SQL("""
            release savepoint landing_copy;
            delete from state.rejected_records where connection_id = %(connection_id)s and raw_table = %(table)s
                and record_key in (select pk from landing_batch);
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
              and (target.source_updated_at is null or excluded.source_updated_at is null
                   or excluded.source_updated_at >= target.source_updated_at
                   or coalesce(target.flag, '') like '%%future_timestamp%%')
            returning pk
        """).format(table=sql.Identifier(table)),
            {"connection_id": connection_id, "table": table, "run_id": run_id, "sync_mode": sync_mode})
        return [pk for (pk,) in cur.fetchall()], refused

    @staticmethod
    def _copy_batch(cur, page: _PageJson) -> list[RejectedRecord]:
        """COPY the page into ``landing_batch`` under the open savepoint ``landing_copy`` (left open for the
        caller to release); when Postgres refuses the batch, again one row at a time, each under the savepoint,
        so only the refused rows are left out (and returned as rejected)."""
        statement = "copy landing_batch (pk, payload, source_updated_at, flag, ordinal) from stdin"
        try:
            # COPY's text format: JSON needs only its backslashes doubled, far cheaper than CSV-quoting
            # its many double quotes.
            cur.copy_expert(statement, page.lines(b"", b"\t", lambda ordinal: b"\t%d\n" % ordinal))
            return []
        except psycopg2.DataError:
            cur.execute("rollback to savepoint landing_copy")
        rejected = []
        for ordinal, (record, text) in enumerate(page):
            try:
                cur.copy_expert(statement, io.BytesIO(_copy_line(record, text, b"", b"\t", b"\t%d\n" % ordinal)))
                cur.execute("release savepoint landing_copy; savepoint landing_copy")
            except psycopg2.DataError as exc:
                cur.execute("rollback to savepoint landing_copy")
                rejected.append(RejectedRecord(record.pk, f"payload_not_storable: {exc.diag.message_primary}",
                                               text.decode("utf-8", "backslashreplace")))
        return rejected

    @staticmethod
    def record_rejections(conn: PgConnection, table: str, connection_id: str, rejected: list[RejectedRecord],
                          run_id: str) -> None:
        """Upsert rejected records into ``state.rejected_records`` in the caller's transaction."""
        if not rejected:
            return
        unique = {record.record_key: record for record in rejected}
        with conn.cursor() as cur:
            cur.executemany("""
                insert into state.rejected_records
                    (connection_id, raw_table, record_key, pk, reason, payload_text, run_id)
                values (%s, %s, %s, %s, %s, %s, %s)
                on conflict (connection_id, raw_table, record_key) do update set
                    reason = excluded.reason, payload_text = excluded.payload_text, run_id = excluded.run_id,
                    last_rejected_at = now()
            """, [(connection_id, table, key, record.pk if record.pk is None or storable_text(record.pk) else None,
                   record.reason, record.payload_text, run_id) for key, record in unique.items()])

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
    def record_failed_run(self, run: StreamRun) -> None:
        """The failed run's row, on a session of its own (the lock's session may be the thing that failed).
        Best effort: a warehouse that is down cannot take it, and the run's own error is what matters."""
        try:
            conn = self.connect()
            try:
                with conn:
                    self.record_stream_run(run, conn)
            finally:
                conn.close()
        except psycopg2.Error as exc:
            log.warning("could not record the failed run of %s %s: %s", run.connection_id, run.stream,
                        type(exc).__name__)

    def record_stream_run(self, run: StreamRun, conn: PgConnection | None = None) -> None:
        statement = """
            insert into state.sync_runs (run_id, connection_id, stream, sync_mode, started_at, finished_at, status,
                records_fetched, records_landed, records_flagged, records_rejected, requests, retries, window_start,
                window_end, error)
            values (%(run_id)s, %(connection_id)s, %(stream)s, %(sync_mode)s, %(started_at)s,
                    case when %(status)s = 'running' then null else now() end, %(status)s,
                    %(records_fetched)s, %(records_landed)s, %(records_flagged)s, %(records_rejected)s,
                    %(requests)s, %(retries)s,
                    %(window_start)s, %(window_end)s, %(error)s)
            on conflict (run_id, connection_id, stream) do update set
                finished_at = excluded.finished_at, status = excluded.status,
                records_fetched = excluded.records_fetched, records_landed = excluded.records_landed,
                records_flagged = excluded.records_flagged, records_rejected = excluded.records_rejected,
                requests = excluded.requests,
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
        """One extract per store/location at a time; a second one is refused, not interleaved.

        The session that takes the advisory lock is the one every ``transaction`` inside uses: if it dies,
        so did the lock, and the next write raises ``LockLostError`` rather than racing a second run.
        """
        outer = (self._held, self._held_for)  # nested: the innermost lock's session serves the transactions
        conn = self.connect()
        conn.autocommit = True
        key = zlib.crc32(f"ecomsync.extract:{connection_id}".encode())
        try:
            with conn.cursor() as cur:
                cur.execute("select pg_try_advisory_lock(%s)", (key,))
                if not cur.fetchone()[0]:
                    raise ConcurrentRunError(f"another extract of {connection_id} is running; "
                                             "this run was refused so the two cannot interleave")
            conn.autocommit = False
            self._held, self._held_for = conn, connection_id
            yield
        finally:
            self._held, self._held_for = outer
            conn.close()  # closing the session releases the lock


class ConcurrentRunError(RuntimeError):
    pass


class LockLostError(RuntimeError):
    """The advisory lock's session ended while the run held it: the run stops before writing again. Unlike
    ``ConcurrentRunError`` (another run holds the lock: do not retry) a retry is right: it resumes from the
    committed watermark once it holds the lock again."""


def fallback_json_text(payload: Any) -> str:
    """JSON text for a payload ``payload_json`` refuses (non-finite numbers written as the standard library
    writes them: NaN, Infinity): kept only in ``state.rejected_records.payload_text``."""
    try:
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":"), default=lambda value: repr(value))
    except (TypeError, ValueError):
        return repr(payload).encode("ascii", "backslashreplace").decode().replace("\x00", "\\x00")
