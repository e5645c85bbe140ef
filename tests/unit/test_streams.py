"""Stream definitions (keys, flags, request parameters) and the one request loop, against small loopback servers."""
from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ecomsync import fields
from ecomsync.http import ApiSession
from ecomsync.sources import bigcommerce, square
from ecomsync.streams import (
    CursorPaginator,
    KeysetPaginator,
    PagingError,
    Request,
    Stream,
    Window,
    iso_z,
    parse_iso,
    parse_rfc2822,
)
from sandbox.core import Request as HttpRequest
from sandbox.core import Response, SandboxApp, serve

T = datetime(2024, 1, 10, 21, 5, 30, tzinfo=UTC)


def test_rfc2822_dates_become_utc():
    assert parse_rfc2822("Wed, 10 Jan 2018 21:05:30 +0000") == datetime(2018, 1, 10, 21, 5, 30, tzinfo=UTC)
    assert parse_rfc2822("Wed, 10 Jan 2018 16:05:30 -0500") == datetime(2018, 1, 10, 21, 5, 30, tzinfo=UTC)
    assert parse_iso("2018-01-10T23:35:30+02:30") == datetime(2018, 1, 10, 21, 5, 30, tzinfo=UTC)
    assert iso_z(T) == "2024-01-10T21:05:30Z"


def test_guest_checkouts_are_flagged_not_dropped():  # B5
    assert bigcommerce.ORDERS.flag({"id": 1, "customer_id": 0}) == "guest_checkout"
    assert bigcommerce.ORDERS.flag({"id": 2, "customer_id": 17}) is None


def test_square_customers_without_email_are_flagged():  # S1
    customers = next(s for s in square.streams_for("L1", T, 72) if s.name == "customers")
    assert customers.flag({"id": "C1"}) == "missing_email"
    assert customers.flag({"id": "C2", "email_address": "  "}) == "missing_email"
    assert customers.flag({"id": "C3", "email_address": "a@b.example"}) is None


def test_orders_ask_for_line_items_and_shipping_in_the_same_call():  # B12
    params = bigcommerce.ORDERS.build_request(Window(T, None)).params
    assert params["include"] == "consignments.line_items"
    assert params["sort"] == "date_modified:asc" and params["min_date_modified"] == "2024-01-10T21:05:30Z"
    assert "max_date_modified" not in params


def test_no_stream_asks_for_an_orders_coupons():  # B12 (issue 16: applied_discounts on the line items)
    assert all("coupons" not in stream.path for stream in bigcommerce.STREAMS)
    assert not hasattr(bigcommerce.ORDERS, "children")


def test_every_incremental_bigcommerce_stream_pages_by_keyset():  # B2, B8
    incremental = [stream for stream in bigcommerce.STREAMS if stream.incremental]
    assert {stream.name for stream in incremental} == {"orders", "customers", "subscribers", "products", "refunds"}
    assert all(isinstance(stream.paginator, KeysetPaginator) and stream.sorted_by_replication_key
               for stream in incremental)


def test_refunds_are_asked_by_creation_time():  # B4
    params = bigcommerce.REFUNDS.build_request(Window(T, None)).params
    assert params == {"created:min": "2024-01-10T21:05:30Z"}
    assert bigcommerce.REFUNDS.replication_key({"id": 1, "created": "2024-01-10T21:05:30Z"}) == T


def test_category_trees_are_flattened():
    tree = [{"id": 1, "name": "Outdoor", "children": [{"id": 2, "name": "Tents", "children": []}]}]
    flat = bigcommerce.CATEGORIES.transform(tree)
    assert sorted((n["id"], n["name"]) for n in flat) == [(1, "Outdoor"), (2, "Tents")]
    assert all("children" not in n for n in flat)


def test_an_unreadable_category_node_lands_whole_and_the_rest_of_the_tree_is_flattened():  # B2, issue 15
    # The old flattening called .get on every node and extended the stack with any "children": one node whose
    # children were a number (or a child that was a string) stopped the categories stream of the store.
    tree = [{"id": 1, "name": "Outdoor", "children": 7},
            {"id": 2, "name": "Books", "children": [{"id": 3, "name": "Fiction", "children": ["x"]},
                                                    {"id": 4, "name": "Poetry", "children": []}]},
            "not a node"]
    flat = bigcommerce.CATEGORIES.transform(tree)
    assert {"id": 1, "name": "Outdoor", "children": 7} in flat and "not a node" in flat
    assert {"id": 3, "name": "Fiction", "children": ["x"]} in flat  # whole, as received
    assert {"id": 2, "name": "Books"} in flat and {"id": 4, "name": "Poetry"} in flat and len(flat) == 5
    assert bigcommerce.CATEGORIES.primary_key({"category_id": 21}) == "21"
    with pytest.raises(fields.FieldError):
        bigcommerce.CATEGORIES.primary_key({"id": {"nested": 1}})


