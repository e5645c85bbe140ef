"""A stream is a small declarative thing: path, primary key, replication key, paginator.

In the manner of the Singer SDK's ``RESTStream``: a source module lists its
streams; ``ecomsync.extract`` runs them. Nothing here knows about Airflow or the
warehouse.

There is ONE request loop, ``Stream.fetch``. A paginator only says which request
comes next and which records of an answer are new (``Paginator.begin`` returns
its per-run ``Pages``); the loop refuses to send a request it already sent, so a
paginator (or an API) that hands back a page or cursor it already had stops the
run with ``PagingError`` instead of looping or silently landing nothing new.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from ecomsync import fields
from ecomsync.http import ApiError, ApiSession


@dataclass(frozen=True)
class Window:
    """What to fetch: records changed in [start, end); ``None`` = unbounded on that side.

    ``landed_at_start``: primary keys of the records already landed whose replication
    time is exactly ``start`` (the watermark). A keyset paginator resumes after them
    instead of reading them again.
    """

    start: datetime | None
    end: datetime | None
    landed_at_start: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Request:
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        return json.dumps([self.params, self.body], sort_keys=True, default=str)


class PagingError(ApiError):
    """Paging cannot go on without skipping or repeating records (a repeated page or cursor,
    an answer not in the order the paginator relies on). Retrying cannot fix it."""


class StaleCursor(Exception):
    """The API refused a cursor (expired, or parameters differ): restart the window."""


class Pages(Protocol):
    """One run of a paginator: the next request to send, and what an answer holds."""

    def next_request(self) -> Request | None:
        """The request to send next; None when the list is exhausted."""

    def take(self, body: Any) -> list[dict]:
        """The new records in an answer (raises ``PagingError`` on an answer it cannot page on)."""

    def error(self, exc: ApiError) -> Exception:
        """What an API error on the current request means for paging (default: itself)."""


class Paginator(Protocol):
    def begin(self, request: Request, window: Window) -> Pages: ...


def _records_of(body: Any, envelope: str, path_hint: str = "") -> list[dict]:
    """``v2``: a bare array (None for a 204); ``v3``: ``{data: [...], meta}``."""
    if envelope == "v2":
        records = body or []
        if not isinstance(records, list):
            raise ApiError(f"{path_hint}expected a JSON array, got {type(records).__name__}")
        return records
    body = body or {}
    if not isinstance(body, dict):
        raise ApiError(f"{path_hint}expected a JSON object with data, got {type(body).__name__}")
    try:
        return fields.objects(body, "data")
    except fields.FieldError as exc:  # the whole answer is not a list: not one record's fault
        raise ApiError(f"{path_hint}{exc}") from None


class _SimplePages:
    def error(self, exc: ApiError) -> Exception:
        return exc


@dataclass(frozen=True)
class PageNumberPaginator:
    """BigCommerce v2 lists that never change during a read (``/v2/order_statuses``): a bare
    JSON array per page; a short page (or the 204 past the last one) ends the list."""

    limit: int = 250

    def begin(self, request: Request, window: Window) -> Pages:
        return _PageNumberPages(request, self.limit, "v2")


@dataclass(frozen=True)
class MetaPaginator:
    """BigCommerce v3 lists that are not read incrementally (category trees):
    ``{data, meta.pagination.total_pages}``."""

    limit: int = 250

    def begin(self, request: Request, window: Window) -> Pages:
        return _PageNumberPages(request, self.limit, "v3")


class _PageNumberPages(_SimplePages):
    def __init__(self, request: Request, limit: int, envelope: str):
        self.base, self.limit, self.envelope = request, limit, envelope
        self.page: int | None = 1

    def next_request(self) -> Request | None:
        if self.page is None:
            return None
        return Request({**self.base.params, "page": self.page, "limit": self.limit}, self.base.body)

    def take(self, body: Any) -> list[dict]:
        records = _records_of(body, self.envelope)
        if self.envelope == "v3":
            try:
                meta = fields.mapping((body or {}).get("meta"), "meta")
                total_pages = fields.integer(fields.mapping(meta.get("pagination"), "meta.pagination"),
                                             "total_pages")
            except fields.FieldError as exc:
                raise ApiError(f"unreadable paging metadata: {exc}") from None
            more = self.page < (total_pages or 0)
        else:
            more = len(records) >= self.limit
        self.page = self.page + 1 if more else None
        return records


@dataclass(frozen=True)
class KeysetPaginator:
    """BigCommerce lists read incrementally: paged from the last seen (time, id), never by page number.

    Page numbers are offsets: when a record changes between two page reads it moves
    to the end of a ``date_modified``-sorted list, everything behind it shifts one
    place forward and the record at the page boundary is never seen
    (../shared/api-specs/README.md, "Paging under change"). So each page is asked
    from the newest time of the page before (``min_param``, inclusive) and the records
    at or before the last seen (time, id) are dropped. The answer must come sorted by
    time, ties by id (``sort``); an answer out of that order is a ``PagingError``.

    When a whole page shares one second, that second is read on its own
    (``min_param`` = ``max_param`` = that second): by ``min_id`` in id order where the
    API has it (v2 orders), else by page number within the second; then the list goes
    on from the next second.

    ``time_of`` reads a record's replication time; ``envelope`` is ``v2`` (bare array,
    204 when empty) or ``v3`` (``{data, meta}``).

    A record whose time or id cannot be read (missing, garbage text, a number; issue 15)
    cannot be paged by: it is handed on as it is (landing lands it or rejects it with
    its reason, ``ecomsync.extract.describe_record``) and paging goes on from the
    readable records around it — the stream never stops on it. A full page without one
    readable (time, id) is followed by the next page number of the same request.
    """

    time_of: Callable[[dict], datetime | None]
    min_param: str
    max_param: str
    envelope: str  # "v2" | "v3"
    sort: str | None = None  # sent as ``sort`` on range reads (None: the API's own order is by time)
    id_sort: str | None = None  # v2: ``sort`` value for reading one second in id order with ``min_id``
    limit: int = 250

    def begin(self, request: Request, window: Window) -> Pages:
        return _KeysetPages(self, request, window)


def _page_key(time_of: Callable[[dict], datetime | None], record: Any) -> tuple[datetime, int] | None:
    """(time, id) of a record, or None when either cannot be read: never raises (issue 15)."""
    try:
        at = time_of(record)
        record_id = fields.integer_key(record)
    except Exception:  # any unreadable field: the record is handed on, landing gives the reason
        return None
    if not isinstance(at, datetime) or at.tzinfo is None:
        return None
    return at, record_id


def _readable_id(record: Any) -> int | None:
    try:
        return fields.integer_key(record)
    except fields.FieldError:
        return None


class _KeysetPages(_SimplePages):
    """State of one keyset read: the newest second seen (``at``) and the ids seen in it (``seen``)."""

    def __init__(self, spec: KeysetPaginator, request: Request, window: Window):
        self.spec, self.base = spec, request
        self.at: datetime | None = None
        self.seen: set[int] = set()
        self.since = window.start
        self.second: datetime | None = None  # reading this one second on its own
        self.second_page, self.second_min_id = 1, None
        # Whether ties (records of one second) came in ascending id order so far; only then may a second be
        # read on from the largest id seen in it. Without that, it is read again from its smallest id.
        self.ties_by_id = True
        self.done = False
        # Page number within the current request when whole pages had no readable (time, id) to page from.
        self.skip_page = 1
        if window.start is not None and window.landed_at_start:
            landed = {_readable_id({"id": pk}) for pk in window.landed_at_start}
            self.at, self.seen = window.start, {pk for pk in landed if pk is not None}
            if len(self.seen) >= spec.limit:  # a crowded second: do not read its landed pages again
                self._read_second(window.start, first_page_read=False)

    def _read_second(self, at: datetime, first_page_read: bool) -> None:
        """Read second ``at`` on its own (its first page-number page already read, or not)."""
        self.second, self.skip_page = at, 1
        if self.spec.id_sort:
            resume = self.ties_by_id and self.at == at and self.seen
            self.second_page, self.second_min_id = 1, (max(self.seen) + 1 if resume else None)
        else:
            self.second_page, self.second_min_id = (2 if first_page_read else 1), None

    def next_request(self) -> Request | None:
        if self.done:
            return None
        spec, params = self.spec, dict(self.base.params)
        params.pop(spec.min_param, None)
        if self.second is not None:
            stamp = iso_z(self.second)
            params.update({spec.min_param: stamp, spec.max_param: stamp, "limit": spec.limit})
            if spec.id_sort:
                params["sort"] = spec.id_sort
                if self.second_min_id is not None:
                    params["min_id"] = self.second_min_id
                if self.skip_page > 1:
                    params["page"] = self.skip_page
            else:
                params["page"] = self.second_page
                if spec.sort:
                    params["sort"] = spec.sort
            return Request(params, self.base.body)
        if self.since is not None:
            params[spec.min_param] = iso_z(self.since)
        if spec.sort:
            params["sort"] = spec.sort
        params["limit"] = spec.limit
        if self.skip_page > 1:
            params["page"] = self.skip_page
        return Request(params, self.base.body)

    def _is_new(self, key: tuple[datetime, int]) -> bool:
        return self.at is None or key[0] > self.at or (key[0] == self.at and key[1] not in self.seen)

    def take(self, body: Any) -> list[dict]:
        records = _records_of(body, self.spec.envelope)
        all_keys = [_page_key(self.spec.time_of, record) for record in records]
        keys = [key for key in all_keys if key is not None]  # the records paging can rely on
        by_id = self.second is not None and self.spec.id_sort is not None
        if [k[0] for k in keys] != sorted(k[0] for k in keys) or (by_id and keys != sorted(keys)):
            raise PagingError(f"the answer is not sorted by {self.spec.min_param.split(':')[0]}"
                              f"{' then id' if by_id else ''}: paging from the last seen record would skip records")
        if any(a[0] == b[0] and a[1] > b[1] for a, b in pairwise(keys)):
            self.ties_by_id = False
        fresh = [record for record, key in zip(records, all_keys) if key is None or self._is_new(key)]
        for key in sorted(keys):
            if self.at is None or key[0] > self.at:
                self.at, self.seen = key[0], {key[1]}
            elif key[0] == self.at:
                self.seen.add(key[1])
        full = len(records) >= self.spec.limit
        if self.second is not None:
            if full:
                ids = [i for i in map(_readable_id, records) if i is not None]
                if self.spec.id_sort and ids:
                    self.second_min_id, self.skip_page = max(ids) + 1, 1
                elif self.spec.id_sort:
                    self.skip_page += 1
                else:
                    self.second_page += 1
            else:  # the crowded second is read: go on after it
                self.since, self.second, self.skip_page = self.second + timedelta(seconds=1), None, 1
        elif not full:
            self.done = True
        elif not keys:  # nothing readable to page from: the next page of the same request
            self.skip_page += 1
        elif keys[0][0] == keys[-1][0]:  # a whole page in one second: read that second on its own
            # Its first page-number page is the page just read only when every record of it was in that second:
            # an unreadable record may have been any second's (then page 1 of the second alone holds records this
            # page did not, and skipping it lost them: found by test_keyset_paging_reads_every_record_…).
            self._read_second(keys[-1][0], first_page_read=len(keys) == len(records))
        else:
            self.since, self.skip_page = keys[-1][0], 1
        return fresh


@dataclass(frozen=True)
class CursorPaginator:
    """Square: ``cursor`` is present only while more results exist; the next request
    repeats every other parameter unchanged (a changed one is a 400 on ``cursor``)."""

    records_key: str

    def begin(self, request: Request, window: Window) -> Pages:
        return _CursorPages(request, self.records_key)


class _CursorPages:
    def __init__(self, request: Request, records_key: str):
        self.base, self.records_key = request, records_key
        self.cursor: str | None = None
        self.done = False

    def next_request(self) -> Request | None:
        if self.done:
            return None
        params, body = dict(self.base.params), dict(self.base.body) if self.base.body is not None else None
        if self.cursor:
            if body is not None:
                body["cursor"] = self.cursor
            else:
                params["cursor"] = self.cursor
        return Request(params, body)

    def take(self, answer: Any) -> list[dict]:
        try:
            answer = fields.mapping(answer, "answer")
            self.cursor = fields.text(answer, "cursor")
            records = fields.objects(answer, self.records_key)
        except fields.FieldError as exc:  # the whole answer is unreadable: not one record's fault
            raise ApiError(f"unreadable list answer: {exc}") from None
        self.done = not self.cursor
        return records

    def error(self, exc: ApiError) -> Exception:
        if self.cursor and exc.status == 400 and _mentions_cursor(exc.body):
            return StaleCursor(str(exc))
        return exc


def _mentions_cursor(body: Any) -> bool:
    errors = body.get("errors", []) if isinstance(body, dict) else []
    return any((e.get("field") == "cursor") or ("cursor" in str(e.get("detail", "")).lower()) for e in errors)


@dataclass(frozen=True)
class Stream:
    name: str
    table: str
    path: str
    paginator: Paginator
    primary_key: Callable[[dict], str]
    build_request: Callable[[Window], Request]
    method: str = "GET"
    replication_key: Callable[[dict], datetime | None] | None = None
    # True when pages come in ascending replication-key order, so the watermark may move after each page.
    sorted_by_replication_key: bool = False
    lookback_minutes: int = 0
    flag: Callable[[dict], str | None] = lambda record: None
    transform: Callable[[list[dict]], list[dict]] = lambda records: records
    # Which connection a stream belongs to where a source has two levels (Square: "merchant" = account-wide,
    # fetched once per account; "location" = per location); None where a source has one level.
    scope: str | None = None

    @property
    def incremental(self) -> bool:
        return self.replication_key is not None

    @property
    def resumes_from_keyset(self) -> bool:
        """True when a run can resume after the records landed at the watermark (``Window.landed_at_start``)."""
        return isinstance(self.paginator, KeysetPaginator)

    def fetch(self, session: ApiSession, window: Window) -> Iterator[list[dict]]:
        """Pages of new records in the window. The one request loop of every stream: it never sends the
        same request twice (``PagingError``: the paginator handed back a page or cursor it already had)."""
        pages = self.paginator.begin(self.build_request(window), window)
        sent: set[str] = set()
        while (request := pages.next_request()) is not None:
            fingerprint = request.fingerprint()
            if fingerprint in sent:
                raise PagingError(f"{self.name}: {self.method} {self.path} would ask again for a page it already "
                                  f"had ({fingerprint}); stopping instead of looping or skipping records")
            sent.add(fingerprint)
            try:
                _, body, _ = session.request_json(self.method, self.path, params=request.params or None,
                                                  json_body=request.body)
            except ApiError as exc:
                translated = pages.error(exc)
                if translated is exc:
                    raise
                raise translated from exc
            records = self.transform(pages.take(body))
            if records:
                yield records


# -- time formats ---------------------------------------------------------------------
parse_rfc2822 = fields.parse_rfc2822  # the readers live in ecomsync.fields; these names are kept for callers
parse_iso = fields.parse_iso


def iso_z(value: datetime) -> str:
    """RFC 3339 / ISO-8601 in UTC with a ``Z``, second precision (what both APIs accept)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
