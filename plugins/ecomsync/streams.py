"""A stream is a small declarative thing: path, primary key, replication key, paginator.

In the manner of the Singer SDK's ``RESTStream``: a source module lists its
streams; ``ecomsync.extract`` runs them. Nothing here knows about Airflow or the
warehouse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Protocol

from ecomsync.http import ApiError, ApiSession


@dataclass(frozen=True)
class Window:
    """What to fetch: records changed in [start, end); ``None`` = unbounded on that side."""

    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class Request:
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None


class Paginator(Protocol):
    def pages(self, session: ApiSession, method: str, path: str, request: Request) -> Iterator[list[dict]]: ...


@dataclass(frozen=True)
class PageNumberPaginator:
    """BigCommerce v2: a bare JSON array per page; past the last page the API answers 204."""

    limit: int = 250

    def pages(self, session: ApiSession, method: str, path: str, request: Request) -> Iterator[list[dict]]:
        page = 1
        while True:
            _, body, _ = session.request_json(method, path, params={**request.params, "page": page, "limit": self.limit})
            records = body or []
            if not isinstance(records, list):
                raise ApiError(f"GET {path}: expected a JSON array, got {type(records).__name__}")
            if records:
                yield records
            if len(records) < self.limit:
                return
            page += 1


@dataclass(frozen=True)
class MetaPaginator:
    """BigCommerce v3: ``{data, meta.pagination.total_pages}``."""

    limit: int = 250

    def pages(self, session: ApiSession, method: str, path: str, request: Request) -> Iterator[list[dict]]:
        page = 1
        while True:
            _, body, _ = session.request_json(method, path, params={**request.params, "page": page, "limit": self.limit})
            body = body or {}
            if body.get("data"):
                yield body["data"]
            total_pages = ((body.get("meta") or {}).get("pagination") or {}).get("total_pages", 0)
            if page >= total_pages:
                return
            page += 1


class StaleCursor(Exception):
    """The API refused a cursor (expired, or parameters differ): restart the window."""


@dataclass(frozen=True)
class CursorPaginator:
    """Square: ``cursor`` is present only while more results exist; the next request
    repeats every other parameter unchanged (a changed one is a 400 on ``cursor``)."""

    records_key: str

    def pages(self, session: ApiSession, method: str, path: str, request: Request) -> Iterator[list[dict]]:
        cursor = None
        while True:
            params, body = dict(request.params), dict(request.body) if request.body is not None else None
            if cursor:
                if body is not None:
                    body["cursor"] = cursor
                else:
                    params["cursor"] = cursor
            try:
                _, answer, _ = session.request_json(method, path, params=params or None, json_body=body)
            except ApiError as exc:
                if cursor and exc.status == 400 and _mentions_cursor(exc.body):
                    raise StaleCursor(str(exc)) from exc
                raise
            answer = answer or {}
            if answer.get(self.records_key):
                yield answer[self.records_key]
            cursor = answer.get("cursor")
            if not cursor:
                return


def _mentions_cursor(body: Any) -> bool:
    errors = body.get("errors", []) if isinstance(body, dict) else []
    return any((e.get("field") == "cursor") or ("cursor" in str(e.get("detail", "")).lower()) for e in errors)


@dataclass(frozen=True)
class ChildStream:
    """Records fetched per parent record (e.g. an order's coupons), landed with the parent's page."""

    table: str
    path_for: Callable[[dict], str | None]  # None: this parent has no children worth a request
    primary_key: Callable[[dict], str]


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
    children: tuple[ChildStream, ...] = ()

    @property
    def incremental(self) -> bool:
        return self.replication_key is not None

    def fetch(self, session: ApiSession, window: Window) -> Iterator[list[dict]]:
        for page in self.paginator.pages(session, self.method, self.path, self.build_request(window)):
            records = self.transform(page)
            if records:
                yield records


# -- time formats ---------------------------------------------------------------------
def parse_rfc2822(value: str | None) -> datetime | None:
    if not value:
        return None
    return parsedate_to_datetime(value).astimezone(timezone.utc)


def parse_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def iso_z(value: datetime) -> str:
    """RFC 3339 / ISO-8601 in UTC with a ``Z``, second precision (what both APIs accept)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