def test_payments_never_rely_on_the_apis_defaults():  # S3
    """`begin_time` defaults to one year back and `location_id` to the main location."""
    start = datetime(2000, 1, 1, tzinfo=UTC)
    payments = next(s for s in square.streams_for("L2", start, 72) if s.name == "payments")
    params = payments.build_request(Window(None, None)).params
    assert params["location_id"] == "L2" and params["begin_time"] == "2000-01-01T00:00:00Z"
    incremental = payments.build_request(Window(T, None)).params
    assert incremental["updated_at_begin_time"] == "2024-01-10T21:05:30Z"
    assert incremental["sort_field"] == "UPDATED_AT"
    assert payments.lookback_minutes == 72 * 60  # late offline payments (S4)


def test_orders_search_filter_field_matches_sort_field():
    orders = next(s for s in square.streams_for("L1", T, 72) if s.name == "orders")
    body = orders.build_request(Window(T, None)).body
    assert body["location_ids"] == ["L1"]
    assert body["query"]["sort"]["sort_field"] == "UPDATED_AT"
    assert "updated_at" in body["query"]["filter"]["date_time_filter"]


# -- the one request loop, against small real HTTP servers --------------------------------------------------------------
class ListApp(SandboxApp):
    """A v3-style list of records ``{id, date_modified}`` sorted by (date_modified, id), ``date_modified:min``
    inclusive, page/limit; ``misbehave`` breaks it the way a paginator must notice."""

    def __init__(self, records: list[dict], misbehave: str = "", v2: bool = False):
        super().__init__()
        self.records, self.misbehave, self.lock, self.v2 = records, misbehave, threading.Lock(), v2
        self.add_route("GET", r"/items", self.items)
        self.add_route("POST", r"/search", self.search)

    def items(self, request: HttpRequest) -> Response:
        with self.lock:  # ties in id order, or (misbehave "ties_reversed") in reverse id order
            reverse = -1 if self.misbehave == "ties_reversed" else 1
            rows = sorted(self.records, key=lambda r: (r["date_modified"], reverse * r["id"]))
        if request.arg("sort") == "id:asc":
            rows = sorted(rows, key=lambda r: r["id"])
        if request.arg("min_id"):
            rows = [r for r in rows if r["id"] >= int(request.arg("min_id"))]
        since = request.arg("date_modified:min")
        if since and self.misbehave != "ignores_filters":
            rows = [r for r in rows if r["date_modified"] >= since]
        until = request.arg("date_modified:max")
        if until and self.misbehave != "ignores_filters":
            rows = [r for r in rows if r["date_modified"] <= until]
        if self.misbehave == "unsorted":
            rows = sorted(rows, key=lambda r: -r["id"])
        page, limit = int(request.arg("page") or 1), int(request.arg("limit") or 50)
        # A record's "_shown" fields replace what it is served with (a garbage date_modified), while the list
        # is sorted and filtered by its real time: an API whose stored time and payload disagree.
        found = [{**{k: v for k, v in r.items() if k != "_shown"}, **r.get("_shown", {})}
                 for r in rows[(page - 1) * limit:page * limit]]
        if self.v2:  # orders.v2: a bare array, 204 past the last page
            return Response(200, found) if found else Response(204)
        return Response(200, {"data": found, "meta": {"pagination": {"total": len(rows)}}})

    def search(self, request: HttpRequest) -> Response:
        return Response(200, {"things": [{"id": "a"}], "cursor": "same-cursor-every-time"})


@pytest.fixture
def serve_app():
    servers = []

    def start(app: SandboxApp) -> ApiSession:
        server, _ = serve(app)
        servers.append(server)
        return ApiSession(f"http://127.0.0.1:{server.server_port}", {}, max_attempts=1)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _items_stream(limit: int = 5, id_sort: str | None = None, envelope: str = "v3") -> Stream:
    return Stream(name="items", table="t", path="/items", primary_key=lambda r: str(r["id"]),
                  paginator=KeysetPaginator(time_of=lambda r: fields.iso_time(r, "date_modified"),
                                            min_param="date_modified:min", max_param="date_modified:max",
                                            envelope=envelope, sort="date_modified:asc", id_sort=id_sort,
                                            limit=limit),
                  build_request=lambda window: Request({"date_modified:min": iso_z(window.start)} if window.start
                                                       else {}),
                  replication_key=lambda r: parse_iso(r["date_modified"]), sorted_by_replication_key=True)


