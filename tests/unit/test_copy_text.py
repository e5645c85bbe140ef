"""COPY text of landed payloads (P2, issue 16): the fast escaping of JSON text equals the general one."""
from __future__ import annotations

from datetime import UTC

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ecomsync.warehouse import (
    RawRecord,
    _copy_json,
    _copy_text,
    _PageJson,
    _raw_line_fields,
    payload_json,
    payload_utf8,
    raw_copy_lines,
)

# Any JSON value, with strings full of what COPY's text format must escape (backslash, tab, newline, CR) and the
# control characters JSON itself escapes.
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\\\t\n\r\x00\x1f"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=30)


@settings(max_examples=500)
@given(JSON)
def test_json_text_needs_only_its_backslashes_doubled(payload):  # P2
    text = payload_json(payload)
    assert not set(text) & {"\t", "\n", "\r"}
    assert payload_utf8(payload) == text.encode()
    assert _copy_json(payload_utf8(payload)) == _copy_text(text).encode()


KEY = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\\\t\n\r"),
              min_size=1)
RECORDS = st.lists(st.tuples(KEY, JSON, st.none() | st.datetimes(timezones=st.just(UTC)), st.none() | KEY),
                   max_size=8)


def read_all(file) -> bytes:
    return b"".join(iter(file.read, b""))


@settings(max_examples=300)
@given(RECORDS, KEY, st.sampled_from(["historical", "incremental"]))
def test_the_streamed_copy_lines_escape_every_field_as_copy_text(rows, connection_id, mode):  # P2, issue 16
    records = [RawRecord(pk, payload, at, flag) for pk, payload, at, flag in rows]
    page = _PageJson(list(enumerate(records)))
    streamed = read_all(page.lines(*_raw_line_fields(connection_id, "run\t1", mode), lambda _: b"\n"))
    expected = "".join("\t".join((
        _copy_text(connection_id), _copy_text(r.pk), _copy_text(payload_json(r.payload)),
        r.source_updated_at.isoformat() if r.source_updated_at else "\\N", _copy_text("run\t1"), mode,
        _copy_text(r.flag))) + "\n" for r in records)
    assert streamed.decode() == expected
    assert raw_copy_lines(connection_id, [(r, payload_json(r.payload)) for r in records], "run\t1", mode) == expected


@settings(max_examples=300)
@given(st.lists(st.booleans(), max_size=12), st.lists(st.integers(0, 14), max_size=4))
def test_a_page_is_serialised_once_in_order_however_often_a_copy_restarts(storable, cuts):  # B2, issue 16
    # A COPY refused part-way has read only the first rows; the next pass reads the whole page.
    records = [(i, RawRecord(str(i), {"i": i} if ok else {"i": i, "set": {1}}, None)) for i, ok in enumerate(storable)]
    page = _PageJson(records)
    for cut in cuts:
        for _ in zip(range(cut), page):
            pass
    rows = list(page)
    assert [record.pk for record, _ in rows] == [str(i) for i, ok in enumerate(storable) if ok]
    assert all(text == orjson.dumps(record.payload) for record, text in rows)
    assert list(page) == rows
    assert [(position, rejection.pk, rejection.reason) for position, rejection in page.rejected] == [
        (i, str(i), "payload_not_storable: no faithful JSON text (TypeError)") for i, ok in enumerate(storable)
        if not ok]
