"""Landing into raw.* on a real Postgres: idempotent, bulk, watermarks with their rows (P2)."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecomsync.warehouse import ConcurrentRunError, RawRecord, Warehouse

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def warehouse(warehouse_url):
    wh = Warehouse(warehouse_url)
    wh.ensure_schema()
    return wh


def land(wh, records, run_id="r1", mode="historical"):
    with wh.transaction() as conn:
        return wh.land(conn, "bigcommerce_orders", "bigcommerce:s1", records, run_id, mode)


def rows(wh):
    with wh.transaction() as conn, conn.cursor() as cur:
        cur.execute("select pk, payload, run_id, sync_mode, flag, loaded_at from raw.bigcommerce_orders order by pk")
        return cur.fetchall()


def test_relanding_the_same_window_is_a_no_op(warehouse):  # P2
    batch = [RawRecord(str(i), {"id": i, "total": "1.0000"}, T0 + timedelta(minutes=i)) for i in range(100)]
    assert land(warehouse, batch) == 100
    before = rows(warehouse)
    assert land(warehouse, batch, run_id="r2", mode="incremental") == 0
    assert rows(warehouse) == before  # not even loaded_at or run_id moved


def test_a_changed_record_replaces_its_old_version_and_carries_the_new_mode(warehouse):  # P2, B4
    land(warehouse, [RawRecord("1", {"id": 1, "status_id": 1}, T0)])
    assert land(warehouse, [RawRecord("1", {"id": 1, "status_id": 4}, T0 + timedelta(hours=1))],
                run_id="r2", mode="incremental") == 1
    [(pk, payload, run_id, mode, _, _)] = rows(warehouse)
    assert (payload["status_id"], run_id, mode) == (4, "r2", "incremental")


def test_the_same_record_twice_in_a_batch_keeps_the_newest(warehouse):
    batch = [RawRecord("7", {"id": 7, "v": "new"}, T0 + timedelta(minutes=5)),
             RawRecord("7", {"id": 7, "v": "old"}, T0)]
    assert land(warehouse, batch) == 1
    assert rows(warehouse)[0][1]["v"] == "new"


def test_hostile_text_lands_unchanged(warehouse):
    payload = {"id": 1, "name": "Zoë \"<script>\" '; drop table raw.bigcommerce_orders; --\n\t\\ 🎉" + "x" * 10_000}
    land(warehouse, [RawRecord("1", payload, T0, flag="guest_checkout")])
    [(_, stored, _, _, flag, _)] = rows(warehouse)
    assert stored == payload and flag == "guest_checkout"


def test_keys_and_flags_with_tabs_and_backslashes_and_odd_json_values_land_intact(warehouse):  # P2
    # COPY's text format escapes every field; an integer beyond 64 bits takes the standard-library path.
    payload = {"id": 2**70, "note": "a\tb\\nc\r", "nested": {"k": [1.5, None, True]}}
    land(warehouse, [RawRecord("key\twith\\odd\nchars", payload, None, flag="flag\\x")])
    [(pk, stored, _, _, flag, _)] = rows(warehouse)
    assert (pk, flag) == ("key\twith\\odd\nchars", "flag\\x")
    assert stored == payload


def test_watermark_moves_only_forward_and_commits_with_its_rows(warehouse):
    with warehouse.transaction() as conn:
        warehouse.land(conn, "bigcommerce_orders", "bigcommerce:s1", [RawRecord("1", {"id": 1}, T0)], "r1", "incremental")
        warehouse.advance_watermark(conn, "bigcommerce:s1", "orders", T0, "r1")
    with warehouse.transaction() as conn:
        warehouse.advance_watermark(conn, "bigcommerce:s1", "orders", T0 - timedelta(days=1), "r2")
    assert warehouse.watermark("bigcommerce:s1", "orders") == T0
    with pytest.raises(RuntimeError):
        with warehouse.transaction() as conn:
            warehouse.land(conn, "bigcommerce_orders", "bigcommerce:s1", [RawRecord("2", {"id": 2}, T0)], "r3", "incremental")
            warehouse.advance_watermark(conn, "bigcommerce:s1", "orders", T0 + timedelta(days=1), "r3")
            raise RuntimeError("crash before commit")
    assert warehouse.watermark("bigcommerce:s1", "orders") == T0
    assert [r[0] for r in rows(warehouse)] == ["1"]


def test_two_extracts_of_one_connection_cannot_interleave(warehouse):
    with warehouse.connection_lock("bigcommerce:s1"):
        with pytest.raises(ConcurrentRunError, match="cannot interleave"):
            with warehouse.connection_lock("bigcommerce:s1"):
                pass
        with warehouse.connection_lock("bigcommerce:other"):
            pass
    with warehouse.connection_lock("bigcommerce:s1"):
        pass


def test_unknown_tables_are_refused(warehouse):
    with pytest.raises(ValueError):
        with warehouse.transaction() as conn:
            warehouse.land(conn, "orders; drop table x", "c", [RawRecord("1", {}, None)], "r", "historical")


def temp_batch_table_exists(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("select to_regclass('pg_temp.landing_batch') is not null")
        return cur.fetchone()[0]


def test_a_page_of_new_records_is_copied_straight_into_the_raw_table(warehouse):  # P2 (issue 16: landing ÷ COPY)
    page = [RawRecord(str(i), {"id": i, "note": "tab\there"}, T0 + timedelta(minutes=i), flag=None if i % 2 else "f")
            for i in range(300)]
    with warehouse.transaction() as conn:
        assert warehouse.land(conn, "bigcommerce_orders", "bigcommerce:s1", page, "r1", "historical") == 300
        assert not temp_batch_table_exists(conn)  # one pass: no temporary table, no upsert
        with conn.cursor() as cur:
            cur.execute("select now()")
            transaction_time = cur.fetchone()[0]
    landed = rows(warehouse)
    assert len(landed) == 300
    by_pk = {pk: (payload, run_id, mode, flag, loaded_at) for pk, payload, run_id, mode, flag, loaded_at in landed}
    assert by_pk["7"] == ({"id": 7, "note": "tab\there"}, "r1", "historical", None, transaction_time)
    assert by_pk["8"][3] == "f"
    # the same connection's next page of new keys takes the same path; another connection's same keys too
    with warehouse.transaction() as conn:
        assert warehouse.land(conn, "bigcommerce_orders", "bigcommerce:s1", [RawRecord("new", {"id": 0}, T0)],
                              "r1", "historical") == 1
        assert warehouse.land(conn, "bigcommerce_orders", "bigcommerce:s2", page[:5], "r1", "historical") == 5
        assert not temp_batch_table_exists(conn)


def test_a_page_with_a_landed_or_repeated_key_takes_the_upsert_and_keeps_the_newer_copy(warehouse):  # P2, B4
    land(warehouse, [RawRecord("1", {"id": 1, "v": "newer"}, T0 + timedelta(hours=1))])
    with warehouse.transaction() as conn:
        changed = warehouse.land(conn, "bigcommerce_orders", "bigcommerce:s1",
                                 [RawRecord("1", {"id": 1, "v": "older"}, T0), RawRecord("2", {"id": 2}, T0)],
                                 "r2", "historical")
        assert changed == 1 and temp_batch_table_exists(conn)
    assert {pk: payload.get("v") for pk, payload, *_ in rows(warehouse)} == {"1": "newer", "2": None}


def test_a_refused_record_in_a_new_page_is_rejected_and_the_rest_lands(warehouse):  # B2, P2
    page = [RawRecord("1", {"id": 1}, T0), RawRecord("2", {"id": 2, "name": "nul\u0000"}, T0),
            RawRecord("3", {"id": 3}, T0)]
    with warehouse.transaction() as conn:
        result = warehouse.land_batch(conn, "bigcommerce_orders", "bigcommerce:s1", page, "r1", "historical")
    assert (result.changed, [r.pk for r in result.rejected]) == (2, ["2"])
    assert [pk for pk, *_ in rows(warehouse)] == ["1", "3"]
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("select record_key, reason from state.rejected_records")
        [(key, reason)] = cur.fetchall()
    assert key == "2" and reason.startswith("payload_not_storable")
    land(warehouse, [RawRecord("2", {"id": 2, "name": "fixed"}, T0)])  # a new key again: the direct path
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("select count(*) from state.rejected_records")
        assert cur.fetchone()[0] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages=st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 2)),
                               min_size=1, max_size=6), min_size=1, max_size=5))
def test_any_sequence_of_pages_ends_with_the_newest_copy_of_each_record(warehouse, pages):  # P2, B4
    # Pages of new keys take the direct COPY, the others the upsert: the outcome follows one rule either way.
    connection = f"bigcommerce:{uuid.uuid4().hex[:8]}"
    expected: dict[str, tuple[dict, datetime]] = {}
    for page in pages:
        records = [RawRecord(str(key), {"id": key, "v": version}, T0 + timedelta(hours=hour))
                   for key, hour, version in page]
        newest: dict[str, RawRecord] = {}
        for record in records:  # within a page: the newest source time, the later one on a tie
            if record.pk not in newest or record.source_updated_at >= newest[record.pk].source_updated_at:
                newest[record.pk] = record
        for pk, record in newest.items():
            if pk not in expected or (record.payload != expected[pk][0]
                                      and record.source_updated_at >= expected[pk][1]):
                expected[pk] = (record.payload, record.source_updated_at)
        with warehouse.transaction() as conn:
            warehouse.land(conn, "bigcommerce_orders", connection, records, "r", "historical")
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("select pk, payload, source_updated_at from raw.bigcommerce_orders where connection_id = %s",
                    (connection,))
        assert {pk: (payload, at) for pk, payload, at in cur.fetchall()} == expected


def test_an_extract_starting_while_the_state_is_read_takes_no_lock(warehouse, warehouse_url):  # P2, S6
    """The schema check of a current warehouse runs no DDL: its ALTER TABLE … IF NOT EXISTS would take an ACCESS
    EXCLUSIVE lock on state.sync_runs and wait behind any open reader (and every later reader behind it)."""
    reader = psycopg2.connect(warehouse_url)
    try:
        with reader.cursor() as cur:
            cur.execute("select count(*) from state.sync_runs")  # ACCESS SHARE until the transaction ends
        sep = "&" if "?" in warehouse_url else "?"
        Warehouse(f"{warehouse_url}{sep}options=-c%20lock_timeout%3D5s").ensure_schema()  # a hang → an error
    finally:
        reader.rollback()
        reader.close()


# What a payload may hold, and what becomes of its record (issue 15, issue 16: the streamed COPY keeps the outcome).
PAYLOAD_VALUES = {
    "plain": ("Zoë \"q\" \\ \t\n🎉 " + "x" * 3000, "lands"),
    "nul": ("nul\u0000", "refused"),  # jsonb refuses \u0000 (PostgreSQL 15 docs, 8.14 JSON Types)
    "lone_surrogate": ("\ud800", "refused"),  # orjson refuses it; the standard library escapes it; jsonb refuses
    "nan_literal": (orjson.Fragment(b"NaN"), "refused"),  # parse_json keeps NaN as its literal; not JSON to jsonb
    "big_int": (2**70, "lands"),  # beyond 64 bits: the standard library writes it
    "big_int_and_nan": ([2**70, float("nan")], "unserialisable"),  # orjson refuses the one, the standard library
}                                                                  # the other: no faithful JSON text at all
KEYS = {"ok": None, "nul": "k\x00", "surrogate": "k\ud800"}


def no_landing_savepoint_left(conn) -> bool:
    """Neither savepoint of the landing is still open in the caller's transaction."""
    with conn.cursor() as cur:
        for name in ("landing_direct", "landing_copy"):
            cur.execute("savepoint probe")
            try:
                cur.execute(f"release savepoint {name}")
                return False
            except psycopg2.errors.InvalidSavepointSpecification:
                cur.execute("rollback to savepoint probe")
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=st.lists(st.tuples(st.sampled_from(sorted(KEYS)), st.sampled_from(sorted(PAYLOAD_VALUES)),
                               st.sampled_from([None, "guest_checkout", "bad\ud800"])), min_size=1, max_size=12))
