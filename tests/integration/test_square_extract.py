"""Square extraction against the Square sandbox and a real Postgres, through the DAG task functions."""
from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ecomsync import fields
from ecomsync.config import ConfigError, load_config
from ecomsync.extract import ExtractRequest
from ecomsync.http import AuthError
from ecomsync.sources import square as square_source
from ecomsync.tasks import Credentials, extract_location, extract_merchant, locations_to_sync, merchants_of
from ecomsync.warehouse import Warehouse
from sandbox import square
from sandbox.core import serve
from sandbox.square_data import parse_rfc3339
from tests.conftest import sandbox_admin

STREAM_TABLES = {"locations": "square_locations", "catalog": "square_catalog_objects",
                 "customers": "square_customers", "orders": "square_orders", "payments": "square_payments"}
MERCHANT_TABLES = ("square_locations", "square_customers", "square_catalog_objects")
MERCHANT = square_source.merchant_connection_id(square.MERCHANT_ID)


class SquareSandbox:
    def __init__(self, **sizes):
        self.app = square.create_app(seed=5, **sizes)
        self.server, _ = serve(self.app)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.credentials = Credentials(self.url, square.TOKEN)

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        return sandbox_admin(self.url, "square", method, path, body)

    def dump(self) -> dict:
        return self.admin("GET", "dump")

    def request_log(self) -> list[dict]:
        return requests.get(f"{self.url}/__admin/requests", timeout=10).json()["requests"]

    def clear_request_log(self) -> None:
        requests.delete(f"{self.url}/__admin/requests", timeout=10)


@pytest.fixture
def sandbox():
    running = SquareSandbox()
    yield running
    running.server.shutdown()


def write_config(tmp_path: Path, locations="all", disabled=()) -> object:
    path = tmp_path / "pipeline.yml"
    path.write_text(yaml.safe_dump({"square": {"locations": locations, "disabled_locations": list(disabled),
                                               "lookback_hours": 72, "historical_start": "2000-01-01T00:00:00Z"}}))
    return load_config(path)


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path)


def sync(config, sandbox: SquareSandbox, warehouse_url: str, mode: str = "incremental",
         run_id: str | None = None) -> dict[str, dict]:
    """One cycle as the DAG runs it: plan, each account's merchant streams once, then each location's own."""
    locations = locations_to_sync(config, sandbox.credentials)
    run_id = run_id or f"cycle-{uuid.uuid4().hex[:8]}"
    for _, merchant in merchants_of(config, locations):
        extract_merchant(config, merchant, sandbox.credentials,
                         ExtractRequest(mode=mode, run_id=f"{run_id}:merchant:{merchant}"), warehouse_url)
    results = {}
    for location in locations:
        request = ExtractRequest(mode=mode, run_id=f"{run_id}:{location['location_id']}")
        results[location["location_id"]] = extract_location(config, location, sandbox.credentials, request,
                                                            warehouse_url, merchant=False)
    return results


def raw(warehouse_url: str, table: str, location_id: str) -> dict[str, dict]:
    """What a location's connection landed; the merchant-wide tables: what its account's connection landed."""
    connection_id = MERCHANT if table in MERCHANT_TABLES else f"square:{location_id}"
    with Warehouse(warehouse_url).transaction() as conn, conn.cursor() as cur:
        cur.execute(f"select pk, payload from raw.{table} where connection_id = %s", (connection_id,))
        return dict(cur.fetchall())


