"""Landing: rows per second of ``Warehouse.land`` vs a plain ``COPY`` of the same JSON lines.

The orders of the historical extract are written out as JSON lines. Into a fresh
database they are then (a) landed the way extraction lands them — under the
connection's extract lock, pages of 250, each ``Warehouse.land`` + commit in its own
transaction on the lock's session — and (b) copied with one
plain ``COPY`` into a table with a single ``jsonb`` column: this machine's limit for
getting that JSON into that Postgres. Only (a)'s land + commit calls are timed
(parsing the lines into records is extraction's work), and all of (b).

(a) and (b) alternate for ``ROUNDS`` rounds, each into emptied tables, and each side's
fastest round is compared: on a machine shared with other work a single pair of timings
compared two different moments of load (the same code gave 0.64 and 0.99), while the
fastest of several is each side's own cost. Every round's timings are in the JSON.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from bench.context import BenchContext, StageResult
from ecomsync.sources import bigcommerce
from ecomsync.warehouse import RawRecord, Warehouse, payload_json, raw_copy_lines

PAGE = 250  # what the orders stream lands per transaction
ROUNDS = 3
# CSV with a quote and a delimiter that JSON text never contains: each line is one field, verbatim.
VERBATIM_LINES = "format csv, quote e'\\x01', delimiter e'\\x02'"


def dump_orders(source_url: str, work_dir: Path) -> dict[str, Path]:
    """One JSON-lines file per store (order ids repeat across stores): {connection_id: path}."""
    warehouse = Warehouse(source_url)
    files = {}
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("select distinct connection_id from raw.bigcommerce_orders order by 1")
        for number, (connection_id,) in enumerate(cur.fetchall()):
            files[connection_id] = path = work_dir / f"orders-{number}.jsonl"
            with path.open("w") as out:
                cur.copy_expert(cur.mogrify(
                    f"copy (select payload::text from raw.bigcommerce_orders where connection_id = %s order by pk) "
                    f"to stdout with ({VERBATIM_LINES})", (connection_id,)).decode(), out)
    return files


def count_lines(path: Path) -> int:
    with path.open() as lines:
        return sum(1 for _ in lines)


def pages(path: Path):
    stream = bigcommerce.ORDERS
    with path.open() as lines:
        page: list[RawRecord] = []
        for line in lines:
            order = json.loads(line)
            page.append(RawRecord(stream.primary_key(order), order, stream.replication_key(order), stream.flag(order)))
            if len(page) == PAGE:
                yield page
                page = []
        if page:
            yield page


def time_land(warehouse: Warehouse, files: dict[str, Path]) -> tuple[float, int]:
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("truncate raw.bigcommerce_orders")
    elapsed, landed = 0.0, 0
    for connection_id, path in files.items():
        # as an extract lands a stream: under the connection's lock, each page a transaction on the lock's session
        with warehouse.connection_lock(connection_id):
            for page in pages(path):
                started = time.perf_counter()
                with warehouse.transaction() as conn:
                    landed += warehouse.land(conn, "bigcommerce_orders", connection_id, page, "bench-landing",
                                             "historical")
                elapsed += time.perf_counter() - started
    return elapsed, landed


def time_plain_copy(warehouse: Warehouse, files: dict[str, Path]) -> float:
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("drop table if exists public.plain_copy; create table public.plain_copy (payload jsonb not null)")
    started = time.perf_counter()
    with warehouse.transaction() as conn, conn.cursor() as cur:
        for path in files.values():
            with path.open() as lines:
                cur.copy_expert(f"copy public.plain_copy (payload) from stdin with ({VERBATIM_LINES})", lines)
    return time.perf_counter() - started


def raw_shaped_lines(files: dict[str, Path], work_dir: Path) -> Path:
    """The same rows as COPY text lines of the raw table's columns (untimed: made once)."""
    path = work_dir / "raw-shaped.copy"
    with path.open("w") as out:
        for connection_id, source in files.items():
            for page in pages(source):
                out.write(raw_copy_lines(connection_id, [(record, payload_json(record.payload)) for record in page],
                                         "bench-landing", "historical"))
    return path


def time_raw_shaped_copy(warehouse: Warehouse, path: Path) -> float:
    """One COPY of every row into a table shaped like raw.bigcommerce_orders (its columns, defaults and primary
    key): what the raw table itself costs, without landing's per-page transactions."""
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("drop table if exists public.raw_shaped; create table public.raw_shaped "
                    "(like raw.bigcommerce_orders including defaults including indexes)")
    started = time.perf_counter()
    with warehouse.transaction() as conn, conn.cursor() as cur, path.open() as lines:
        cur.copy_expert("copy public.raw_shaped (connection_id, pk, payload, source_updated_at, run_id, sync_mode, "
                        "flag) from stdin", lines)
    return time.perf_counter() - started


def run(ctx: BenchContext, result: StageResult) -> None:
    historical = ctx.historical()
    files = dump_orders(historical.url, ctx.work_dir)
    rows = sum(count_lines(path) for path in files.values())
    _, url = ctx.new_database("landing")
    warehouse = Warehouse(url)
    warehouse.ensure_schema()
    shaped = raw_shaped_lines(files, ctx.work_dir)
    rounds = []
    for _ in range(ROUNDS):
        land_s, landed = time_land(warehouse, files)
        rounds.append({"land_s": round(land_s, 2), "rows_landed": landed,
                       "plain_copy_s": round(time_plain_copy(warehouse, files), 2),
                       "raw_shaped_copy_s": round(time_raw_shaped_copy(warehouse, shaped), 2)})
    land_s = min(r["land_s"] for r in rounds)
    copy_s = min(r["plain_copy_s"] for r in rounds)
    shaped_s = min(r["raw_shaped_copy_s"] for r in rounds)
    land_rate, copy_rate, shaped_rate = rows / land_s, rows / copy_s, rows / shaped_s
    result.metrics.update({"rows": rows, "rows_landed": rounds[-1]["rows_landed"],
                           "json_bytes": sum(path.stat().st_size for path in files.values()),
                           "rounds": rounds, "land_s": land_s, "plain_copy_s": copy_s,
                           "land_rows_per_s": round(land_rate, 1), "plain_copy_rows_per_s": round(copy_rate, 1),
                           "raw_shaped_copy_s": shaped_s, "raw_shaped_copy_rows_per_s": round(shaped_rate, 1),
                           "page_size": PAGE})
    result.check(f"Warehouse.land (fastest of {ROUNDS})", round(land_rate, 1), "", None, "rows/s")
    result.check(f"plain COPY (ceiling, fastest of {ROUNDS})", round(copy_rate, 1), "", None, "rows/s")
    result.check("land ÷ plain COPY", round(land_rate / copy_rate, 3), ">= 0.8", land_rate / copy_rate >= 0.8)
    # where the rest goes: the raw table itself (its columns and primary key), then the per-page transactions
    result.check(f"COPY into the raw table's shape, one COPY (fastest of {ROUNDS})", round(shaped_rate, 1), "",
                 None, "rows/s")
    result.check("… its share: raw-shaped ÷ plain COPY", round(shaped_rate / copy_rate, 3), "no target", None)
    result.check("… per-page landing ÷ raw-shaped COPY", round(land_rate / shaped_rate, 3), "no target", None)
