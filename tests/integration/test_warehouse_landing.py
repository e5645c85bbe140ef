"""Landing into raw.* on a real Postgres: idempotent, bulk, watermarks with their rows (P2)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