def query(warehouse_url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with Warehouse(warehouse_url).transaction() as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def expected_for(dump: dict, location_id: str) -> dict[str, dict[str, dict]]:
    """What one location's connection must hold, its payments and orders; and what its account's merchant
    connection must hold: every location, customer and catalog object (deleted catalog objects included)."""
    return {
        "square_payments": {r["id"]: r for r in dump["payments"] if r["location_id"] == location_id},
        "square_orders": {r["id"]: r for r in dump["orders"] if r["location_id"] == location_id},
        "square_locations": {r["id"]: r for r in dump["locations"]},
        "square_customers": {r["id"]: r for r in dump["customers"]},
        "square_catalog_objects": {r["id"]: r for r in dump["catalog_objects"]},
    }


def assert_raw_equals_sandbox(warehouse_url: str, sandbox: SquareSandbox, location_ids: list[str]) -> None:
    dump = sandbox.dump()
    for location_id in location_ids:
        for table, records in expected_for(dump, location_id).items():
            landed = raw(warehouse_url, table, location_id)
            assert set(landed) == set(records), (table, location_id)
            assert landed == records, (table, location_id)  # every payload exactly as the API has it now
    # Merchant-wide records are landed once, under the account's connection only (S4, P3).
    per_location = query(warehouse_url, "select count(*) from raw.square_customers where connection_id <> %s "
                                        "union all select count(*) from raw.square_catalog_objects "
                                        "where connection_id <> %s", (MERCHANT, MERCHANT))
    assert per_location == [(0,), (0,)]


def active_location_ids(sandbox: SquareSandbox) -> list[str]:
    return [loc["id"] for loc in sandbox.dump()["locations"] if loc["status"] == "ACTIVE"]


# -- first connect ------------------------------------------------------------------------------------------
def all_location_ids(sandbox: SquareSandbox) -> list[str]:
    return [loc["id"] for loc in sandbox.dump()["locations"]]


def test_first_connect_is_a_historical_sync_of_all_payments_and_customers(sandbox, config, warehouse_url):  # S3, S2, S7
    results = sync(config, sandbox, warehouse_url)
    locations = all_location_ids(sandbox)  # the inactive one too: its payments are history (S3)
    assert sorted(results) == sorted(locations) and len(locations) == 4
    assert {r["sync_mode"] for r in results.values()} == {"historical"}
    assert_raw_equals_sandbox(warehouse_url, sandbox, locations)
    dump = sandbox.dump()
    main = dump["locations"][0]["id"]
    landed_payments = {pk for location_id in locations for pk in raw(warehouse_url, "square_payments", location_id)}
    # What the API's defaults would have hidden: payments older than a year, and every non-main location.
    year_ago = parse_rfc3339(dump["now"]) - square.YEAR
    older = {p["id"] for p in dump["payments"] if parse_rfc3339(p["created_at"]) < year_ago
             and p["location_id"] in locations}
    assert older and older <= landed_payments
    assert any(p["location_id"] != main for p in dump["payments"] if p["id"] in landed_payments)
    # Customers without any payment are there too (S3), keyed by the Square customer id (S7).
    paying = {p.get("customer_id") for p in dump["payments"]}
    never_paid = [c["id"] for c in dump["customers"] if c["id"] not in paying]
    assert never_paid and set(never_paid) <= set(raw(warehouse_url, "square_customers", main))
    assert all(pk == payload["id"] for pk, payload in raw(warehouse_url, "square_customers", main).items())
    # Each location is its own connection, named after the location (S2).
    names = dict(query(warehouse_url, "select external_id, name from state.connections where source = 'square'"))
    assert names == {loc["id"]: loc["name"] for loc in dump["locations"] if loc["id"] in locations}


# -- issue 5 acceptance --------------------------------------------------------------------------------------
def test_three_time_travel_rounds_leave_raw_equal_to_the_sandbox(sandbox, config, warehouse_url):  # S4, P2
    sync(config, sandbox, warehouse_url)
    locations = active_location_ids(sandbox)
    main, second = locations[0], locations[1]
    dump = sandbox.dump()
    late_payments = []
    for round_number in range(3):
        sandbox.admin("POST", "clock", {"minutes": 30})
        added = sandbox.admin("POST", "payments", {"location_id": locations[round_number]})
        unrefunded = next(p for p in dump["payments"] if p["location_id"] == second and not p.get("refund_ids")
                          and p["id"] not in {x["id"] for x in late_payments})
        refunded = sandbox.admin("POST", f"payments/{unrefunded['id']}/refund",
                                 {"amount": 1} if round_number == 1 else {})["payment"]
        edited = sandbox.admin("POST", f"customers/{dump['customers'][round_number]['id']}",
                               {"family_name": f"Ærøskøbing {round_number}"})["customer"]
        # Arrives now, but with timestamps two days old: only the 72-hour look-back finds it.
        late = sandbox.admin("POST", "payments", {"location_id": main, "offline": True, "created_days_ago": 2,
                                                  "updated_days_ago": 2})["payment"]
        late_payments.append(late)
        results = sync(config, sandbox, warehouse_url)
        assert {results[location_id]["sync_mode"] for location_id in locations} == {"incremental"}
        owner = added["payment"]["location_id"]
        assert raw(warehouse_url, "square_payments", owner)[added["payment"]["id"]] == added["payment"]
        assert raw(warehouse_url, "square_orders", owner)[added["order"]["id"]] == added["order"]
        assert raw(warehouse_url, "square_payments", second)[refunded["id"]]["refund_ids"] == refunded["refund_ids"]
        assert raw(warehouse_url, "square_customers", main)[edited["id"]]["family_name"] == edited["family_name"]
        assert raw(warehouse_url, "square_payments", main)[late["id"]] == late
        dump = sandbox.dump()
    assert_raw_equals_sandbox(warehouse_url, sandbox, locations)
    duplicates = query(warehouse_url, "select payload ->> 'id', count(*) from raw.square_payments "
                                      "group by 1 having count(*) > 1")
    assert duplicates == []

    # Nothing changed: one request per stream (the look-back windows fit one page).
    assert_no_change_cycle_requests(config, sandbox, warehouse_url, len(locations))


def assert_no_change_cycle_requests(config, sandbox: SquareSandbox, warehouse_url: str, locations: int) -> None:
    """A cycle with nothing new makes N = 1 + M + 2·L requests: the plan's GET /v2/locations, one per merchant
    stream (M = 3: locations, catalog, customers — once per account, whatever the number of locations) and one
    per location stream (payments, orders) of each of the L extracted locations (S4, P3)."""
    sandbox.clear_request_log()
    sync(config, sandbox, warehouse_url, run_id="no-change")
    per_stream = query(warehouse_url, "select connection_id, stream, requests, records_landed from state.sync_runs "
                                      "where run_id like 'no-change:%%'")
    assert len(per_stream) == 3 + 2 * locations
    assert all(requests_made == 1 and landed == 0 for _, _, requests_made, landed in per_stream), per_stream
    by_path = Counter(entry["path"] for entry in sandbox.request_log())
    assert by_path == {"/v2/locations": 2, "/v2/catalog/search": 1, "/v2/customers/search": 1,
                       "/v2/payments": locations, "/v2/orders/search": locations}, by_path
    assert sum(by_path.values()) == 1 + 3 + 2 * locations


def test_a_no_change_cycle_fetches_merchant_streams_once_whatever_the_number_of_locations(
        sandbox, config, warehouse_url):  # S4, P3, B2
    """With 3 active locations N = 1 + 3 + 2·3 = 10 (per location, as before, 1 + 5·3 = 16); one more location
    adds 2, not 5. The inactive location is skipped once its history is complete (S3)."""
    sync(config, sandbox, warehouse_url)
    sandbox.admin("POST", "clock", {"minutes": 30})
    active = active_location_ids(sandbox)
    assert len(active) == 3
    assert_no_change_cycle_requests(config, sandbox, warehouse_url, 3)
    # The same account with a fourth active location: two requests more, the merchant streams still once.
    sandbox.admin("POST", "locations", {"name": "Fourth Street"})
    assert len(active_location_ids(sandbox)) == 4
    sync(config, sandbox, warehouse_url)
    sandbox.admin("POST", "clock", {"minutes": 30})
    assert_no_change_cycle_requests(config, sandbox, warehouse_url, 4)


def test_a_historical_sync_fetches_each_customer_and_catalog_object_once(warehouse_url, config):  # S3, P3, B2
    big = SquareSandbox(customers=450)  # several pages of customers
    try:
        sync(config, big, warehouse_url)
        dump = big.dump()
        by_path = Counter(entry["path"] for entry in big.request_log())
        customers, objects = len(dump["customers"]), len(dump["catalog_objects"])
        assert by_path["/v2/customers/search"] == customers // 100 + 1  # pages of 100, the last one short
        assert by_path["/v2/catalog/search"] == objects // 1000 + 1
        fetched = dict(query(warehouse_url, "select stream, sum(records_fetched) from state.sync_runs "
                                            "where stream in ('customers', 'catalog', 'locations') group by 1"))
        assert fetched == {"customers": customers, "catalog": objects, "locations": len(dump["locations"])}
        landed = query(warehouse_url, "select count(*), count(distinct pk) from raw.square_customers")
        assert landed == [(customers, customers)]
        assert_raw_equals_sandbox(warehouse_url, big, all_location_ids(big))
    finally:
        big.server.shutdown()


def test_two_locations_run_side_by_side(sandbox, config, warehouse_url):  # S2
    locations = locations_to_sync(config, sandbox.credentials)[:2]
    errors = []

    def run(location):
        try:
            extract_location(config, location, sandbox.credentials, ExtractRequest(), warehouse_url)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(location,)) for location in locations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_raw_equals_sandbox(warehouse_url, sandbox, [loc["location_id"] for loc in locations])
    payment_owners = query(warehouse_url, "select connection_id, count(*) from raw.square_payments group by 1")
    assert sorted(c for c, _ in payment_owners) == sorted(f"square:{loc['location_id']}" for loc in locations)


