"""Issue 15 through the real extract, against the sandboxes: poison records, a clock ahead, a lost lock.

- one customer whose name ends in the literal text ``\\u0000``, one with a NUL character, one whose email is a
  JSON number: every store and every Square location still extracts; the odd records land as received or sit
  in ``state.rejected_records`` with their reason;
- a record modified "in 2031" (the source's clock ahead) never moves the watermark past the request;
- Postgres restarted for half a second while an extract runs and a second extract of the same store starts:
  the first run, whose advisory lock died with its session, stops before it writes again, naming why.
"""
from __future__ import annotations

import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg2
import pytest
from pipeline_harness import Sandboxes, settings_for

from ecomsync.extract import FUTURE_FLAG, UNREADABLE_FLAG, ExtractRequest
from ecomsync.tasks import extract_location, extract_store, locations_to_sync
from ecomsync.warehouse import LockLostError
from sandbox.square import MERCHANT_ID as SQUARE_MERCHANT_ID

BC_ADMIN = "bigcommerce/{store}/customers"


@pytest.fixture
def stack(local_pg, tmp_path):
    sandboxes = Sandboxes()
    name = f"test_rel_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    try:
        yield sandboxes, settings_for(sandboxes.urls, tmp_path), url
    finally:
        sandboxes.close()
        local_pg.ensure_running()
        local_pg.drop_database(name)


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def extract_everything(sandboxes, settings, url, run_id: str) -> dict[str, dict]:
    """Every store and location, each on its own (as the mapped Airflow tasks run them)."""
    results = {}
    for store in settings.config.enabled_stores:
        results[store.connection_id] = extract_store(settings.config, store, settings.bigcommerce[store.store_hash],
                                                     ExtractRequest(run_id=f"{run_id}:{store.store_hash}"), url)
    for location in locations_to_sync(settings.config, settings.square):
        results[f"square:{location['location_id']}"] = extract_location(
            settings.config, location, settings.square, ExtractRequest(run_id=f"{run_id}:{location['location_id']}"),
            url)
    return results


def test_poison_customers_never_stop_a_store_or_a_location(stack):  # B2, B10, S6, P2, issue 15
    sandboxes, settings, url = stack
    store_a, store_b = settings.config.enabled_stores
    extract_everything(sandboxes, settings, url, "first")
    customers = sandboxes.admin("bigcommerce", "GET", BC_ADMIN.format(store=store_a.store_hash))["customers"]
    escaped, nul, numeric = (c["id"] for c in customers[:3])
    for customer_id, fields in ((escaped, {"first_name": "Ada\\u0000"}), (nul, {"last_name": "Eve\u0000"}),
                                (numeric, {"email": 12345})):
        sandboxes.admin("bigcommerce", "PUT", f"{BC_ADMIN.format(store=store_a.store_hash)}/{customer_id}", fields)
    square_customer = sandboxes.admin("square", "GET", "square/dump?kind=customers")["customers"][0]["id"]
    sandboxes.admin("square", "POST", f"square/customers/{square_customer}", {"given_name": "Sq\u0000"})
    orders_before = query(url, "select count(*) from raw.bigcommerce_orders where connection_id = %s",
                          (store_b.connection_id,))[0][0]
    sandboxes.admin("bigcommerce", "POST", f"bigcommerce/{store_b.store_hash}/orders", {"count": 2})

    results = extract_everything(sandboxes, settings, url, "second")  # raises on any failed store or location

    rows = dict(query(url, "select pk, payload->>'first_name' from raw.bigcommerce_customers where connection_id = %s",
                      (store_a.connection_id,)))
    assert rows[str(escaped)] == "Ada\\u0000"  # as received, not edited
    flags = dict(query(url, "select pk, flag from raw.bigcommerce_customers where connection_id = %s",
                       (store_a.connection_id,)))
    assert flags[str(numeric)] == UNREADABLE_FLAG
    rejected = query(url, "select connection_id, pk, reason from state.rejected_records order by 1")
    assert (store_a.connection_id, str(nul)) in {(c, pk) for c, pk, _ in rejected}
    square_rejections = {c for c, pk, _ in rejected if pk == square_customer}
    # an inactive location whose history is complete is skipped without a request (its customers unread)
    locations = [c for c, result in results.items() if c.startswith("square:") and result["sync_mode"] != "skipped"]
    # Square customers are merchant-wide: fetched and rejected once, under the account's merchant connection
    assert square_rejections == {"square-merchant:" + SQUARE_MERCHANT_ID} and len(locations) >= 2  # every location went on
    assert all(reason.startswith("payload_not_storable") for _, _, reason in rejected)
    assert results[store_a.connection_id]["streams"]["customers"]["rejected"] == 1
    # the other store's new orders landed, and no run failed
    assert query(url, "select count(*) from raw.bigcommerce_orders where connection_id = %s",
                 (store_b.connection_id,))[0][0] == orders_before + 2
    assert query(url, "select count(*) from state.sync_runs where status <> 'success'")[0][0] == 0


