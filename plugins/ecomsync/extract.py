"""Run one connection's streams: choose the window, fetch, land, commit the watermark.

One implementation for both sources. A page and the watermark it justifies are
committed in one transaction; a failure leaves the watermark where the last
landed page put it, so the next run resumes there and re-landing is a no-op.

One odd record never stops a stream (issue 15): every value read from a payload here
(primary key, replication key, flag) is read through ``describe_record``, which turns
any failure into a rejection with its reason (``state.rejected_records``) or a flag,
and the rest of the page lands. A replication key later than the request (a source
clock ahead) is flagged ``future_timestamp`` and the watermark never passes the time of
the request; the row keeps the record's own time, and the next copy of it replaces it
whatever its time (landing treats a flagged row's time as unknown).
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ecomsync.fields import FieldError
from ecomsync.http import ApiSession
from ecomsync.redact import error_text, redact
from ecomsync.streams import StaleCursor, Stream, Window
from ecomsync.warehouse import (
    RawRecord,
    RejectedRecord,
    StreamRun,
    UnstorablePayload,
    Warehouse,
    fallback_json_text,
    payload_json,
    storable_text,
)

log = logging.getLogger(__name__)

MODES = ("incremental", "catch_up", "historical")
STALE_CURSOR_RESTARTS = 3
# A replication key later than the request by more than this is a source clock ahead: flagged.
FUTURE_TOLERANCE = timedelta(minutes=5)
FUTURE_FLAG = "future_timestamp"
UNREADABLE_FLAG = "unreadable_field"


class ExtractError(RuntimeError):
    pass


@dataclass(frozen=True)
class ExtractRequest:
    """What a run was asked to do (from the schedule or the trigger form)."""

    mode: str = "incremental"
    start: datetime | None = None  # optional date range (backfill); the watermark then stays put
    end: datetime | None = None
    run_id: str = field(default_factory=lambda: f"extract-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ExtractError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.start and self.end and self.start >= self.end:
            raise ExtractError(f"the date range is empty: {self.start} >= {self.end}")

    @property
    def is_backfill(self) -> bool:
        return self.start is not None or self.end is not None


@dataclass
class ConnectionResult:
    connection_id: str
    sync_mode: str
    streams: list[StreamRun]

    def as_dict(self) -> dict:
        return {"connection_id": self.connection_id, "sync_mode": self.sync_mode,
                "streams": {r.stream: {"fetched": r.records_fetched, "landed": r.records_landed,
                                       "flagged": r.records_flagged, "rejected": r.records_rejected,
                                       "requests": r.requests,
                                       "retries": r.retries} for r in self.streams}}


def effective_mode(warehouse: Warehouse, connection_id: str, request: ExtractRequest) -> str:
    """A connection that never finished a historical sync gets one first (B9, S3)."""
    if request.mode != "historical" and not request.is_backfill \
            and not warehouse.has_completed_historical(connection_id):
        return "historical"
    return request.mode


def stream_window(warehouse: Warehouse, connection_id: str, stream: Stream, mode: str,
                  request: ExtractRequest) -> Window:
    if request.is_backfill:
        return Window(request.start, request.end)
    if mode == "historical" or not stream.incremental:
        return Window(None, None)
    if mode == "catch_up":
        # "Manual sync": everything changed since the last successful sync of this connection (B8).
        # Take the earlier of our clock and the source's, so a skew between them cannot skip records.
        marks = [m for m in (warehouse.last_success_at(connection_id), warehouse.watermark(connection_id, stream.name))
                 if m is not None]
        return Window(min(marks) if marks else None, None)
    watermark = warehouse.watermark(connection_id, stream.name)
    if watermark is None:
        return Window(None, None)
    if stream.lookback_minutes == 0 and stream.resumes_from_keyset:
        # Resume after the records landed at the watermark instead of reading them again.
        return Window(watermark, None, warehouse.landed_at(connection_id, stream.table, watermark))
    return Window(watermark - timedelta(minutes=stream.lookback_minutes), None)


def run_connection(warehouse: Warehouse, session: ApiSession, connection_id: str, streams: tuple[Stream, ...],
                   request: ExtractRequest) -> ConnectionResult:
    """Extract every stream of one connection. Raises after recording a failed run-log row."""
    started = datetime.now(UTC)
    with warehouse.connection_lock(connection_id):
        mode = effective_mode(warehouse, connection_id, request)
        results = []
        for stream in streams:
            results.append(run_stream(warehouse, session, connection_id, stream, mode, request))
        if not request.is_backfill:
            warehouse.mark_success(connection_id, started)
    return ConnectionResult(connection_id, mode, results)


def run_stream(warehouse: Warehouse, session: ApiSession, connection_id: str, stream: Stream, mode: str,
               request: ExtractRequest) -> StreamRun:
    window = stream_window(warehouse, connection_id, stream, mode, request)
    run = StreamRun(run_id=request.run_id, connection_id=connection_id, stream=stream.name, sync_mode=mode,
                    started_at=datetime.now(UTC), window_start=window.start, window_end=window.end)
    requests_before, retries_before = session.stats.requests, session.stats.retries
    advances_watermark = stream.incremental and not request.is_backfill
    high_water: datetime | None = None
    # A record read twice in one run (changed while the run paged on) is counted once (B2, B8).
    seen = _SeenKeys()
    try:
        for attempt in range(1, STALE_CURSOR_RESTARTS + 1):
            try:
                for requested_at, page in _timed(stream.fetch(session, window)):
                    high_water = _land_page(warehouse, session, connection_id, stream, page, mode, run,
                                            high_water, requested_at, advance_per_page=advances_watermark
                                            and stream.sorted_by_replication_key, seen=seen)
                    _log_page(session, connection_id, stream, run, len(page), requests_before)
                break
            except StaleCursor:
                # Landing is idempotent, so re-reading the whole window is safe.
                log.warning("%s %s: stale cursor, restarting the window (attempt %d)", connection_id,
                            stream.name, attempt)
                if attempt == STALE_CURSOR_RESTARTS:
                    raise
        run.status = "success"
        with warehouse.transaction() as conn:
            if advances_watermark and high_water is not None:
                warehouse.advance_watermark(conn, connection_id, stream.name, high_water, request.run_id)
            _count_requests(run, session, requests_before, retries_before)
            warehouse.record_stream_run(run, conn)
    except Exception as exc:
        run.status = "failed"
        run.error = error_text(exc)
        _count_requests(run, session, requests_before, retries_before)
        warehouse.record_failed_run(run)
        raise
    log.info("%s %s (%s): fetched %d, landed %d, flagged %d, rejected %d, %d requests, %d retries",
             connection_id, stream.name, mode, run.records_fetched, run.records_landed, run.records_flagged,
             run.records_rejected, run.requests, run.retries)
    return run


@dataclass
class _SeenKeys:
    """The primary keys one stream run fetched and landed, so that each record counts once in the run log."""

    fetched: set[str] = field(default_factory=set)
    landed: set[str] = field(default_factory=set)
    unkeyed: int = 0  # records rejected before their key could be read: each counts as fetched


def _timed(pages) -> Iterator[tuple[datetime, list[dict]]]:
    """Each page with the time just before it was requested (an upper bound for any honest timestamp)."""
    iterator = iter(pages)
    while True:
        requested_at = datetime.now(UTC)
        try:
            page = next(iterator)
        except StopIteration:
            return
        yield requested_at, page


def describe_record(stream: Stream, item: Any, requested_at: datetime) -> RawRecord | RejectedRecord:
    """The landing metadata of one API record, read type-safely.

    - primary key: must be a non-empty ``str`` Postgres text can hold; else ``RejectedRecord``
      (``invalid_primary_key: <why>``) — a row without its key cannot be landed or replaced later;
    - replication key: ``None`` or a timezone-aware ``datetime``; anything else (unparseable text, a number)
      is ``invalid_replication_key`` — without a readable time the record could overwrite a newer copy;
      later than ``requested_at`` + ``FUTURE_TOLERANCE``: flag ``future_timestamp`` (the watermark is clamped by
      the caller; the time is kept, so versions landed before and after stay in order);
    - flag: the stream's rule; when it cannot read the record (an email that is a JSON number) the record
      lands as received with flag ``unreadable_field`` and dbt's checks decide.
    Exception messages are not kept (they may quote record content): the reason names the exception type, or for
    a ``FieldError`` of ``ecomsync.fields`` its message (the field and the JSON type found, never the value).
    """
    if not isinstance(item, dict):
        return RejectedRecord(None, f"not_an_object: a JSON {type(item).__name__}", _json_text(item))
    try:
        pk = stream.primary_key(item)
    except Exception as exc:
        return RejectedRecord(None, f"invalid_primary_key: {_why(exc)}", _json_text(item))
    if not isinstance(pk, str) or not pk or not storable_text(pk) or pk.startswith("sha256:"):
        return RejectedRecord(None, "invalid_primary_key: empty or not text", _json_text(item))
    updated_at: datetime | None = None
    flags = []
    replication_key = stream.replication_key
    if replication_key is not None:
        try:
            updated_at = replication_key(item)
        except Exception as exc:
            return RejectedRecord(pk, f"invalid_replication_key: {_why(exc)}", _json_text(item))
        if updated_at is not None and (not isinstance(updated_at, datetime) or updated_at.tzinfo is None):
            return RejectedRecord(pk, "invalid_replication_key: not a timezone-aware time", _json_text(item))
        if updated_at is not None and updated_at > requested_at + FUTURE_TOLERANCE:
            flags.append(FUTURE_FLAG)
    try:
        flag = stream.flag(item)
    except Exception:
        flag = UNREADABLE_FLAG
    if flag is not None and not (isinstance(flag, str) and storable_text(flag)):
        flag = UNREADABLE_FLAG
    return RawRecord(pk, item, updated_at, ",".join(([flag] if flag else []) + flags) or None)


def _why(exc: Exception) -> str:
    """A reason safe to store: a ``FieldError`` names the field and type (no value); anything else its type."""
    return str(exc) if isinstance(exc, FieldError) else type(exc).__name__


def _json_text(item: Any) -> str:
    try:
        return payload_json(item)
    except (UnstorablePayload, TypeError, ValueError):
        return fallback_json_text(item)


def _land_page(warehouse: Warehouse, session: ApiSession, connection_id: str, stream: Stream, page: list[dict],
               mode: str, run: StreamRun, high_water: datetime | None, requested_at: datetime,
               advance_per_page: bool, seen: _SeenKeys | None = None) -> datetime | None:
    seen = seen if seen is not None else _SeenKeys()
    records: list[RawRecord] = []
    rejected: list[RejectedRecord] = []
    for item in page:
        described = describe_record(stream, item, requested_at)
        if isinstance(described, RejectedRecord):
            rejected.append(described)
            continue
        records.append(described)
        updated_at = described.source_updated_at
        if updated_at is not None:
            updated_at = min(updated_at, requested_at)  # the watermark never passes the time of the request
            if high_water is None or updated_at > high_water:
                high_water = updated_at
    with warehouse.transaction() as conn:
        landed = warehouse.land_batch(conn, stream.table, connection_id, records, run.run_id, mode)
        warehouse.record_rejections(conn, stream.table, connection_id, rejected, run.run_id)
        if advance_per_page and high_water is not None:
            warehouse.advance_watermark(conn, connection_id, stream.name, high_water, run.run_id)
    # Each record counts once per run, however often paging under change hands it back.
    run.records_flagged += sum(1 for r in records if r.flag and r.pk not in seen.fetched)
    seen.fetched.update(r.pk for r in records)
    seen.fetched.update(r.pk for r in rejected if r.pk is not None)
    seen.unkeyed += sum(1 for r in rejected if r.pk is None)
    seen.landed.update(landed.landed_keys)
    run.records_fetched, run.records_landed = len(seen.fetched) + seen.unkeyed, len(seen.landed)
    run.records_rejected += len(rejected) + landed.rejected_count
    for record in rejected + landed.rejected:
        log.warning("%s %s: record %s rejected: %s", connection_id, stream.name,
                    redact(ascii(record.pk)[:80]) if record.pk else "(no key)", record.reason)
    return high_water


def _log_page(session: ApiSession, connection_id: str, stream: Stream, run: StreamRun, page_size: int,
              requests_before: int) -> None:
    """Progress a person following the task log can read (issue 19): one line per page."""
    stats = session.stats
    quota = session.pacer.quota_left()
    log.info("%s %s: page of %d records (%d so far, %d rejected), %d requests, quota left %s, "
             "%.1fs waited for the quota so far", connection_id, stream.name, page_size, run.records_fetched,
             run.records_rejected, stats.requests - requests_before, "n/a" if quota is None else quota,
             stats.waited_s)


def _count_requests(run: StreamRun, session: ApiSession, requests_before: int, retries_before: int) -> None:
    run.requests = session.stats.requests - requests_before
    run.retries = session.stats.retries - retries_before
