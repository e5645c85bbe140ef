"""BigCommerce extraction against the BigCommerce sandbox and a real Postgres, through
``ecomsync.tasks.extract_store`` / ``ecomsync.extract.run_connection`` as the DAG calls them."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from email.utils import parsedate_to_datetime

import psycopg2
import pytest
import requests
import yaml

from ecomsync import tasks
from ecomsync.config import load_config
from ecomsync.extract import ExtractRequest, run_connection
from ecomsync.http import ApiError, AuthError
from ecomsync.sources import bigcommerce as source
from ecomsync.warehouse import Warehouse
from sandbox import bigcommerce
from sandbox.core import serve

STORE, OTHER_STORE = bigcommerce.DEFAULT_STORES
WITH_LINES = {"include": "consignments.line_items", "consignment_structure": "object"}
STREAMS = ("order_statuses", "categories", "products", "customers", "orders", "refunds", "subscribers")


class Sandbox:
    def __init__(self, **options):
        self.app = bigcommerce.create_app(seed=21, **{"enforce_rate_limit": False, **options})
        self.server, _ = serve(self.app)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, f"{self.url}/__admin{path}", timeout=60, **kwargs)
        assert response.status_code < 400, response.text
        return response

    def dump(self, name: str, store: str = STORE, **params) -> list[dict]:
        return self.admin("GET", f"/bigcommerce/{store}/{name}", params=params).json()[name]

    def log(self) -> list[dict]:
        return self.admin("GET", "/requests").json()["requests"]

    def travel(self, store: str = STORE) -> dict[str, int]:
        """An hour passes: a new order arrives and a pending order is refunded (B2, B4)."""
        self.admin("POST", "/bigcommerce/clock", json={"advance_seconds": 3600})
        [new] = self.admin("POST", f"/bigcommerce/{store}/orders", json={"count": 1}).json()["orders"]
        pending = next(o for o in self.dump("orders", store) if o["status_id"] == 1)
        self.admin("PUT", f"/bigcommerce/{store}/orders/{pending['id']}", json={"status_id": 4})
        return {"new": new["id"], "refunded": pending["id"]}


@pytest.fixture
def bc():
    served = Sandbox()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def config(tmp_path):
    def build(enabled: dict[str, bool] | None = None):
        raw = yaml.safe_load(open("config/pipeline.yml"))
        for store in raw["bigcommerce"]["stores"]:
            store["enabled"] = (enabled or {}).get(store["store_hash"], True)
        path = tmp_path / "pipeline.yml"
        path.write_text(yaml.safe_dump(raw))
        return load_config(path)
    return build


def extract(bc: Sandbox, config, warehouse_url: str, store_hash: str = STORE, mode: str = "incremental",
            token: str | None = None) -> dict:
    store = config.store(store_hash)
    credentials = tasks.Credentials(bc.url, token or bigcommerce.token_for(store_hash))
    return tasks.extract_store(config, store, credentials, ExtractRequest(mode=mode), warehouse_url)


def query(warehouse_url: str, sql: str, *args) -> list[tuple]:
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def raw(warehouse_url: str, table: str, store_hash: str = STORE) -> dict[str, dict]:
    rows = query(warehouse_url, f"select pk, payload from raw.{table} where connection_id = %s",
                 f"bigcommerce:{store_hash}")
    return dict(rows)


def assert_raw_equals_sandbox(bc: Sandbox, warehouse_url: str, store_hash: str = STORE) -> None:
    """Every stream's raw table holds exactly the sandbox's records: same keys, same payloads."""
    expected = {
        "bigcommerce_orders": {str(o["id"]): o for o in bc.dump("orders", store_hash, **WITH_LINES)},
        "bigcommerce_customers": {str(c["id"]): c for c in bc.dump("customers", store_hash)},
        "bigcommerce_subscribers": {str(s["id"]): s for s in bc.dump("subscribers", store_hash)},
        "bigcommerce_products": {str(p["id"]): p for p in bc.dump("products", store_hash)},
        "bigcommerce_categories": {str(c["category_id"]): c for c in bc.dump("categories", store_hash)},
        "bigcommerce_refunds": {str(r["id"]): r for r in bc.dump("refunds", store_hash)},
    }
    for table, records in expected.items():
        landed = raw(warehouse_url, table, store_hash)
        assert landed.keys() == records.keys(), table
        assert landed == records, table
    assert sorted(int(pk) for pk in raw(warehouse_url, "bigcommerce_order_statuses", store_hash)) == list(range(15))
    duplicates = query(warehouse_url, "select count(*) - count(distinct (connection_id, pk)) from raw.bigcommerce_orders")
    assert duplicates == [(0,)]


def runs(warehouse_url: str, run_id: str | None = None) -> dict[str, dict]:
    rows = query(warehouse_url, """
        select stream, status, sync_mode, records_fetched, records_landed, records_flagged, requests, retries, error
        from state.sync_runs where (%s is null or run_id = %s) order by started_at""", run_id, run_id)
    keys = ("status", "sync_mode", "fetched", "landed", "flagged", "requests", "retries", "error")
    return {row[0]: dict(zip(keys, row[1:])) for row in rows}


def watermarks(warehouse_url: str, store_hash: str = STORE) -> dict:
    return dict(query(warehouse_url, "select stream, watermark from state.watermarks where connection_id = %s",
                      f"bigcommerce:{store_hash}"))


# -- historical ---------------------------------------------------------------------------------------------
def test_the_first_run_is_historical_and_lands_everything_exactly_once(bc, config, warehouse_url):  # B9, P2
    result = extract(bc, config(), warehouse_url)  # asked for incremental: a new store gets a historical sync
    assert result["sync_mode"] == "historical"
    assert_raw_equals_sandbox(bc, warehouse_url)
    modes = query(warehouse_url, "select distinct sync_mode from raw.bigcommerce_orders")
    assert modes == [("historical",)]
    orders = bc.dump("orders")
    latest = max(parsedate_to_datetime(o["date_modified"]) for o in orders)
    assert watermarks(warehouse_url)["orders"] == latest


def test_guest_checkouts_are_landed_and_flagged(bc, config, warehouse_url):  # B5
    extract(bc, config(), warehouse_url)
    guests = {str(o["id"]) for o in bc.dump("orders") if o["customer_id"] == 0}
    assert guests
    flagged = query(warehouse_url, "select pk from raw.bigcommerce_orders where flag = 'guest_checkout'")
    assert {pk for (pk,) in flagged} == guests
    without_email = {str(c["id"]) for c in bc.dump("customers") if not (c.get("email") or "").strip()}
    flagged_customers = query(warehouse_url, "select pk from raw.bigcommerce_customers where flag = 'missing_email'")
    assert without_email and {pk for (pk,) in flagged_customers} == without_email


def test_orders_of_every_status_are_landed_including_incomplete_checkouts(bc, config, warehouse_url):  # B4, B9
    extract(bc, config(), warehouse_url)
    statuses = query(warehouse_url, "select distinct (payload ->> 'status_id')::int from raw.bigcommerce_orders")
    assert sorted(s for (s,) in statuses) == list(range(15))


def test_each_stream_writes_a_run_log_row_that_matches_what_was_asked(bc, config, warehouse_url):  # P2, B5
    bc.admin("DELETE", "/requests")
    result = extract(bc, config(), warehouse_url)
    logged = runs(warehouse_url)
    assert set(logged) == set(STREAMS)
    orders = bc.dump("orders")
    assert logged["orders"]["fetched"] == logged["orders"]["landed"] == len(orders)
    assert logged["orders"]["flagged"] == sum(1 for o in orders if o["customer_id"] == 0)
    assert logged["customers"]["fetched"] == len(bc.dump("customers"))
    requests_by_stream = Counter()
    for entry in bc.log():
        path = entry["path"].split("/v", 1)[1]
        stream = {"2/orders": "orders", "2/order_statuses": "order_statuses", "3/customers": "customers",
                  "3/customers/subscribers": "subscribers", "3/catalog/products": "products",
                  "3/catalog/trees/categories": "categories", "3/orders/payment_actions/refunds": "refunds"}[path]
        requests_by_stream[stream] += 1
    assert {s: logged[s]["requests"] for s in STREAMS} == dict(requests_by_stream)
    assert all(row["status"] == "success" and row["retries"] == 0 for row in logged.values())
    assert result["streams"]["orders"]["requests"] == logged["orders"]["requests"]


def test_re_landing_the_history_is_a_no_op(bc, config, warehouse_url):  # P2
    extract(bc, config(), warehouse_url)
    before = query(warehouse_url, "select pk, run_id, loaded_at from raw.bigcommerce_orders order by pk")
    again = extract(bc, config(), warehouse_url, mode="historical")
    assert all(stream["landed"] == 0 for stream in again["streams"].values()), again
    assert query(warehouse_url, "select pk, run_id, loaded_at from raw.bigcommerce_orders order by pk") == before


# -- incremental, catch-up --------------------------------------------------------------------------------------
def test_incremental_after_time_travel_fetches_only_the_changes(bc, config, warehouse_url):  # B2, B4
    extract(bc, config(), warehouse_url)
    changed = bc.travel()
    bc.admin("DELETE", "/requests")
    result = extract(bc, config(), warehouse_url)
    assert result["sync_mode"] == "incremental"
    orders = result["streams"]["orders"]
    assert orders["landed"] == 2, orders
    # the look-back window re-reads at most the last historical order besides the two changes
    assert orders["fetched"] <= 3
    order_requests = [e for e in bc.log() if "/v2/orders" in e["path"]]
    assert len(order_requests) <= 1 + orders["fetched"]  # one page plus, at most, a coupon call per order
    landed = raw(warehouse_url, "bigcommerce_orders")
    assert landed[str(changed["refunded"])]["status_id"] == 4
    assert str(changed["new"]) in landed
    assert query(warehouse_url, "select sync_mode from raw.bigcommerce_orders where pk = %s",
                 str(changed["new"])) == [("incremental",)]
    assert_raw_equals_sandbox(bc, warehouse_url)


def test_an_incremental_run_with_nothing_changed_asks_little_and_lands_nothing(bc, config, warehouse_url):  # P2
    extract(bc, config(), warehouse_url)
    result = extract(bc, config(), warehouse_url)
    assert result["sync_mode"] == "incremental"
    for name, stream in result["streams"].items():
        assert stream["landed"] == 0, name
        assert stream["requests"] <= 2, (name, stream)


def test_catch_up_fetches_everything_changed_since_the_last_successful_sync(bc, config, warehouse_url):  # B8
    extract(bc, config(), warehouse_url)
    changed = bc.travel()
    bc.admin("PUT", f"/bigcommerce/{STORE}/customers/4", json={"last_name": "Ångström"})
    result = extract(bc, config(), warehouse_url, mode="catch_up")
    assert result["sync_mode"] == "catch_up"
    assert result["streams"]["orders"]["landed"] == 2 and result["streams"]["customers"]["landed"] == 1
    assert raw(warehouse_url, "bigcommerce_orders")[str(changed["refunded"])]["status_id"] == 4
    assert raw(warehouse_url, "bigcommerce_customers")["4"]["last_name"] == "Ångström"
    assert_raw_equals_sandbox(bc, warehouse_url)


def test_three_time_travels_leave_the_raw_tables_equal_to_the_sandbox(bc, config, warehouse_url):  # B2, B9
    extract(bc, config(), warehouse_url)
    for _ in range(3):
        bc.travel()
        extract(bc, config(), warehouse_url)
    assert_raw_equals_sandbox(bc, warehouse_url)


def test_an_order_changed_while_the_orders_are_paged_is_neither_skipped_nor_doubled(config, warehouse_url):  # B2, B10
    busy = Sandbox(orders=600, customers=60)  # three pages of orders
    seen_when_changed: list[list[str]] = []

    def change_an_early_order_once_page_one_is_served() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pages = [e["query"] for e in busy.log() if e["path"].endswith("/v2/orders")]
            if pages:
                # the earliest orders sit on page one; changed now, one of them moves to the end
                busy.admin("PUT", f"/bigcommerce/{STORE}/orders/105", json={"status_id": 5})
                seen_when_changed.append(pages)
                return
            time.sleep(0.005)

    changer = threading.Thread(target=change_an_early_order_once_page_one_is_served)
    changer.start()
    try:
        extract(busy, config(), warehouse_url)
        changer.join()
        assert len(seen_when_changed) == 1 and len(seen_when_changed[0]) == 1, "changed between page 1 and page 2"
        assert_raw_equals_sandbox(busy, warehouse_url)
        assert raw(warehouse_url, "bigcommerce_orders")["105"]["status_id"] == 5
        counted = query(warehouse_url, "select records_fetched, records_landed from state.sync_runs "
                                       "where stream = 'orders'")
        assert counted == [(600, 600)], "every order counted once, the changed one too"
    finally:
        changer.join()
        busy.server.shutdown()
        busy.server.server_close()


def test_more_orders_in_one_second_than_fit_a_page_are_all_landed(bc, config, warehouse_url):  # B2
    extract(bc, config(), warehouse_url)
    burst = bc.admin("POST", f"/bigcommerce/{STORE}/orders", json={"count": 260}).json()["orders"]
    assert len({o["date_modified"] for o in burst}) == 1, "the sandbox creates a batch in one second"
    result = extract(bc, config(), warehouse_url)
    assert result["streams"]["orders"]["landed"] == 260
    assert_raw_equals_sandbox(bc, warehouse_url)


# -- outages, credentials, stores ----------------------------------------------------------------------------------
def test_the_store_api_failing_mid_run_fails_the_task_and_the_next_run_catches_up(bc, config, warehouse_url):  # B10
    extract(bc, config(), warehouse_url)
    changed = bc.travel()
    marks = watermarks(warehouse_url)
    store = config().store(STORE)
    session = source.session_for(bc.url, STORE, bigcommerce.token_for(STORE))
    session.max_attempts, session.sleep = 2, lambda seconds: None  # give up fast: the outage outlasts the retries
    # Half the requests fail (deterministically by seed): some streams get through, then one gives up.
    bc.admin("PUT", "/faults", json={"seed": 20, "error_rate": 0.5, "kinds": ["5xx"]})
    request = ExtractRequest(mode="incremental")
    with pytest.raises(ApiError, match="gave up"):
        run_connection(Warehouse(warehouse_url), session, store.connection_id, source.STREAMS, request)
    outcome = {stream: row["status"] for stream, row in runs(warehouse_url, request.run_id).items()}
    assert "success" in outcome.values() and list(outcome.values())[-1] == "failed", outcome
    failed = list(outcome)[-1]
    assert watermarks(warehouse_url).get(failed) == marks.get(failed), "the failed stream's watermark stays"
    bc.admin("PUT", "/faults", json={})
    extract(bc, config(), warehouse_url)
    assert raw(warehouse_url, "bigcommerce_orders")[str(changed["refunded"])]["status_id"] == 4
    assert_raw_equals_sandbox(bc, warehouse_url)


def test_a_revoked_token_fails_clearly_and_a_new_one_resumes_with_nothing_lost(bc, config, warehouse_url):  # B10, B11
    extract(bc, config(), warehouse_url)
    changed = bc.travel()
    marks = watermarks(warehouse_url)
    bc.admin("DELETE", f"/bigcommerce/{STORE}/token")
    with pytest.raises(AuthError, match="credentials"):
        extract(bc, config(), warehouse_url)
    assert watermarks(warehouse_url) == marks
    failed = [row for row in runs(warehouse_url).values() if row["status"] == "failed"]
    assert failed and "401" in failed[0]["error"]
    bc.admin("PUT", f"/bigcommerce/{STORE}/token", json={"token": "reconnected-token"})
    result = extract(bc, config(), warehouse_url, token="reconnected-token")
    assert result["sync_mode"] == "incremental"
    assert result["streams"]["orders"]["landed"] == 2
    assert raw(warehouse_url, "bigcommerce_orders")[str(changed["refunded"])]["status_id"] == 4
    assert_raw_equals_sandbox(bc, warehouse_url)


def test_two_stores_land_side_by_side(bc, config, warehouse_url):  # B1
    pipeline = config()
    for store in tasks.stores_to_sync(pipeline):
        extract(bc, pipeline, warehouse_url, store.store_hash)
    for store_hash in (STORE, OTHER_STORE):
        assert_raw_equals_sandbox(bc, warehouse_url, store_hash)
    per_store = query(warehouse_url, "select connection_id, count(*) from raw.bigcommerce_orders group by 1 order by 1")
    assert per_store == [(f"bigcommerce:{STORE}", len(bc.dump("orders"))),
                         (f"bigcommerce:{OTHER_STORE}", len(bc.dump("orders", OTHER_STORE)))]


def test_a_disabled_store_is_not_synced_and_keeps_its_data(bc, config, warehouse_url):  # B11
    for store_hash in (STORE, OTHER_STORE):
        extract(bc, config(), warehouse_url, store_hash)
    kept = raw(warehouse_url, "bigcommerce_orders", OTHER_STORE)
    bc.travel(OTHER_STORE)
    pipeline = config({OTHER_STORE: False})
    synced = tasks.stores_to_sync(pipeline)
    assert [s.store_hash for s in synced] == [STORE]
    assert tasks.stores_to_sync(pipeline, OTHER_STORE) == []
    runs_before = query(warehouse_url, "select count(*) from state.sync_runs where connection_id = %s",
                        f"bigcommerce:{OTHER_STORE}")
    for store in synced:
        extract(bc, pipeline, warehouse_url, store.store_hash)
    assert raw(warehouse_url, "bigcommerce_orders", OTHER_STORE) == kept
    assert query(warehouse_url, "select count(*) from state.sync_runs where connection_id = %s",
                 f"bigcommerce:{OTHER_STORE}") == runs_before


# -- rate limits ----------------------------------------------------------------------------------------------------
def test_with_the_quota_enforced_the_pipeline_paces_and_is_never_refused(config, warehouse_url):  # B1, P1
    paced = Sandbox(enforce_rate_limit=True, quota=3, window_ms=1000, orders=60, customers=20)
    try:
        result = extract(paced, config(), warehouse_url)
        log = paced.log()
        assert len(log) > 2 * 3, "the run needs several windows, or pacing is not tested"
        assert [e for e in log if e["status"] == 429] == []
        assert all(stream["retries"] == 0 for stream in result["streams"].values())
        assert_raw_equals_sandbox(paced, warehouse_url)
    finally:
        paced.server.shutdown()
        paced.server.server_close()


def test_the_lookback_is_configurable_per_pipeline(bc, config, warehouse_url):  # B2
    pipeline = replace(config(), bigcommerce_lookback_minutes=0)
    extract(bc, pipeline, warehouse_url)
    result = extract(bc, pipeline, warehouse_url)
    # without a look-back nothing is read again, not even the records at the watermark (keyset from it)
    for name in ("orders", "customers", "subscribers", "products", "refunds"):
        assert result["streams"][name]["fetched"] == 0 and result["streams"][name]["requests"] == 1, name


# -- issue 13 / 16: paging under change, keyset from the watermark, refunds, discounts -------------------------------
@pytest.mark.parametrize("collection, options, third", [
    ("customers", {"customers": 260}, "3"),
    ("subscribers", {"customers": 434}, "3"),  # 434 // 2 + 434 // 10 = 260 subscribers
    ("products", {"products": 260}, "102"),  # product ids start at 100
])
def test_a_record_edited_between_two_page_reads_is_landed_and_counted_once(config, warehouse_url, collection,
                                                                           options, third):  # B2, B8
    """260 records; the third is edited after page 1 was served and before page 2 is read. Paged by page number,
    the record at the page boundary is skipped and the watermark passes it; paged by keyset, all land."""
    busy = Sandbox(orders=10, **options)
    try:
        assert len(busy.dump(collection)) == 260
        field = "name" if collection == "products" else "first_name"
        busy.admin("PUT", f"/bigcommerce/{STORE}/{collection}/{third}", json={field: "Édith", "after_pages": 1})
        extract(busy, config(), warehouse_url)
        edited = {str(r["id"]): r for r in busy.dump(collection)}
        assert edited[third][field] == "Édith", "the edit happened during the run"
        landed = raw(warehouse_url, f"bigcommerce_{collection}")
        assert landed.keys() == edited.keys() and landed[third][field] == "Édith"
        if collection != "products":  # the stream asks for products with their images, the dump has them too
            assert landed == edited
        row = runs(warehouse_url)[collection]
        assert (row["fetched"], row["landed"]) == (260, 260), row
    finally:
        busy.server.shutdown()
        busy.server.server_close()


def test_an_incremental_run_does_not_read_again_what_it_landed_at_the_watermark(bc, config,
                                                                                warehouse_url):  # B2, P2
    pipeline = replace(config(), bigcommerce_lookback_minutes=0)
    extract(bc, pipeline, warehouse_url)
    burst = bc.admin("POST", f"/bigcommerce/{STORE}/orders", json={"count": 600}).json()["orders"]
    first = extract(bc, pipeline, warehouse_url)["streams"]["orders"]
    assert first["landed"] == first["fetched"] == 600
    assert len({o["date_modified"] for o in burst}) == 1, "the sandbox creates a batch in one second"
    bc.admin("DELETE", "/requests")
    again = extract(bc, pipeline, warehouse_url)["streams"]["orders"]
    assert again["fetched"] == again["landed"] == 0
    # read from (watermark, last id): the crowded second is asked after its last id (one empty page), then the
    # seconds after it (one empty page) — never its 600 orders again (before: 3 full pages re-read)
    assert again["requests"] == 2, again
    order_pages = [e for e in bc.log() if e["path"].endswith("/v2/orders")]
    assert [e["status"] for e in order_pages] == [204, 204], order_pages


def test_refunds_land_as_received_and_a_new_refund_arrives_incrementally(bc, config, warehouse_url):  # B4, G1
    extract(bc, config(), warehouse_url)
    refunds = raw(warehouse_url, "bigcommerce_refunds")
    assert refunds == {str(r["id"]): r for r in bc.dump("refunds")}
    statuses = {o["id"]: o["status_id"] for o in bc.dump("orders")}
    assert {r["order_id"] for r in refunds.values()} == {i for i, status in statuses.items() if status in (4, 14)}
    # within the extract's tolerance for a source clock ahead of ours (a later time is clamped and flagged)
    bc.admin("POST", "/bigcommerce/clock", json={"advance_seconds": 60})
    completed = next(i for i, status in statuses.items() if status == 10)
    bc.admin("POST", f"/bigcommerce/{STORE}/orders/{completed}/refunds", json={"amount": "40.0000"})
    result = extract(bc, config(), warehouse_url)
    assert result["streams"]["refunds"]["landed"] == 1 and result["streams"]["orders"]["landed"] == 1
    [new] = [r for pk, r in raw(warehouse_url, "bigcommerce_refunds").items() if pk not in refunds]
    assert new["order_id"] == completed and new["total_amount"] == 40.0
    replication = query(warehouse_url, "select source_updated_at from raw.bigcommerce_refunds where pk = %s",
                        str(new["id"]))
    assert replication[0][0].strftime("%Y-%m-%dT%H:%M:%SZ") == new["created"]
    assert_raw_equals_sandbox(bc, warehouse_url)


def test_coupons_come_from_the_line_items_without_a_request_per_order(bc, config, warehouse_url):  # B12, P2
    """issue 16: the line items of ``include=consignments.line_items`` carry each coupon's code and share."""
    bc.admin("DELETE", "/requests")
    extract(bc, config(), warehouse_url)
    paths = [e["path"] for e in bc.log()]
    assert not [p for p in paths if "/coupons" in p]
    orders = bc.dump("orders")
    assert sum(1 for p in paths if p.endswith("/v2/orders")) <= len(orders) // 250 + 1
    couponed = query(warehouse_url, """
        select pk, payload ->> 'coupon_discount', (
            select coalesce(sum((d ->> 'amount')::numeric), 0)
            from jsonb_array_elements(payload -> 'consignments' -> 'shipping') c,
                 jsonb_array_elements(c -> 'line_items') li, jsonb_array_elements(li -> 'applied_discounts') d
            where d ->> 'code' is not null)
        from raw.bigcommerce_orders where (payload ->> 'coupon_discount')::numeric <> 0""")
    assert couponed and all(Decimal(total) == spread for _, total, spread in couponed)
    # nor a table for that call's answers
    assert query(warehouse_url, "select to_regclass('raw.bigcommerce_order_coupons')") == [(None,)]