def _stamp(seconds: int) -> str:
    return iso_z(T + timedelta(seconds=seconds))


def test_a_paginator_that_hands_back_a_cursor_it_already_had_stops_with_a_clear_error(serve_app):
    session = serve_app(ListApp([]))
    stream = Stream(name="things", table="t", path="/search", method="POST", paginator=CursorPaginator("things"),
                    primary_key=lambda r: r["id"], build_request=lambda window: Request(body={"limit": 1}))
    pages = stream.fetch(session, Window(None, None))
    assert next(pages) == [{"id": "a"}]
    assert next(pages) == [{"id": "a"}]  # the first cursor is new
    with pytest.raises(PagingError, match="already had"):
        next(pages)
    assert session.stats.requests == 2, "the repeated request is never sent"


def test_an_api_that_ignores_the_keyset_filter_stops_the_stream_instead_of_looping(serve_app):
    session = serve_app(ListApp([{"id": i, "date_modified": _stamp(i)} for i in range(12)], "ignores_filters"))
    with pytest.raises(PagingError, match="already had"):
        for _ in _items_stream().fetch(session, Window(None, None)):
            pass


def test_an_answer_out_of_time_order_stops_keyset_paging_rather_than_skipping(serve_app):
    session = serve_app(ListApp([{"id": i, "date_modified": _stamp(i)} for i in range(12)], "unsorted"))
    with pytest.raises(PagingError, match="not sorted"):
        list(_items_stream().fetch(session, Window(None, None)))


@settings(max_examples=200, deadline=None)
@given(stamps=st.lists(st.integers(0, 6), min_size=0, max_size=23),
       edits=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 22)), max_size=4),
       landed_at_start=st.booleans(), by_min_id=st.booleans(), ties_reversed=st.booleans())