def test_a_stale_cursor_restarts_the_window_instead_of_failing(warehouse_url, config):
    big = SquareSandbox(payments=700)  # several pages of payments per location
    try:
        big.admin("POST", "cursors/invalidate", {"refuse_next": 1})
        main = active_location_ids(big)[0]
        location = next(loc for loc in locations_to_sync(config, big.credentials) if loc["location_id"] == main)
        result = extract_location(config, location, big.credentials, ExtractRequest(), warehouse_url)
        refused = [r for r in big.request_log() if r["status"] == 400]
        assert len(refused) == 1 and "cursor=" in refused[0]["query"]
        assert result["streams"]["payments"]["fetched"] > 100
        assert_raw_equals_sandbox(warehouse_url, big, [main])
        assert query(warehouse_url, "select distinct status from state.sync_runs") == [("success",)]
    finally:
        big.server.shutdown()


def test_customers_without_email_are_landed_flagged_and_counted(sandbox, config, warehouse_url):  # S1
    sync(config, sandbox, warehouse_url)
    without_email = {c["id"] for c in sandbox.dump()["customers"] if not (c.get("email_address") or "").strip()}
    assert without_email
    flagged = query(warehouse_url, "select pk from raw.square_customers where flag = 'missing_email'")
    assert {pk for (pk,) in flagged} == without_email and len(flagged) == len(without_email)
    logged = query(warehouse_url, "select connection_id, records_flagged from state.sync_runs where stream = 'customers'")
    assert logged == [(MERCHANT, len(without_email))]