def test_a_source_clock_in_2031_never_moves_the_watermark_past_the_request(stack):  # B2, B8, issue 15
    sandboxes, settings, url = stack
    store = settings.config.enabled_stores[0]
    credentials = settings.bigcommerce[store.store_hash]
    extract_store(settings.config, store, credentials, ExtractRequest(run_id="first"), url)
    now = datetime.fromisoformat(sandboxes.admin("bigcommerce", "GET", "bigcommerce/clock")["now"].replace("Z", "+00:00"))
    sandboxes.admin("bigcommerce", "POST", "bigcommerce/clock",
                    {"advance_seconds": (datetime(2031, 1, 1, tzinfo=UTC) - now).total_seconds()})
    customer = sandboxes.admin("bigcommerce", "GET", BC_ADMIN.format(store=store.store_hash))["customers"][0]["id"]
    sandboxes.admin("bigcommerce", "PUT", f"{BC_ADMIN.format(store=store.store_hash)}/{customer}", {"first_name": "Z"})
    requested = datetime.now(UTC)
    extract_store(settings.config, store, credentials, ExtractRequest(run_id="second"), url)
    finished = datetime.now(UTC)
    [(watermark,)] = query(url, "select watermark from state.watermarks where connection_id = %s and stream = 'customers'",
                           (store.connection_id,))
    assert requested <= watermark <= finished  # at most the time of the request, not 2031
    [(flag, payload_time)] = query(url, "select flag, payload->>'date_modified' from raw.bigcommerce_customers "
                                        "where connection_id = %s and pk = %s", (store.connection_id, str(customer)))
    assert flag == FUTURE_FLAG and payload_time.startswith("2031")


def test_a_run_that_lost_its_lock_to_a_postgres_restart_stops_before_writing_again(stack, local_pg):  # B10, S6
    sandboxes, settings, url = stack
    store = settings.config.enabled_stores[0]
    credentials = settings.bigcommerce[store.store_hash]
    # Slow answers: the first run spends the restart waiting on the API, then comes back to write.
    sandboxes.set_faults("bigcommerce", slow_ms=2500)

    def extract(run_id: str) -> dict:
        return extract_store(settings.config, store, credentials, ExtractRequest(run_id=run_id), url)

    pool = ThreadPoolExecutor(1)
    before = sandboxes.request_count("bigcommerce")
    first = pool.submit(extract, "first")
    while sandboxes.request_count("bigcommerce") < before + 2 and not first.done():
        time.sleep(0.02)
    local_pg.stop()  # every session ends, and the advisory lock with the first run's
    time.sleep(0.5)
    local_pg.ensure_running()
    restarted = datetime.now(UTC)
    assert not first.done(), "the first run finished before the restart"
    sandboxes.set_faults("bigcommerce", slow_ms=0)
    second = extract("second")  # admitted: the lock is free now
    assert second["connection_id"] == store.connection_id
    with pytest.raises(LockLostError) as lost:
        first.result(timeout=120)
    pool.shutdown()
    assert "lock" in str(lost.value) and "Postgres restarted" in str(lost.value)
    assert "InterfaceError" not in str(lost.value).split("(")[0]
    for table in ("bigcommerce_orders", "bigcommerce_customers", "bigcommerce_products", "bigcommerce_order_statuses"):
        written_late = query(url, f"select count(*) from raw.{table} where run_id = 'first' and loaded_at >= %s",
                             (restarted,))[0][0]
        assert written_late == 0, table
    assert query(url, "select count(*) from state.watermarks where run_id = 'first' and updated_at >= %s",
                 (restarted,))[0][0] == 0
    errors = [e for (e,) in query(url, "select error from state.sync_runs where run_id = 'first' and status = 'failed'")]
    assert errors and all("LockLostError" in e for e in errors)


def test_each_page_logs_records_requests_quota_and_wait(stack, caplog):  # issue 19: progress, P1
    sandboxes, settings, url = stack
    store = settings.config.enabled_stores[0]
    with caplog.at_level(logging.INFO, logger="ecomsync.extract"):
        result = extract_store(settings.config, store, settings.bigcommerce[store.store_hash],
                               ExtractRequest(run_id="progress"), url)
    pages = [r.getMessage() for r in caplog.records if "page of" in r.getMessage()]
    streams_with_records = {name for name, s in result["streams"].items() if s["fetched"]}
    assert {line.split()[1].rstrip(":") for line in pages} == streams_with_records
    line = next(line for line in pages if " orders:" in line)
    assert re.search(r"page of \d+ records \(\d+ so far, 0 rejected\), \d+ requests, quota left \d+, "
                     r"\d+\.\d+s waited for the quota", line), line