def test_keyset_paging_reads_every_record_whatever_changes_between_pages(stamps, edits, landed_at_start, by_min_id,
                                                                         ties_reversed):  # B2, B8
    """Any list (many records per second, whole pages in one second, ties in any id order), any edits between
    page reads (an edited record moves to the end), a crowded second read by ``min_id`` (v2) or page number (v3):
    every record is read, in its newest version, and none twice unless it changed."""
    records = [{"id": i, "date_modified": _stamp(s), "v": 0} for i, s in enumerate(sorted(stamps))]
    app = ListApp(records, "ties_reversed" if ties_reversed else "")
    server = _shared_server()
    server.app = app
    session = ApiSession(f"http://127.0.0.1:{server.server_port}", {}, max_attempts=1)
    start, done = None, frozenset()
    if landed_at_start and records:  # resume from a watermark with what was landed at it
        start = parse_iso(records[len(records) // 2]["date_modified"])
        done = frozenset(str(r["id"]) for r in records if parse_iso(r["date_modified"]) == start)
    pending = sorted(edits)
    seen: dict[str, dict] = {}
    served = list(app.records)
    stream = _items_stream(limit=5, id_sort="id:asc" if by_min_id else None)
    for page_no, page in enumerate(stream.fetch(session, Window(start, None, done))):
        for record in page:
            key = str(record["id"])
            assert key not in seen or seen[key] != record, "read twice without a change"
            seen[key] = record
        with app.lock:
            served = list(app.records)  # the list as the last page was served (later edits: after the run)
            for after_page, target in [e for e in pending if e[0] == page_no]:
                if target < len(app.records):  # edited now: newer than everything, moves to the end
                    app.records[target] = {**app.records[target], "date_modified": _stamp(10 + page_no),
                                           "v": app.records[target]["v"] + 1}
            pending = [e for e in pending if e[0] != page_no]
    expected = {str(r["id"]): r for r in served
                if start is None or parse_iso(r["date_modified"]) > start or
                (parse_iso(r["date_modified"]) == start and str(r["id"]) not in done)}
    assert {k: seen[k] for k in expected} == expected


_SERVER = []


def _shared_server():
    """One loopback server for every example (its app swapped per example): shutting one down takes 0.5 s."""
    if not _SERVER:
        server, _ = serve(ListApp([]))
        _SERVER.append(server)
    return _SERVER[0]


# -- one unreadable record never stops keyset paging (issue 15) ------------------------------------------------
GARBAGE_TIMES = ["garbage", "", None, 1717236000, "2025-13-45T99:00:00Z", {"date": "x"}, "Mon, 99 Foo 2025"]


@pytest.mark.parametrize("envelope", ["v2", "v3"])
def test_a_garbage_date_on_the_last_record_of_a_full_page_is_paged_past_not_fatal(serve_app, envelope):  # B2, B10
    # The old paginator read every record's time to page on: ValueError on the last record of a full page, and
    # the store's orders stopped there on every run.
    records = [{"id": i, "date_modified": _stamp(i)} for i in range(12)]
    records[4]["_shown"] = {"date_modified": "yesterday"}  # the last record of the first page of 5
    records[9]["_shown"] = {"date_modified": 12345}  # and of the second
    session = serve_app(ListApp(records, v2=envelope == "v2"))
    read = [r for page in _items_stream(5, "id:asc" if envelope == "v2" else None, envelope).fetch(
        session, Window(None, None)) for r in page]
    assert {r["id"] for r in read} == set(range(12))
    assert {str(r["date_modified"]) for r in read if r["id"] in (4, 9)} == {"yesterday", "12345"}  # as served
    readable = [r["id"] for r in read if r["id"] not in (4, 9)]
    assert len(readable) == len(set(readable)) == 10


def test_a_full_page_without_one_readable_time_goes_on_by_page_number(serve_app):  # B2, B10
    records = [{"id": i, "date_modified": _stamp(i), **({"_shown": {"date_modified": None}} if i < 10 else {})}
               for i in range(13)]
    session = serve_app(ListApp(records))
    read = [r["id"] for page in _items_stream(5).fetch(session, Window(None, None)) for r in page]
    assert sorted(set(read)) == list(range(13))


@settings(max_examples=200, deadline=None)
@given(stamps=st.lists(st.integers(0, 6), min_size=0, max_size=23),
       garbage=st.dictionaries(st.integers(0, 22), st.sampled_from(GARBAGE_TIMES), max_size=8),
       by_min_id=st.booleans(), v2=st.booleans())
# found by this test in a session's run: a full first page in one second but for two unreadable records of an
# earlier second, whose second's own first page held a record that page did not
@example(stamps=[0, 0, 1, 1, 1, 1], garbage={0: "garbage", 1: "garbage"}, by_min_id=False, v2=False)
def test_keyset_paging_reads_every_record_whatever_records_cannot_be_paged_by(stamps, garbage, by_min_id,
                                                                             v2):  # B2, B10, issue 15
    """Any list, any records in it served with an unreadable ``date_modified`` (missing, garbage text, a number,
    an object) anywhere — the last of a full page, whole pages of them, inside a crowded second: paging never
    fails, never loops, and every record is handed on at least once (a readable one as served, an unreadable one
    for landing to reject with its reason)."""
    records = [{"id": i, "date_modified": _stamp(s)} for i, s in enumerate(sorted(stamps))]
    for index, shown in garbage.items():
        if index < len(records):
            records[index]["_shown"] = {"date_modified": shown}
    app = ListApp(records, v2=v2)
    server = _shared_server()
    server.app = app
    session = ApiSession(f"http://127.0.0.1:{server.server_port}", {}, max_attempts=1)
    stream = _items_stream(limit=5, id_sort="id:asc" if by_min_id else None, envelope="v2" if v2 else "v3")
    read = [record for page in stream.fetch(session, Window(None, None)) for record in page]
    assert {r["id"] for r in read} == {r["id"] for r in records}
    readable = [r["id"] for r in read if "_shown" not in records[r["id"]]]
    assert len(readable) == len(set(readable)), "a readable record handed on twice without a change"
    assert session.stats.requests <= 2 * len(records) + 3, "paging went round in circles"


@settings(max_examples=500, deadline=None)
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                          max_leaves=6),
       record_is_object=st.booleans())
def test_every_field_reader_returns_its_type_or_a_field_error(value, record_is_object):  # issue 15
    """The one accessor module: whatever JSON a field holds (or whatever the record is), a reader returns the
    documented type or raises ``FieldError`` — never ``AttributeError``/``TypeError`` from deep inside."""
    record = {"f": value} if record_is_object else value
    readers = {fields.text: (str, type(None)), fields.trimmed: (str,), fields.integer: (int, type(None)),
               fields.key: (str,), fields.integer_key: (int,), fields.rfc2822_time: (datetime, type(None)),
               fields.iso_time: (datetime, type(None)), fields.objects: (list,)}
    for reader, types in readers.items():
        try:
            result = reader(record, "f")
        except fields.FieldError as exc:
            # the reader's fixed words and the JSON type, never the value (a value such as "0" may still occur in
            # the fixed words: "ISO 8601")
            assert re.fullmatch(r"field 'f': expected [a-zA-Z0-9 -]+, got (string|number|boolean|null|array|object)",
                                str(exc)), str(exc)
        else:
            assert isinstance(result, types), (reader.__name__, result)
            if isinstance(result, datetime):
                assert result.tzinfo is not None