def test_historical_restart_on_demand_rereads_everything_without_duplicates(sandbox, config, warehouse_url):  # S5
    sync(config, sandbox, warehouse_url)
    sync(config, sandbox, warehouse_url)
    before = query(warehouse_url, "select count(*) from raw.square_payments")
    restart = ExtractRequest(mode="historical")
    main = active_location_ids(sandbox)[0]
    location = next(loc for loc in locations_to_sync(config, sandbox.credentials) if loc["location_id"] == main)
    result = extract_location(config, location, sandbox.credentials, restart, warehouse_url)
    assert result["sync_mode"] == "historical"
    payments_at_main = [p for p in sandbox.dump()["payments"] if p["location_id"] == main]
    assert result["streams"]["payments"]["fetched"] == len(payments_at_main)
    assert result["streams"]["payments"]["landed"] == 0  # nothing changed, nothing rewritten
    windows = query(warehouse_url, "select connection_id, stream, sync_mode, window_start from state.sync_runs "
                                   "where run_id = %s", (restart.run_id,))
    assert all(start is None and mode == "historical" for c, _, mode, start in windows if c == f"square:{main}")
    # a location's restart brings its account's merchant streams up to date, it does not restart them
    assert {(stream, mode) for c, stream, mode, _ in windows if c == MERCHANT} == {
        ("locations", "incremental"), ("catalog", "incremental"), ("customers", "incremental")}
    assert query(warehouse_url, "select count(*) from raw.square_payments") == before


def test_a_disabled_location_is_not_extracted_and_nothing_is_deleted(sandbox, tmp_path, warehouse_url):  # S9
    locations = active_location_ids(sandbox)
    sync(write_config(tmp_path), sandbox, warehouse_url)
    stopped = locations[1]
    kept_before = raw(warehouse_url, "square_payments", stopped)
    config = write_config(tmp_path, locations=[{"location_id": stopped, "enabled": False},
                                               {"location_id": locations[0]}, {"location_id": locations[2]}])
    assert stopped not in {loc["location_id"] for loc in locations_to_sync(config, sandbox.credentials)}
    added = sandbox.admin("POST", "payments", {"location_id": stopped})["payment"]
    sync(config, sandbox, warehouse_url)
    assert raw(warehouse_url, "square_payments", stopped) == kept_before
    assert added["id"] not in raw(warehouse_url, "square_payments", stopped)
    # A location closed in Square gets one last run (nothing paid before it closed is lost), then it stops;
    # what was landed stays.
    last_sale = sandbox.admin("POST", "payments", {"location_id": locations[2]})["payment"]
    sandbox.admin("POST", f"locations/{locations[2]}/deactivate")
    assert [(loc["location_id"], loc["status"]) for loc in locations_to_sync(config, sandbox.credentials)] == [
        (locations[0], "ACTIVE"), (locations[2], "INACTIVE")]
    final = sync(config, sandbox, warehouse_url)
    assert final[locations[2]]["sync_mode"] == "incremental"
    assert raw(warehouse_url, "square_payments", locations[2])[last_sale["id"]] == last_sale
    assert raw(warehouse_url, "square_locations", locations[2])[locations[2]]["status"] == "INACTIVE"
    kept = raw(warehouse_url, "square_payments", locations[2])
    after = sync(config, sandbox, warehouse_url)
    assert after[locations[2]]["sync_mode"] == "skipped" and after[locations[0]]["sync_mode"] == "incremental"
    assert raw(warehouse_url, "square_payments", locations[2]) == kept


def test_a_revoked_token_fails_clearly_and_advances_no_watermark(sandbox, config, warehouse_url):
    sync(config, sandbox, warehouse_url)
    location = locations_to_sync(config, sandbox.credentials)[0]
    marks = query(warehouse_url, "select connection_id, stream, watermark from state.watermarks order by 1, 2")
    sandbox.admin("POST", "clock", {"hours": 1})
    sandbox.admin("POST", "payments", {"location_id": location["location_id"]})
    sandbox.admin("DELETE", "token")
    with pytest.raises(AuthError, match="401"):
        extract_location(config, location, sandbox.credentials, ExtractRequest(), warehouse_url)
    with pytest.raises(AuthError):
        locations_to_sync(config, sandbox.credentials)
    assert query(warehouse_url, "select connection_id, stream, watermark from state.watermarks order by 1, 2") == marks
    failed = query(warehouse_url, "select error from state.sync_runs where status = 'failed'")
    assert len(failed) == 1 and "credentials" in failed[0][0]


def test_rate_limited_answers_are_retried_with_backoff(sandbox, config, warehouse_url):
    requests.put(f"{sandbox.url}/__admin/faults", json={"seed": 3, "error_rate": 0.25, "kinds": ["429"]}, timeout=5)
    main = active_location_ids(sandbox)[0]
    location = next(loc for loc in locations_to_sync(config, sandbox.credentials) if loc["location_id"] == main)
    sandbox.clear_request_log()
    result = extract_location(config, location, sandbox.credentials, ExtractRequest(), warehouse_url)
    rate_limited = [r for r in sandbox.request_log() if r["status"] == 429]
    streams = list(result["streams"].values()) + list(result["merchant"]["streams"].values())
    assert rate_limited and sum(s["retries"] for s in streams) == len(rate_limited)
    assert_raw_equals_sandbox(warehouse_url, sandbox, [main])


