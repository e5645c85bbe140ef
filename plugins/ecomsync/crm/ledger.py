"""The ``sync`` schema: what the load pushed (ledger), what the CRM refused (rejections), each run's report.

Every write is its own short transaction (autocommit), made right after the CRM
answered, so a crash loses at most the answer in flight — and the push looks an
object up before creating it when the ledger has no CRM id for it.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2.extras import Json, RealDictCursor

from ecomsync.crm.activecampaign import account_key

SYNC_DDL = """
create schema if not exists sync;
create table if not exists sync.ledger (
    object_type text not null,
    natural_key text not null,
    connection_id text,
    crm_id text,
    payload_hash text not null,
    first_pushed_at timestamptz not null default now(),
    last_pushed_at timestamptz not null default now(),
    last_run_id text not null,
    status text not null,
    primary key (object_type, natural_key)
);
create table if not exists sync.rejections (
    object_type text not null,
    natural_key text not null,
    connection_id text,
    payload_hash text not null,
    http_status integer,
    error_code text,
    error jsonb not null,
    run_id text not null,
    first_rejected_at timestamptz not null default now(),
    last_rejected_at timestamptz not null default now(),
    attempts integer not null default 1,
    primary key (object_type, natural_key)
);
create table if not exists sync.run_reports (
    run_id text not null,
    mode text not null,
    started_at timestamptz not null,
    finished_at timestamptz,
    status text not null,
    counts jsonb not null default '{}'::jsonb,
    requests integer not null default 0,
    warnings jsonb not null default '[]'::jsonb,
    plan jsonb,
    error text,
    account text,
    primary key (run_id, started_at)
);
alter table sync.run_reports add column if not exists automations jsonb not null default '{}'::jsonb;
alter table sync.ledger add column if not exists status_reason text;
-- The warehouse-side diff (crm/diff.py): the hash of the mart row the object was last pushed (or found
-- unchanged) from. Null for ledgers from before it: the next load streams those rows once, finds them
-- unchanged by payload_hash and fills it in (no CRM request).
alter table sync.ledger add column if not exists row_hash text;
-- The load's mart skip (crm/skip.py): per crm mart, the fingerprint of everything that decided its last complete,
-- settled load (nothing owed), what that load left as a re-read would count it, and which load it was.
create table if not exists sync.mart_loads (
    mart text primary key,
    fingerprint jsonb not null,
    run_id text not null,
    loaded_at timestamptz not null default now(),
    rows bigint not null,
    carried jsonb not null default '{}'::jsonb
);
alter table sync.run_reports add column if not exists marts jsonb not null default '{}'::jsonb;
"""


# Whether SYNC_DDL has nothing left to do: its tables and its newest columns exist. ``ensure_schema`` then runs
# no DDL at all — ``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` takes an ACCESS EXCLUSIVE lock even when the column
# exists (PostgreSQL 15 docs, ALTER TABLE: "an ACCESS EXCLUSIVE lock is acquired unless explicitly noted"), so a
# second load starting while a first one streams its diff from sync.ledger queued that lock behind the first
# load's cursor, and the first load's own next ledger query queued behind it: both hung.
SYNC_SCHEMA_CURRENT = """
select count(*) = 6 from information_schema.columns
where table_schema = 'sync'
  and (table_name, column_name) in (('ledger', 'status_reason'), ('ledger', 'row_hash'),
                                    ('rejections', 'attempts'), ('run_reports', 'automations'),
                                    ('run_reports', 'marts'), ('mart_loads', 'carried'))
