"""Run one connection's streams: choose the window, fetch, land, commit the watermark.

One implementation for both sources. A page and the watermark it justifies are
committed in one transaction; a failure leaves the watermark where the last
landed page put it, so the next run resumes there and re-landing is a no-op.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ecomsync.http import ApiSession
from ecomsync.streams import StaleCursor, Stream, Window
from ecomsync.warehouse import RawRecord, StreamRun, Warehouse

log = logging.getLogger(__name__)

MODES = ("incremental", "catch_up", "historical")
STALE_CURSOR_RESTARTS = 3


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
                                       "flagged": r.records_flagged, "requests": r.requests,
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
    started = datetime.now(timezone.utc)
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
                    started_at=datetime.now(timezone.utc), window_start=window.start, window_end=window.end)
    requests_before, retries_before = session.stats.requests, session.stats.retries
    advances_watermark = stream.incremental and not request.is_backfill
    high_water: datetime | None = None
    # A record read twice in one run (changed while the run paged on) is counted once (B2, B8).
    seen = _SeenKeys()
    try:
        for attempt in range(1, STALE_CURSOR_RESTARTS + 1):
            try:
                for page in stream.fetch(session, window):
                    high_water = _land_page(warehouse, session, connection_id, stream, page, mode, run,
                                            high_water, advance_per_page=advances_watermark
                                            and stream.sorted_by_replication_key, seen=seen)
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
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        _count_requests(run, session, requests_before, retries_before)
        warehouse.record_stream_run(run)
        raise
    log.info("%s %s (%s): fetched %d, landed %d, flagged %d, %d requests, %d retries", connection_id,
             stream.name, mode, run.records_fetched, run.records_landed, run.records_flagged, run.requests,
             run.retries)
    return run


@dataclass
class _SeenKeys:
    """The primary keys one stream run fetched and landed, so that each record counts once in the run log."""

    fetched: set[str] = field(default_factory=set)
    landed: set[str] = field(default_factory=set)


def _land_page(warehouse: Warehouse, session: ApiSession, connection_id: str, stream: Stream, page: list[dict],
               mode: str, run: StreamRun, high_water: datetime | None, advance_per_page: bool,
               seen: _SeenKeys) -> datetime | None:
    records = []
    for item in page:
        updated_at = stream.replication_key(item) if stream.replication_key else None
        records.append(RawRecord(stream.primary_key(item), item, updated_at, stream.flag(item)))
        if updated_at is not None and (high_water is None or updated_at > high_water):
            high_water = updated_at
    with warehouse.transaction() as conn:
        warehouse.land(conn, stream.table, connection_id, records, run.run_id, mode, seen.landed)
        if advance_per_page and high_water is not None:
            warehouse.advance_watermark(conn, connection_id, stream.name, high_water, run.run_id)
    run.records_flagged += sum(1 for r in records if r.flag and r.pk not in seen.fetched)
    seen.fetched.update(r.pk for r in records)
    run.records_fetched, run.records_landed = len(seen.fetched), len(seen.landed)
    return high_water


def _count_requests(run: StreamRun, session: ApiSession, requests_before: int, retries_before: int) -> None:
    run.requests = session.stats.requests - requests_before
    run.retries = session.stats.retries - retries_before