# -- issue 13: inactive locations (S3) -------------------------------------------------------------------------
def inactive_location_id(sandbox: SquareSandbox) -> str:
    [location_id] = [loc["id"] for loc in sandbox.dump()["locations"] if loc["status"] == "INACTIVE"]
    return location_id


def runs_of(warehouse_url: str, connection_id: str) -> list[tuple]:
    return query(warehouse_url, "select run_id, stream, sync_mode, status from state.sync_runs "
                                "where connection_id = %s order by started_at", (connection_id,))


def test_an_inactive_locations_history_is_synced_once_then_skipped_and_reported(sandbox, config,
                                                                                warehouse_url):  # S3, S5, P2
    inactive = inactive_location_id(sandbox)
    old = sandbox.admin("POST", "payments", {"location_id": inactive, "amount": 2500, "created_days_ago": 300,
                                             "updated_days_ago": 300})["payment"]
    first = sync(config, sandbox, warehouse_url)
    assert first[inactive]["sync_mode"] == "historical"
    assert raw(warehouse_url, "square_payments", inactive)[old["id"]] == old
    assert_raw_equals_sandbox(warehouse_url, sandbox, [inactive])  # every payment it ever took, as Square has it
    names = dict(query(warehouse_url, "select external_id, name from state.connections where source = 'square'"))
    assert names[inactive] == "Pop-up Montréal"

    # Incremental runs skip it without a request, and say so with what the warehouse holds.
    sandbox.admin("POST", "clock", {"minutes": 30})
    sandbox.clear_request_log()
    second = sync(config, sandbox, warehouse_url)
    skipped = second[inactive]
    assert skipped["sync_mode"] == "skipped" and skipped["location_status"] == "INACTIVE"
    assert "history complete" in skipped["skipped"]
    assert skipped["landed"] == {"payments": len(raw(warehouse_url, "square_payments", inactive)),
                                 "orders": len(raw(warehouse_url, "square_orders", inactive))}
    assert skipped["landed"]["payments"] > 1
    assert not any(inactive in (entry["query"] or "") or inactive in json.dumps(entry.get("body"))
                   for entry in sandbox.request_log())
    assert {mode for _, _, mode, _ in runs_of(warehouse_url, f"square:{inactive}")} == {"historical"}
    assert {second[loc]["sync_mode"] for loc in active_location_ids(sandbox)} == {"incremental"}

    # A historical restart (S5) reads it again, changing nothing that did not change.
    restart = sync(config, sandbox, warehouse_url, mode="historical")[inactive]
    assert restart["sync_mode"] == "historical"
    assert restart["streams"]["payments"]["fetched"] == skipped["landed"]["payments"]
    assert restart["streams"]["payments"]["landed"] == 0


def test_the_inactive_locations_setting_includes_or_skips_them(sandbox, tmp_path, warehouse_url):  # S3
    inactive = inactive_location_id(sandbox)
    path = tmp_path / "pipeline.yml"

    def configured(policy: str):
        path.write_text(yaml.safe_dump({"square": {"locations": "all", "inactive_locations": policy}}))
        return load_config(path)

    skipping = sync(configured("skip"), sandbox, warehouse_url)[inactive]
    assert skipping["sync_mode"] == "skipped" and "'skip'" in skipping["skipped"]
    assert skipping["landed"] == {"payments": 0, "orders": 0}
    assert raw(warehouse_url, "square_payments", inactive) == {}
    assert query(warehouse_url, "select count(*) from state.connections where external_id = %s",
                 (inactive,)) == [(0,)]
    # `include`: synced by every run like an active location (first historical, then incremental).
    assert sync(configured("include"), sandbox, warehouse_url)[inactive]["sync_mode"] == "historical"
    assert sync(configured("include"), sandbox, warehouse_url)[inactive]["sync_mode"] == "incremental"
    assert_raw_equals_sandbox(warehouse_url, sandbox, [inactive])
    with pytest.raises(ConfigError, match="inactive_locations"):
        configured("sometimes")


@pytest.mark.parametrize(("policy", "complete", "mode", "backfill", "extracted"), [
    ("history", False, "incremental", False, True),   # never fully synced: its history first (S3)
    ("history", True, "incremental", False, False),   # history complete: nothing new happens at a closed location
    ("history", True, "catch_up", False, False),
    ("history", True, "historical", False, True),     # a restart reads everything again (S5)
    ("history", True, "incremental", True, True),     # an explicit date range too
    ("include", True, "incremental", False, True),
    ("skip", False, "historical", False, False),
])
def test_inactive_location_rule(policy, complete, mode, backfill, extracted):  # S3, S5
    reason = square_source.inactive_location_skip(policy, history_complete=complete, mode=mode, is_backfill=backfill)
    assert (reason is None) == extracted
    assert reason is None or "inactive" in reason