"""


class LoadAlreadyRunning(RuntimeError):
    """Another load holds the advisory lock of this CRM account."""


@dataclass(frozen=True)
class LedgerEntry:
    crm_id: str | None
    payload_hash: str
    status: str
    row_hash: str | None = None


@dataclass(frozen=True)
class Rejection:
    payload_hash: str
    error_code: str | None


class SyncStore:
    """The ``sync`` tables over one autocommit connection shared (under a lock) by the push threads."""

    def __init__(self, wh_url: str):
        self.conn = psycopg2.connect(wh_url)
        self.conn.autocommit = True
        self.lock = threading.Lock()
        self.lock_key: int | None = None
        self.ledger_writes = 0  # rows this load wrote to sync.ledger (``refresh_statistics``)

    def close(self) -> None:
        self.conn.close()

    def ensure_schema(self) -> None:
        """Create or upgrade the ``sync`` tables; no DDL (and no lock) when they are current
        (``SYNC_SCHEMA_CURRENT``)."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute(SYNC_SCHEMA_CURRENT)
            if cur.fetchone()[0]:
                return
            # DDL races between two first runs are settled by a transaction-level lock.
            cur.execute("begin; select pg_advisory_xact_lock(hashtext('ecomsync.sync.ddl'));"
                        + SYNC_DDL + "commit;")

    def acquire_account_lock(self, account: str) -> None:
        """A session-level advisory lock per CRM account: two loads never interleave (released on close).

        Keyed on the normalised account URL (``activecampaign.account_key``), so every spelling of one
        account's URL (``127.0.0.1``/``localhost``, case, trailing slash, default port) takes the same lock."""
        key = int.from_bytes(hashlib.sha256(f"ecomsync.load_crm:{account_key(account)}".encode()).digest()[:8],
                             "big", signed=True)
        with self.lock, self.conn.cursor() as cur:
            cur.execute("select pg_try_advisory_lock(%s)", (key,))
            if not cur.fetchone()[0]:
                raise LoadAlreadyRunning(
                    f"another CRM load for {account} is running (advisory lock held); this run was refused "
                    "so the two cannot interleave — retry when it has finished.")
        self.lock_key = key

    def refresh_statistics(self) -> bool:
        """``ANALYZE sync.ledger`` when this load wrote to it; returns whether it did.

        The next load's diff (``crm/diff.py``) joins every mart row to the ledger; with the statistics Postgres
        keeps until autovacuum samples a freshly filled ledger, the planner takes it for empty and picks a nested
        loop: 230.7 s instead of 0.76 s for a no-change load at bench scale 0.025 (docs/benchmarks.md). A load
        that wrote rows leaves the statistics true rather than waiting for autovacuum (PostgreSQL 15 docs,
        "Updating Planner Statistics")."""
        if not self.ledger_writes:
            return False
        with self.lock, self.conn.cursor() as cur:
            cur.execute("analyze sync.ledger")
        self.ledger_writes = 0
        return True

    def release_account_lock(self) -> None:
        if self.lock_key is None:
            return
        with self.lock, self.conn.cursor() as cur:
            cur.execute("select pg_advisory_unlock(%s)", (self.lock_key,))
        self.lock_key = None

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self.lock, self.conn.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute(sql, params)
            return [dict(row) for row in cur.fetchall()]

    def ledger_for(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], LedgerEntry]:
        """The ledger entries of ``keys`` ((object_type, natural_key)): one batch's, never the whole ledger."""
        if not keys:
            return {}
        rows = self.query("""select l.object_type, l.natural_key, l.crm_id, l.payload_hash, l.status, l.row_hash
                             from sync.ledger l
                             join unnest(%s::text[], %s::text[]) as k(object_type, natural_key)
                               on k.object_type = l.object_type and k.natural_key = l.natural_key""",
                          ([t for t, _ in keys], [k for _, k in keys]))
        return {(r["object_type"], r["natural_key"]): LedgerEntry(r["crm_id"], r["payload_hash"], r["status"],
                                                                  r["row_hash"]) for r in rows}

    def rejections_for(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Rejection]:
        """The rejections of ``keys``: one batch's."""
        if not keys:
            return {}
        rows = self.query("""select r.object_type, r.natural_key, r.payload_hash, r.error_code
                             from sync.rejections r
                             join unnest(%s::text[], %s::text[]) as k(object_type, natural_key)
                               on k.object_type = r.object_type and k.natural_key = r.natural_key""",
                          ([t for t, _ in keys], [k for _, k in keys]))
        return {(r["object_type"], r["natural_key"]): Rejection(r["payload_hash"], r["error_code"]) for r in rows}

    def crm_ids_of_types(self, object_types: tuple[str, ...]) -> dict[tuple[str, str], str]:
        """Every known CRM id of the (few) objects of ``object_types``, e.g. connections and tags."""
        return {(r["object_type"], r["natural_key"]): r["crm_id"] for r in self.query(
            "select object_type, natural_key, crm_id from sync.ledger where object_type = any(%s) "
            "and crm_id is not null", (list(object_types),))}

    def set_row_hashes(self, rows: list[tuple[str, str, str]]) -> None:
        """Record ``(object_type, natural_key, row_hash)`` of objects found unchanged by payload hash whose mart
        row hash the ledger did not have yet (a ledger from before ``row_hash``, a payload version change):
        the next load's diff leaves them in the warehouse."""
        if not rows:
            return
        with self.lock, self.conn.cursor() as cur:
            cur.execute("""update sync.ledger l set row_hash = v.row_hash
                           from unnest(%s::text[], %s::text[], %s::text[]) as v(object_type, natural_key, row_hash)
                           where l.object_type = v.object_type and l.natural_key = v.natural_key""",
                        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
            self.ledger_writes += cur.rowcount

    def clear_shadowing_rejections(self) -> int:
        """Drop rejections of objects the ledger holds with the same payload: the CRM has that very version
        (e.g. two loads raced and the second got a 422 ``duplicate``), so it must not be skipped as rejected."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute("""delete from sync.rejections r using sync.ledger l
                           where l.object_type = r.object_type and l.natural_key = r.natural_key
                             and l.payload_hash = r.payload_hash and l.crm_id is not null
                             and l.status in ('synced', 'recovered')""")
            return cur.rowcount

    def record_pushed(self, object_type: str, natural_key: str, connection_id: str | None, crm_id: str | None,
                      payload_hash: str, run_id: str, status: str = "synced", row_hash: str | None = None) -> None:
        """The CRM accepted the object: its id, payload hash and mart row hash (``diff.row_hash_sql``), at once;
        an old rejection of it is cleared."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute(
                """insert into sync.ledger as l (object_type, natural_key, connection_id, crm_id, payload_hash,
                                                 last_run_id, status, row_hash)
                   values (%s, %s, %s, %s, %s, %s, %s, %s)
                   on conflict (object_type, natural_key) do update
                   set crm_id = coalesce(excluded.crm_id, l.crm_id), payload_hash = excluded.payload_hash,
                       connection_id = excluded.connection_id, last_pushed_at = now(),
                       last_run_id = excluded.last_run_id, status = excluded.status, status_reason = null,
                       row_hash = excluded.row_hash""",
                (object_type, natural_key, connection_id, crm_id, payload_hash, run_id, status, row_hash))
            self.ledger_writes += 1
            cur.execute("delete from sync.rejections where object_type = %s and natural_key = %s",
                        (object_type, natural_key))

    def record_removed(self, object_type: str, natural_key: str, reason: str, run_id: str) -> None:
        """The object was taken out of the CRM (e.g. an order now excluded as ``archived_order``): status
        ``removed`` with the reason, no CRM id — should it come back it is created again."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute("update sync.ledger set status = 'removed', status_reason = %s, crm_id = null, "
                        "last_run_id = %s, last_pushed_at = now() where object_type = %s and natural_key = %s",
                        (reason, run_id, object_type, natural_key))
            self.ledger_writes += cur.rowcount

    def mark_status(self, object_type: str, natural_key: str, status: str, run_id: str) -> None:
        with self.lock, self.conn.cursor() as cur:
            cur.execute("update sync.ledger set status = %s, last_run_id = %s, last_pushed_at = now() "
                        "where object_type = %s and natural_key = %s", (status, run_id, object_type, natural_key))

    def forget_crm_id(self, object_type: str, natural_key: str) -> None:
        """The CRM no longer has the object (404 on update): the next push looks it up or creates it."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute("update sync.ledger set crm_id = null where object_type = %s and natural_key = %s",
                        (object_type, natural_key))

    def forget_contact_links(self, email: str) -> None:
        """The CRM lost the contact with its tags and list membership: the next push sends them again."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute("delete from sync.ledger where (object_type = 'contact_tag' and starts_with(natural_key, %s)) "
                        "or (object_type = 'list_membership' and natural_key = %s)", (f"{email}|", email))

    def record_rejection(self, object_type: str, natural_key: str, connection_id: str | None, payload_hash: str,
                         http_status: int | None, error_code: str | None, error: Any, run_id: str) -> None:
        with self.lock, self.conn.cursor() as cur:
            cur.execute(
                """insert into sync.rejections as r (object_type, natural_key, connection_id, payload_hash,
                                                     http_status, error_code, error, run_id)
                   values (%s, %s, %s, %s, %s, %s, %s, %s)
                   on conflict (object_type, natural_key) do update
                   set payload_hash = excluded.payload_hash, http_status = excluded.http_status,
                       error_code = excluded.error_code, error = excluded.error, run_id = excluded.run_id,
                       last_rejected_at = now(), attempts = r.attempts + 1""",
                (object_type, natural_key, connection_id, payload_hash, http_status, error_code, Json(error), run_id))

    def mart_load(self, mart: str) -> dict[str, Any] | None:
        """The last complete, settled load recorded for crm mart ``mart`` (``sync.mart_loads``), or None."""
        rows = self.query("select fingerprint, run_id, loaded_at, rows, carried from sync.mart_loads "
                          "where mart = %s", (mart,))
        return rows[0] if rows else None

    def forget_mart_load(self, mart: str) -> None:
        """Before a load writes anything for ``mart``: until it records its own, no load may skip the mart."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute("delete from sync.mart_loads where mart = %s", (mart,))

    def record_mart_load(self, mart: str, fingerprint: dict[str, str], run_id: str, rows: int,
                         carried: dict[str, Any]) -> None:
        """After the load of ``mart`` completed with nothing owed: what it covered (``crm/skip.py``)."""
        with self.lock, self.conn.cursor() as cur:
            cur.execute("""insert into sync.mart_loads as m (mart, fingerprint, run_id, rows, carried)
                           values (%s, %s, %s, %s, %s)
                           on conflict (mart) do update
                           set fingerprint = excluded.fingerprint, run_id = excluded.run_id, loaded_at = now(),
                               rows = excluded.rows, carried = excluded.carried""",
                        (mart, Json(fingerprint), run_id, rows, Json(carried)))

    def mark_interrupted_reports(self, account: str, found_by_run_id: str,
                                 same_account: Callable[[str], bool]) -> list[str]:
        """Reports still ``running`` of the account (``same_account(report.account)``, however its URL was
        spelt) belong to loads that died without finishing them.

        Call it holding the account lock: then no load of the account is running, so none of them is alive.
        """
        with self.lock, self.conn.cursor() as cur:
            cur.execute("select run_id, started_at, account from sync.run_reports where status = 'running'")
            dead = [(run_id, started_at) for run_id, started_at, spelt in cur.fetchall()
                    if spelt is not None and same_account(spelt)]
            error = (f"interrupted: the load stopped before finishing its report (killed?); "
                     f"found by run {found_by_run_id}")
            for run_id, started_at in dead:
                cur.execute("update sync.run_reports set status = 'interrupted', error = %s "
                            "where run_id = %s and started_at = %s", (error, run_id, started_at))
            return sorted(run_id for run_id, _ in dead)

    def start_report(self, run_id: str, account: str, mode: str, started_at: datetime) -> None:
        with self.lock, self.conn.cursor() as cur:
            cur.execute("insert into sync.run_reports (run_id, account, mode, started_at, status) "
                        "values (%s, %s, %s, %s, 'running')", (run_id, account, mode, started_at))

    def finish_report(self, run_id: str, started_at: datetime, *, finished_at: datetime, status: str,
                      counts: dict, requests: int, warnings: list[str], plan: dict | None, error: str | None,
                      automations: dict[str, int] | None = None, marts: dict[str, Any] | None = None) -> None:
        with self.lock, self.conn.cursor() as cur:
            cur.execute(
                """update sync.run_reports set finished_at = %s, status = %s, counts = %s, requests = %s,
                          warnings = %s, plan = %s, error = %s, automations = %s, marts = %s
                   where run_id = %s and started_at = %s""",
                (finished_at, status, Json(counts), requests, Json(warnings),
                 None if plan is None else Json(plan, dumps=lambda v: json.dumps(v, default=str)), error,
                 Json(automations or {}), Json(marts or {}, dumps=lambda v: json.dumps(v, default=str)),
                 run_id, started_at))