def test_every_record_of_a_page_lands_or_is_rejected_in_order_whichever_path_it_takes(warehouse, page):  # B2, P2
    """A page of new keys streams into the raw table, a page with a repeated or an already landed key into the
    upsert: the same records land, the same are rejected with the same reasons and JSON text, in page order (issue
    16: each record is serialised while COPY reads the page), and no savepoint of the landing stays open."""
    records, expected_rows, expected_rejected = [], {}, []
    for position, (key_kind, value_kind, flag) in enumerate(page):
        value, fate = PAYLOAD_VALUES[value_kind]
        pk = KEYS[key_kind] or str(position)
        payload = {"id": position, "value": value}
        records.append(RawRecord(pk, payload, T0 + timedelta(minutes=position), flag))
        keyed = key_kind == "ok" and flag != "bad\ud800"
        if fate == "unserialisable":
            expected_rejected.append((0, position, pk, "payload_not_storable: no faithful JSON text"))
        elif not keyed:
            expected_rejected.append((0, position, None, "invalid_primary_key"))
        elif fate == "refused":
            expected_rejected.append((1, position, pk, "payload_not_storable: "))
        else:
            expected_rows[pk] = (payload, flag)
    expected_rejected.sort()  # those refused before the COPY in page order, then those Postgres refused
    outcomes = []
    repeated = [RawRecord("repeated", {"id": -1}, T0)] * 2  # a key twice in the page: the upsert
    landed = RawRecord("landed", {"id": -2}, T0)  # a key landed before: the upsert (the same copy: unchanged)
    for before, extra in (([], []), ([], repeated), ([landed], [landed])):
        connection = f"bigcommerce:{uuid.uuid4().hex[:8]}"
        if before:
            with warehouse.transaction() as conn:
                warehouse.land_batch(conn, "bigcommerce_orders", connection, before, "r0", "historical")
        new_keys = {record.pk: (record.payload, record.flag) for record in extra if record not in before}
        with warehouse.transaction() as conn:
            result = warehouse.land_batch(conn, "bigcommerce_orders", connection, records + extra, "r", "historical")
            assert no_landing_savepoint_left(conn)
            if not extra:  # the direct path holds unless Postgres refused a record of the page
                assert temp_batch_table_exists(conn) == any(kind == 1 for kind, *_ in expected_rejected)
        assert [(r.pk, r.reason[:len(reason)]) for r, (_, _, _, reason) in zip(result.rejected, expected_rejected)] \
            == [(pk, reason) for _, _, pk, reason in expected_rejected]
        assert len(result.rejected) == len(expected_rejected)
        assert sorted(result.landed_keys) == sorted({**expected_rows, **new_keys}) == sorted(set(result.landed_keys))
        assert result.changed == len(result.landed_keys)
        expected = {**expected_rows, **{record.pk: (record.payload, record.flag) for record in extra}}
        with warehouse.transaction() as conn, conn.cursor() as cur:
            cur.execute("select pk, payload, flag from raw.bigcommerce_orders where connection_id = %s", (connection,))
            assert {pk: (payload, flag) for pk, payload, flag in cur.fetchall()} == expected
            cur.execute("select count(*) from state.rejected_records where connection_id = %s", (connection,))
            assert cur.fetchone()[0] == len({r.record_key for r in result.rejected})
        outcomes.append([(r.pk, r.reason, r.payload_text) for r in result.rejected])
    assert all(outcome == outcomes[0] for outcome in outcomes)