# -- issue 13: every payment status, refunds, cancelled orders and nameless lines land unchanged (P2) ------------
def test_every_status_refund_cancellation_and_nameless_line_lands_unchanged(sandbox, config,
                                                                           warehouse_url):  # P2, S11, S12, G1
    sync(config, sandbox, warehouse_url)
    locations = all_location_ids(sandbox)
    landed_payments = [p for loc in locations for p in raw(warehouse_url, "square_payments", loc).values()]
    landed_orders = [o for loc in locations for o in raw(warehouse_url, "square_orders", loc).values()]
    assert {p["status"] for p in landed_payments} == {"APPROVED", "PENDING", "COMPLETED", "CANCELED", "FAILED"}
    assert {o["state"] for o in landed_orders} == {"OPEN", "COMPLETED", "CANCELED"}
    assert any(line["item_type"] == "CUSTOM_AMOUNT" and "name" not in line
               for o in landed_orders for line in o["line_items"])
    assert any(p.get("refunded_money") == p["amount_money"] for p in landed_payments)
    main = locations[0]

    # Changes after the first sync, each only visible through updated_at.
    dump = sandbox.dump()
    sandbox.admin("POST", "clock", {"minutes": 30})
    approved = next(p for p in dump["payments"] if p["status"] == "APPROVED")
    pending = next(p for p in dump["payments"] if p["status"] == "PENDING")
    sandbox.admin("POST", f"payments/{approved['id']}/status", {"status": "CANCELED"})
    sandbox.admin("POST", f"payments/{pending['id']}/status", {"status": "COMPLETED"})
    old = next(p for p in dump["payments"] if p["status"] == "COMPLETED" and not p.get("refund_ids")
               and p["location_id"] == main)
    sandbox.admin("POST", f"payments/{old['id']}/refund", {"amount": 700})
    sandbox.admin("POST", f"payments/{old['id']}/refund")
    declined = sandbox.admin("POST", "payments", {"status": "FAILED", "amount": 48000})
    retry = sandbox.admin("POST", "payments", {"order_id": declined["order"]["id"]})
    nameless = sandbox.admin("POST", "payments", {"amount": 5000})
    sync(config, sandbox, warehouse_url)

    assert_raw_equals_sandbox(warehouse_url, sandbox, [loc for loc in locations if loc != inactive_location_id(sandbox)])
    payments = raw(warehouse_url, "square_payments", main)
    orders = raw(warehouse_url, "square_orders", main)
    assert payments[old["id"]]["refunded_money"] == old["amount_money"] and len(payments[old["id"]]["refund_ids"]) == 2
    assert payments[declined["payment"]["id"]]["status"] == "FAILED"
    assert payments[retry["payment"]["id"]]["order_id"] == declined["order"]["id"]
    assert orders[declined["order"]["id"]]["state"] == "COMPLETED"
    assert orders[approved["order_id"]]["state"] == "CANCELED"
    assert "name" not in orders[nameless["order"]["id"]]["line_items"][0]


def _pick(data, items: list, label: str):
    """One of ``items`` through a draw whose bounds never depend on the sandbox's state (hypothesis requires the
    same draws for the same choices; the list itself changes from one example to the next)."""
    return items[data.draw(st.integers(0, 10**6), label=label) % len(items)]


