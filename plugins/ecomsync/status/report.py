"""Everything the status page shows, read from the warehouse in one short read-only transaction.

Sources (docs/architecture.md): ``state.connections``, ``state.watermarks``, ``state.sync_runs`` (extract),
``crm.excluded_records`` (dbt), ``sync.ledger``, ``sync.rejections``, ``sync.run_reports`` (CRM load; its
``automations`` jsonb ``{trigger: count}`` column is read when present). A table that does not exist yet (a
fresh warehouse) gives an empty section, never an error. Times are UTC ``datetime``; counts are ints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg2
from psycopg2.extras import RealDictCursor

from ecomsync.status.masking import mask_key, mask_text

CHART_DAYS = 30
EXAMPLES_PER_REASON = 3
REJECTIONS_SHOWN = 20
LOADS_SHOWN = 10
ACCOUNT = "crm account"  # the section for CRM objects that belong to no connection (contacts, tags, lists)

TABLES = ("state.connections", "state.watermarks", "state.sync_runs", "crm.excluded_records", "sync.ledger",
          "sync.rejections", "sync.run_reports")


@dataclass
class StreamStatus:
    stream: str
    last_success_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None
    last_mode: str | None
    last_error: str | None
    watermark: datetime | None
    landed_last_run: int
    landed_30_days: int


@dataclass
class Exclusion:
    reason: str
    count: int
    examples: list[dict[str, str]]  # record_type, external_id, detail (masked)


@dataclass
class Rejection:
    object_type: str
    key: str  # masked
    http_status: int | None
    error_code: str | None
    attempts: int
    last_rejected_at: datetime


@dataclass
class ConnectionStatus:
    connection_id: str
    name: str
    source: str
    enabled: bool | None
    last_success_at: datetime | None
    streams: list[StreamStatus] = field(default_factory=list)
    exclusions: list[Exclusion] = field(default_factory=list)
    crm_objects: dict[str, int] = field(default_factory=dict)  # object_type → objects in the CRM (ledger)
    crm_writes_30_days: dict[str, int] = field(default_factory=dict)  # object_type → last written in 30 days
    rejections: list[Rejection] = field(default_factory=list)
    rejection_count: int = 0
    landed_per_day: dict[date, int] = field(default_factory=dict)
    crm_writes_per_day: dict[date, int] = field(default_factory=dict)


@dataclass
class LoadReport:
    run_id: str
    mode: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    requests: int
    writes: dict[str, int]  # object_type → created + updated
    rejected: int
    warnings: list[str]
    automations: dict[str, int] | None  # trigger → count; None when the warehouse does not record them


@dataclass
class StatusReport:
    generated_at: datetime
    days: list[date]
    missing_tables: list[str]
    connections: list[ConnectionStatus]
    loads: list[LoadReport]
    landed_per_day: dict[date, int]
    crm_writes_per_day: dict[date, int]

    @property
    def empty(self) -> bool:
        return not self.connections and not self.loads


def read_status(warehouse_url: str, now: datetime | None = None) -> StatusReport:
    """The status of every connection the warehouse knows, as of ``now`` (default: the clock).

    Raises ``psycopg2.OperationalError`` when the warehouse cannot be reached."""
    now = now or datetime.now(UTC)
    since = datetime.combine(now.date() - timedelta(days=CHART_DAYS - 1), datetime.min.time(), UTC)
    days = [since.date() + timedelta(days=n) for n in range(CHART_DAYS)]
    conn = psycopg2.connect(warehouse_url, connect_timeout=10, options="-c default_transaction_read_only=on")
    try:
        with conn, conn.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute("set local statement_timeout = '20s'")
            present = _present_tables(cur)
            reader = _Reader(cur, present, since)
            report = StatusReport(generated_at=now, days=days,
                                  missing_tables=[t for t in TABLES if t not in present],
                                  connections=reader.connections(), loads=reader.loads(),
                                  landed_per_day={}, crm_writes_per_day={})
    finally:
        conn.close()
    for connection in report.connections:
        for day, count in connection.landed_per_day.items():
            report.landed_per_day[day] = report.landed_per_day.get(day, 0) + count
    for load in report.loads:
        if load.started_at >= since and load.mode != "dry_run":
            day = load.started_at.astimezone(UTC).date()
            report.crm_writes_per_day[day] = report.crm_writes_per_day.get(day, 0) + sum(load.writes.values())
    return report


def _present_tables(cur) -> set[str]:
    cur.execute("select table_schema || '.' || table_name as name from information_schema.tables "
                "where table_schema || '.' || table_name = any(%s)", (list(TABLES),))
    return {row["name"] for row in cur.fetchall()}


class _Reader:
    def __init__(self, cur, present: set[str], since: datetime):
        self.cur, self.present, self.since = cur, present, since

    def rows(self, table: str, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        if table not in self.present:
            return []
        self.cur.execute(sql, params)
        return [dict(row) for row in self.cur.fetchall()]

    def connections(self) -> list[ConnectionStatus]:
        found: dict[str, ConnectionStatus] = {}

        def get(connection_id: str | None) -> ConnectionStatus:
            key = connection_id or ACCOUNT
            if key not in found:
                source = key.split(":", 1)[0] if ":" in key else "activecampaign"
                found[key] = ConnectionStatus(key, key if key != ACCOUNT else "CRM account (contacts, tags, lists)",
                                              source, None, None)
            return found[key]

        for row in self.rows("state.connections", "select connection_id, source, name, enabled, last_success_at "
                                                  "from state.connections order by source, name"):
            status = get(row["connection_id"])
            status.name, status.source = row["name"] or row["connection_id"], row["source"]
            status.enabled, status.last_success_at = row["enabled"], row["last_success_at"]
        self._streams(get)
        self._exclusions(get)
        self._crm(get)
        return sorted(found.values(), key=lambda c: (c.connection_id == ACCOUNT, c.source, c.name))

    def _streams(self, get) -> None:
        watermarks = {(r["connection_id"], r["stream"]): r["watermark"] for r in self.rows(
            "state.watermarks", "select connection_id, stream, watermark from state.watermarks")}
        runs = self.rows("state.sync_runs", """
            select distinct on (connection_id, stream)
                connection_id, stream, started_at as last_run_at, status as last_status, sync_mode as last_mode,
                error as last_error, coalesce(records_landed, 0) as landed_last_run,
                (select max(coalesce(s.finished_at, s.started_at)) from state.sync_runs s
                  where s.connection_id = r.connection_id and s.stream = r.stream and s.status = 'success')
                    as last_success_at,
                (select coalesce(sum(s.records_landed), 0) from state.sync_runs s
                  where s.connection_id = r.connection_id and s.stream = r.stream and s.started_at >= %s)
                    as landed_30_days
            from state.sync_runs r
            order by connection_id, stream, started_at desc""", (self.since,))
        for run in runs:
            watermark = watermarks.pop((run["connection_id"], run["stream"]), None)
            get(run["connection_id"]).streams.append(StreamStatus(
                run["stream"], run["last_success_at"], run["last_run_at"], run["last_status"], run["last_mode"],
                mask_text(run["last_error"]) or None, watermark, int(run["landed_last_run"]),
                int(run["landed_30_days"])))
        for (connection_id, stream), watermark in watermarks.items():  # a watermark without a logged run
            get(connection_id).streams.append(StreamStatus(stream, None, None, None, None, None, watermark, 0, 0))
        for row in self.rows("state.sync_runs", """
                select connection_id, (started_at at time zone 'UTC')::date as day,
                       coalesce(sum(records_landed), 0) as landed
                from state.sync_runs where started_at >= %s group by 1, 2""", (self.since,)):
            get(row["connection_id"]).landed_per_day[row["day"]] = int(row["landed"])

    def _exclusions(self, get) -> None:
        for row in self.rows("crm.excluded_records", """
                select connection_id, reason, count(*) as count,
                       (array_agg(jsonb_build_object('record_type', record_type, 'external_id', external_id,
                                                     'detail', detail)
                                  order by record_type, external_id))[1:%s] as examples
                from crm.excluded_records group by connection_id, reason order by connection_id, count(*) desc""",
                (EXAMPLES_PER_REASON,)):
            examples = [{"record_type": str(e.get("record_type") or ""), "external_id": str(e.get("external_id") or ""),
                         "detail": mask_text(e.get("detail"))} for e in row["examples"]]
            get(row["connection_id"]).exclusions.append(Exclusion(row["reason"] or "unknown", int(row["count"]),
                                                                  examples))

    def _crm(self, get) -> None:
        for row in self.rows("sync.ledger", """
                select connection_id, object_type, count(*) as objects,
                       count(*) filter (where last_pushed_at >= %s) as written
                from sync.ledger group by 1, 2 order by 1, 2""", (self.since,)):
            status = get(row["connection_id"])
            status.crm_objects[row["object_type"]] = int(row["objects"])
            status.crm_writes_30_days[row["object_type"]] = int(row["written"])
        for row in self.rows("sync.ledger", """
                select connection_id, (last_pushed_at at time zone 'UTC')::date as day, count(*) as written
                from sync.ledger where last_pushed_at >= %s group by 1, 2""", (self.since,)):
            get(row["connection_id"]).crm_writes_per_day[row["day"]] = int(row["written"])
        for row in self.rows("sync.rejections", """
                select connection_id, object_type, natural_key, http_status, error_code, attempts, last_rejected_at,
                       row_number() over (partition by connection_id order by last_rejected_at desc) as n,
                       count(*) over (partition by connection_id) as total
                from sync.rejections order by connection_id, last_rejected_at desc"""):
            status = get(row["connection_id"])
            status.rejection_count = int(row["total"])
            if row["n"] <= REJECTIONS_SHOWN:
                status.rejections.append(Rejection(row["object_type"], mask_key(row["natural_key"]),
                                                   row["http_status"], row["error_code"], int(row["attempts"]),
                                                   row["last_rejected_at"]))

    def loads(self) -> list[LoadReport]:
        if "sync.run_reports" not in self.present:
            return []
        self.cur.execute("select 1 from information_schema.columns where table_schema = 'sync' "
                         "and table_name = 'run_reports' and column_name = 'automations'")
        automations = "automations" if self.cur.fetchone() else "null::jsonb"
        reports = []
        for row in self.rows("sync.run_reports", f"""
                select run_id, mode, status, started_at, finished_at, requests, counts, warnings,
                       {automations} as automations
                from (select *, row_number() over (order by started_at desc) as n from sync.run_reports) as r
                where started_at >= %s or n <= %s
                order by started_at desc""", (self.since, LOADS_SHOWN)):
            counts = row["counts"] or {}
            reports.append(LoadReport(
                row["run_id"], row["mode"], row["status"], row["started_at"], row["finished_at"],
                int(row["requests"] or 0),
                {kind: int(c.get("created", 0)) + int(c.get("updated", 0)) for kind, c in sorted(counts.items())},
                sum(int(c.get("rejected", 0)) for c in counts.values()),
                [mask_text(str(w)) for w in (row["warnings"] or [])],
                {str(k): int(v) for k, v in row["automations"].items()} if isinstance(row["automations"], dict)
                else None))
        return reports