# The sandbox and the warehouse carry over from one example to the next, so an example cannot be replayed or
# shrunk on its own: generate only (every example is still a fresh random sequence).
@settings(max_examples=5, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_sequence_of_status_changes_refunds_and_retries_lands_unchanged(sandbox, config, warehouse_url,
                                                                            data):  # P2, S4, S11
    """Whatever happens to payments between two runs (new ones in any status, captures, cancellations,
    bounced transfers, declined cards paid again, partial and full refunds), the next incremental run leaves
    raw equal to Square. The sandbox and the warehouse carry over from one example to the next."""
    active = active_location_ids(sandbox)
    if not getattr(sandbox, "synced", False):  # the first example starts from a historical sync
        sync(config, sandbox, warehouse_url)
        sandbox.synced = True
    transitions = {"APPROVED": ["COMPLETED", "CANCELED"], "PENDING": ["COMPLETED", "FAILED"]}
    for _ in range(data.draw(st.integers(1, 6), label="changes")):
        sandbox.admin("POST", "clock", {"minutes": data.draw(st.integers(1, 90), label="minutes")})
        dump = sandbox.dump()
        payments = [p for p in dump["payments"] if p["location_id"] in active]
        open_orders = {o["id"] for o in dump["orders"] if o["state"] == "OPEN" and o["location_id"] in active}
        in_flight = [p for p in payments if p["status"] in transitions]
        retryable = sorted({p["order_id"] for p in payments if p["status"] == "FAILED" and p["order_id"] in open_orders})
        refundable = [p for p in payments if p["status"] == "COMPLETED"
                      and (p.get("refunded_money") or {}).get("amount", 0) < p["amount_money"]["amount"] - 1]
        change = data.draw(st.sampled_from(["new", "refund", "transition", "retry"]), label="change")
        if change == "transition" and in_flight:
            payment = _pick(data, in_flight, "payment")
            sandbox.admin("POST", f"payments/{payment['id']}/status",
                          {"status": _pick(data, transitions[payment["status"]], "status")})
        elif change == "retry" and retryable:
            sandbox.admin("POST", "payments", {"order_id": _pick(data, retryable, "order")})
        elif change == "refund" and refundable:
            payment = _pick(data, refundable, "payment")
            sandbox.admin("POST", f"payments/{payment['id']}/refund",
                          data.draw(st.sampled_from([{}, {"amount": 1}]), label="refund"))
        else:  # "new", or a change the sandbox's state does not allow right now
            sandbox.admin("POST", "payments", {
                "location_id": data.draw(st.sampled_from(active), label="location"),
                "status": data.draw(st.sampled_from(square.PAYMENT_STATUSES), label="status"),
                **data.draw(st.sampled_from([{}, {"amount": 5000}, {"amount": 1250, "line_name": "Kasse"}]),
                            label="amount")})
    results = sync(config, sandbox, warehouse_url)
    assert {results[location_id]["sync_mode"] for location_id in active} == {"incremental"}
    assert_raw_equals_sandbox(warehouse_url, sandbox, active)


# -- issue 16 item 3: merchant-wide streams once per account, spread in dbt staging -----------------------------------
SPREAD_MODELS = {  # staging model -> its key column
    "stg_square__customers": "customer_id", "stg_square__locations": "location_id",
    "stg_square__catalog_items": "item_id", "stg_square__catalog_item_variations": "variation_id",
    "stg_square__catalog_categories": "category_id", "stg_square__catalog_images": "image_id",
}


def build_square_staging(warehouse_url: str, target) -> None:
    from ecomsync.dbt import run_dbt

    summary = run_dbt(["build", "--select", "path:models/staging/square", "stg_state__connections"], warehouse_url,
                      target_path=target)
    assert summary.success, summary.error or [(n.name, n.status, n.message) for n in summary.nodes
                                               if n.status not in ("success", "pass")]


def staging_rows(warehouse_url: str) -> dict[str, set[tuple]]:
    """Every spread staging model's rows, without the landing metadata (loaded_at)."""
    rows = {}
    for model in SPREAD_MODELS:
        columns = [c for (c,) in query(warehouse_url, "select column_name from information_schema.columns where "
                                                      "table_schema = 'staging' and table_name = %s order by 1",
                                       (model,)) if c != "loaded_at"]
        rows[model] = set(query(warehouse_url, f"select {', '.join(columns)} from staging.{model}"))
    return rows


def make_legacy(warehouse_url: str) -> None:
    """The warehouse as the per-location extract left it: customers and catalog objects landed under every
    extracted location's connection, each location's own record under its connection, no merchant connection."""
    location_connections = "(select connection_id from state.connections where source = 'square')"
    with Warehouse(warehouse_url).transaction() as conn, conn.cursor() as cur:
        for table in ("square_customers", "square_catalog_objects"):
            cur.execute(f"insert into raw.{table} select c.connection_id, r.pk, r.payload, r.source_updated_at, "
                        f"r.loaded_at, r.run_id, r.sync_mode, r.flag from raw.{table} as r "
                        f"cross join {location_connections} as c where r.connection_id = %s", (MERCHANT,))
        cur.execute("insert into raw.square_locations select 'square:' || pk, pk, payload, source_updated_at, "
                    "loaded_at, run_id, sync_mode, flag from raw.square_locations "
                    f"where connection_id = %s and 'square:' || pk in {location_connections}", (MERCHANT,))
        for table in MERCHANT_TABLES:
            cur.execute(f"delete from raw.{table} where connection_id = %s", (MERCHANT,))
        for table in ("watermarks", "sync_runs", "connections"):
            cur.execute(f"delete from state.{table} where connection_id = %s", (MERCHANT,))


def test_staging_spreads_merchant_rows_as_the_per_location_landing_did_and_upgrades_without_resync(
        sandbox, config, warehouse_url, tmp_path):  # P3, S4, S7
    sync(config, sandbox, warehouse_url)
    build_square_staging(warehouse_url, tmp_path / "target")
    spread = staging_rows(warehouse_url)
    dump = sandbox.dump()
    locations = [f"square:{loc['id']}" for loc in dump["locations"]]
    assert {(c, r["id"]) for c in locations for r in dump["customers"]} == {
        (row[0], row[1]) for row in query(warehouse_url, "select connection_id, customer_id "
                                                         "from staging.stg_square__customers")}
    assert query(warehouse_url, "select connection_id, location_id from staging.stg_square__locations "
                                "order by 1") == sorted((f"square:{loc['id']}", loc["id"]) for loc in dump["locations"])
    assert query(warehouse_url, "select count(*) from staging.stg_state__connections "
                                "where connection_id like 'square-merchant:%%'") == [(0,)]

    # A warehouse the per-location extract filled gives the same staging rows: every model downstream the same.
    make_legacy(warehouse_url)
    assert staging_rows(warehouse_url) == spread

    # Upgrading it: the next cycle lands the merchant streams once under the account (its first, historical
    # sync); the rows landed per location stay, the newer copy wins, every key once.
    sandbox.admin("POST", "clock", {"minutes": 30})
    edited = sandbox.admin("POST", f"customers/{dump['customers'][0]['id']}", {"family_name": "Łódź"})["customer"]
    results = sync(config, sandbox, warehouse_url)
    assert {r["sync_mode"] for r in results.values() if r["sync_mode"] != "skipped"} == {"incremental"}
    assert query(warehouse_url, "select distinct sync_mode from state.sync_runs where connection_id = %s",
                 (MERCHANT,)) == [("historical",)]
    build_square_staging(warehouse_url, tmp_path / "target")  # the grain tests pass on the mixed warehouse
    names = query(warehouse_url, "select connection_id, last_name from staging.stg_square__customers "
                                 "where customer_id = %s", (edited["id"],))
    assert sorted(names) == sorted((c, "Łódź") for c in locations)
    after = staging_rows(warehouse_url)
    assert {model: len(rows) for model, rows in after.items()} == {model: len(rows) for model, rows in spread.items()}


# -- type-safe reading of what Square sends (issue 15's accessors, extract.describe_record) ---------------------------
ODD_VALUES = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.text(max_size=12),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                              max_size=2))
NOW = fields.parse_iso("2026-01-01T00:00:00Z")


@settings(max_examples=300, deadline=None)
@given(record=st.fixed_dictionaries({}, optional={
    "id": ODD_VALUES, "updated_at": st.one_of(ODD_VALUES, st.just("2025-06-01T10:00:00Z")),
    "email_address": ODD_VALUES, "name": ODD_VALUES, "status": ODD_VALUES, "merchant_id": ODD_VALUES}))
def test_any_square_record_is_landed_with_a_text_key_or_rejected_with_its_reason(record):  # S6, P2, S7
    """Every Square stream reads a record's id, time and email type-safely: a number for the id, a missing id, a
    time that is not RFC 3339 (or not text) is a rejection naming why; never an exception, never a key made up."""
    from ecomsync.extract import describe_record
    from ecomsync.warehouse import RejectedRecord

    for stream in square_source.streams_for("L1", NOW, 72):
        described = describe_record(stream, record, NOW)
        if isinstance(described, RejectedRecord):
            assert described.reason.split(":")[0] in ("invalid_primary_key", "invalid_replication_key")
            continue
        assert isinstance(record.get("id"), str) and described.pk == record["id"]
        if stream.incremental and record.get("updated_at") is not None:
            assert described.source_updated_at == fields.parse_iso(record["updated_at"])


def test_odd_locations_and_customers_are_rejected_with_their_reason_and_the_rest_goes_on(
        sandbox, config, warehouse_url):  # S6, P2, S2
    store = sandbox.app.store
    main = store.locations[0]
    customer = sandbox.dump()["customers"][0]
    with store.lock:
        store.locations.append({**main, "id": 12345, "name": "Numbered"})  # a number for a string
        store.locations.append({**main, "id": "LODDVALUES001", "name": 42, "status": 7})  # odd name and status
        store.customers.explicit["987"] = {**customer, "id": 987, "created_at": "2001-01-01T00:00:01Z"}
        store.customers.explicit["CGARBAGEDATE"] = {**customer, "id": "CGARBAGEDATE", "updated_at": "yesterday",
                                                    "created_at": "2001-01-01T00:00:02Z"}
    planned = {loc["location_id"]: loc for loc in locations_to_sync(config, sandbox.credentials)}
    assert 12345 not in planned and "12345" not in planned
    assert planned["LODDVALUES001"] == {"location_id": "LODDVALUES001", "name": "LODDVALUES001", "status": "ACTIVE",
                                        "merchant_id": square.MERCHANT_ID}
    results = sync(config, sandbox, warehouse_url)  # raises on any failed stream
    assert results["LODDVALUES001"]["sync_mode"] == "historical"
    rejected = query(warehouse_url, "select connection_id, raw_table, pk, reason from state.rejected_records "
                                    "order by raw_table, reason")
    assert rejected == [
        (MERCHANT, "square_customers", None, "invalid_primary_key: empty or not text"),
        (MERCHANT, "square_customers", "CGARBAGEDATE",
         "invalid_replication_key: field 'updated_at': expected an ISO 8601 time, got string"),
        (MERCHANT, "square_locations", None, "invalid_primary_key: empty or not text"),
    ]
    landed = raw(warehouse_url, "square_customers", main["id"])
    assert customer["id"] in landed and "CGARBAGEDATE" not in landed and len(landed) == len(sandbox.dump()["customers"]) - 2
    assert "LODDVALUES001" in raw(warehouse_url, "square_locations", main["id"])
