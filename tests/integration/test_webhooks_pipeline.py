"""Webhooks end to end without Airflow: registration, the sandboxes delivering to the receiver, the event store,
the micro-batch, and the schedule as the safety net (issue 17; B2, B9, B10, B11, S4, S9).

Real Postgres, real sandboxes, the real receiver app served by uvicorn on an ephemeral port. Its backend here
holds the BigCommerce secret in memory and records the hand-off; the Airflow backend (secrets from Airflow
connections, Asset events) is proven through Airflow's API server in tests/e2e/test_webhooks_airflow.py.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import psycopg2
import pytest
import requests
import uvicorn
import yaml

from devstack.airflow import ACTIVECAMPAIGN_TOKEN, SQUARE_TOKEN, bigcommerce_token
from ecomsync import tasks
from ecomsync.config import load_config
from ecomsync.extract import ExtractRequest
from ecomsync.sources import bigcommerce as bc_source
from ecomsync.sources import square as sq_source
from ecomsync.webhooks import microbatch, registration
from ecomsync.webhooks.events import EventStore
from ecomsync.webhooks.receiver import create_app
from ecomsync.webhooks.signatures import BIGCOMMERCE_SECRET_HEADER
from sandbox import activecampaign, bigcommerce, square
from sandbox.core import serve
from tests.conftest import dict_rows

STORES = ("k3x9q2m7a1", "p8w4z6t2n5")
SECRET = "hook-secret-for-tests-0123456789"


class RecordingBackend:
    def __init__(self, warehouse_url: str, receiver_url: str, square_url: str):
        self.store = EventStore(warehouse_url)
        self.receiver_url = receiver_url
        self.square_url = square_url
        self.notified: list = []

    def bigcommerce_secret(self):
        return SECRET

    def square_notification_url(self):
        return registration.square_endpoint(self.receiver_url)

    def square_signature_key(self, refresh=False):
        return registration.square_signature_key(sq_source.session_for(self.square_url, SQUARE_TOKEN),
                                                 self.receiver_url)

    def event_store(self):
        return self.store

    def notify(self, event):
        self.notified.append(event)


def _serve_receiver(app):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def stack(warehouse_url, tmp_path):
    bc_server, _ = serve(bigcommerce.create_app(seed=3, orders=12, customers=6, products=5, enforce_rate_limit=False))
    sq_server, _ = serve(square.create_app(seed=3, payments=8, customers=5))
    urls = {"bigcommerce": f"http://127.0.0.1:{bc_server.server_port}",
            "square": f"http://127.0.0.1:{sq_server.server_port}"}
    # The backend needs the receiver URL and the receiver needs the backend: bind the port first.
    backend = RecordingBackend(warehouse_url, "", urls["square"])
    backend.store.ensure_schema()
    server, base = _serve_receiver(create_app(backend))
    # Mounted at the root here; Airflow mounts it under /ecomsync/webhooks.
    backend.receiver_url = receiver_url = base

    def write_config(enabled: dict[str, bool], disabled_locations: list[str] = ()) -> object:
        config = yaml.safe_load(Path("config/pipeline.yml").read_text())
        config["bigcommerce"]["stores"] = [s for s in config["bigcommerce"]["stores"] if s["store_hash"] in enabled]
        for store in config["bigcommerce"]["stores"]:
            store["enabled"] = enabled[store["store_hash"]]
        config["square"]["disabled_locations"] = list(disabled_locations)
        config["webhooks"] = {"receiver_url": receiver_url}
        path = tmp_path / "pipeline.yml"
        path.write_text(yaml.safe_dump(config))
        return load_config(path)

    def credentials_for(conn_id: str) -> tasks.Credentials:
        for store_hash in STORES:
            if conn_id == f"bigcommerce_{store_hash}":
                return tasks.Credentials(urls["bigcommerce"], bigcommerce_token(store_hash))
        return tasks.Credentials(urls["square"], SQUARE_TOKEN)

    yield {"urls": urls, "backend": backend, "receiver": receiver_url, "config": write_config,
           "credentials_for": credentials_for, "warehouse_url": warehouse_url}
    server.should_exit = True
    bc_server.shutdown()
    sq_server.shutdown()


def _bc_hooks(stack, store_hash: str) -> list[dict]:
    session = bc_source.session_for(stack["urls"]["bigcommerce"], store_hash, bigcommerce_token(store_hash))
    return registration.list_bigcommerce_hooks(session)


def _events(stack) -> list[dict]:
    return dict_rows(stack["warehouse_url"], "select * from raw.webhook_events order by received_at")


def _wait(predicate, timeout: float = 10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_registration_creates_repairs_and_removes_hooks(stack):  # B1, B11, S9
    config = stack["config"]({STORES[0]: True, STORES[1]: True})
    first = registration.sync_registrations(config, stack["credentials_for"], SECRET)
    assert first["errors"] == {}
    assert first["stores"][STORES[0]]["created"] == len(registration.BIGCOMMERCE_SCOPES)
    assert first["square"]["created"] == 1
    hooks = _bc_hooks(stack, STORES[0])
    assert {h["scope"] for h in hooks} == set(registration.BIGCOMMERCE_SCOPES)
    assert all(h["headers"] == {BIGCOMMERCE_SECRET_HEADER: SECRET} and h["is_active"] for h in hooks)

    again = registration.sync_registrations(config, stack["credentials_for"], SECRET)
    assert again["stores"][STORES[0]] == {"created": 0, "repaired": 0, "removed": 0,
                                          "unchanged": len(registration.BIGCOMMERCE_SCOPES)}
    assert again["square"]["unchanged"] == 1

    # BigCommerce deactivates a hook whose deliveries kept failing: the next registration repairs it.
    bc = stack["urls"]["bigcommerce"]
    requests.put(f"{bc}/stores/{STORES[0]}/v3/hooks/{hooks[0]['id']}", json={"is_active": False},
                 headers={"X-Auth-Token": bigcommerce_token(STORES[0])}, timeout=10)
    repaired = registration.sync_registrations(config, stack["credentials_for"], SECRET)
    assert repaired["stores"][STORES[0]]["repaired"] == 1
    assert all(h["is_active"] for h in _bc_hooks(stack, STORES[0]))

    # Disabling a store removes its hooks; disabling every location removes the Square subscription.
    locations = [loc["id"] for loc in sq_source.list_locations(sq_source.session_for(stack["urls"]["square"],
                                                                                       SQUARE_TOKEN))]
    disabled = stack["config"]({STORES[0]: False, STORES[1]: True}, disabled_locations=locations)
    removed = registration.sync_registrations(disabled, stack["credentials_for"], SECRET)
    assert removed["stores"][STORES[0]]["removed"] == len(registration.BIGCOMMERCE_SCOPES)
    assert _bc_hooks(stack, STORES[0]) == [] and len(_bc_hooks(stack, STORES[1])) == len(registration.BIGCOMMERCE_SCOPES)
    assert removed["square"]["removed"] == 1


def test_sandbox_deliveries_are_verified_and_stored_once(stack):  # B2, B4, B9, S4
    config = stack["config"]({STORES[0]: True})
    registration.sync_registrations(config, stack["credentials_for"], SECRET)
    bc, sq, receiver = stack["urls"]["bigcommerce"], stack["urls"]["square"], stack["receiver"]
    requests.put(f"{bc}/__admin/webhooks", json={"duplicate": True}, timeout=10)
    order = requests.post(f"{bc}/__admin/bigcommerce/{STORES[0]}/orders", json={"count": 1},
                          timeout=10).json()["orders"][0]
    assert _wait(lambda: _events(stack))
    time.sleep(0.3)
    assert len([d for d in requests.get(f"{bc}/__admin/webhooks", timeout=10).json()["deliveries"]
                if d["outcome"] == "delivered"]) == 2, "sent twice, both answered 2xx"
    events = _events(stack)
    assert len(events) == 1, "the duplicate is a no-op"
    assert events[0]["connection_id"] == f"bigcommerce:{STORES[0]}" and events[0]["object_id"] == str(order["id"])
    assert events[0]["scope"] == "store/order/created" and events[0]["claimed_by"] is None
    assert len(stack["backend"].notified) == 1, "Airflow is told once"

    body = events[0]["payload"]
    assert requests.post(f"{receiver}/bigcommerce", json=body, timeout=10).status_code == 401
    assert requests.post(f"{receiver}/bigcommerce", json=body, headers={BIGCOMMERCE_SECRET_HEADER: "wrong"},
                         timeout=10).status_code == 401
    replay = requests.post(f"{receiver}/bigcommerce", json=body, headers={BIGCOMMERCE_SECRET_HEADER: SECRET},
                           timeout=10)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    assert requests.post(f"{receiver}/bigcommerce", data=b"not json", headers={BIGCOMMERCE_SECRET_HEADER: SECRET},
                         timeout=10).status_code == 400

    sale = requests.post(f"{sq}/__admin/square/payments", json={}, timeout=10).json()
    square_events = _wait(lambda: [e for e in _events(stack) if e["source"] == "square"
                                   and e["scope"] == "payment.created"])
    assert square_events and square_events[0]["connection_id"] == f"square:{sale['payment']['location_id']}"
    assert requests.post(f"{receiver}/square", json=square_events[0]["payload"], timeout=10).status_code == 401
    assert requests.post(f"{receiver}/square", json=square_events[0]["payload"],
                         headers={"x-square-hmacsha256-signature": "AAAA"}, timeout=10).status_code == 401
    customer = [e for e in _events(stack) if e["scope"] == "customer.created"]
    assert customer and customer[0]["connection_id"] == "square:*", "a customer belongs to no one location"


def test_microbatch_extracts_the_connections_the_events_name(stack):  # B2, S4
    config = stack["config"]({STORES[0]: True, STORES[1]: True})
    wh = stack["warehouse_url"]
    for store in config.stores:  # connected earlier: the first (historical) sync is done
        tasks.extract_store(config, store, stack["credentials_for"](store.conn_id), ExtractRequest(), wh)
    registration.sync_registrations(config, stack["credentials_for"], SECRET)
    bc = stack["urls"]["bigcommerce"]
    order = requests.post(f"{bc}/__admin/bigcommerce/{STORES[0]}/orders", json={"count": 1},
                          timeout=10).json()["orders"][0]
    assert _wait(lambda: _events(stack))
    targets = microbatch.claim(wh, "run-1")
    assert targets == {"bigcommerce": [STORES[0]], "square": []}
    # an event arriving during the run waits for the next one
    requests.put(f"{bc}/__admin/bigcommerce/{STORES[0]}/orders/{order['id']}", json={"status_id": 2}, timeout=10)
    assert _wait(lambda: EventStore(wh).waiting() >= 2)
    result = microbatch.extract_stores(config, targets["bigcommerce"], stack["credentials_for"], wh, "run-1")
    assert list(result["extracted"]) == [STORES[0]]
    assert result["extracted"][STORES[0]]["sync_mode"] == "incremental"
    landed = dict_rows(wh, "select pk from raw.bigcommerce_orders where connection_id = %s and pk = %s",
                       (f"bigcommerce:{STORES[0]}", str(order["id"])))
    assert landed, "the new order was landed by the event-triggered run"
    assert microbatch.claim(wh, "run-2") == {"bigcommerce": [STORES[0]], "square": []}
    assert microbatch.dbt_selection({"bigcommerce": [STORES[0]], "square": []}) == [
        "source:bigcommerce+,+path:models/marts/crm", "source:state+,+path:models/marts/crm"]


def test_a_square_microbatch_fetches_merchant_streams_once_per_account(stack):  # S4, P3, B2 (issue 16 item 3)
    """Events for every location (a customer change names no location): the account's customers, catalog and
    locations are read once, each location's payments and orders once — as the scheduled DAG does."""
    config = stack["config"]({STORES[0]: True})
    wh, sq = stack["warehouse_url"], stack["urls"]["square"]
    locations = tasks.locations_to_sync(config, stack["credentials_for"](config.square.conn_id))
    active = [loc for loc in locations if loc["status"] == "ACTIVE"]
    assert len(active) >= 2, "the sandbox serves several active locations of one account"
    requests.delete(f"{sq}/__admin/requests", timeout=10)

    result = microbatch.extract_locations(config, ["*"], stack["credentials_for"], wh, "run-1")

    merchants = [label for label in result["extracted"] if label.startswith("merchant:")]
    assert len(merchants) == 1 and len(result["extracted"]) == 1 + len(locations)
    paths = [entry["path"] for entry in requests.get(f"{sq}/__admin/requests", timeout=10).json()["requests"]]
    assert paths.count("/v2/customers/search") == 1 and paths.count("/v2/catalog/search") == 1
    extracted_locations = [label for label in result["extracted"] if not label.startswith("merchant:")]
    assert paths.count("/v2/payments") >= len(extracted_locations) - (len(locations) - len(active))
    assert dict_rows(wh, "select 1 from raw.square_customers where connection_id = %s limit 1",
                     (sq_source.merchant_connection_id(merchants[0].removeprefix("merchant:")),))


def test_a_failing_store_gives_its_events_back_and_spares_the_others(stack):  # B10
    config = stack["config"]({STORES[0]: True, STORES[1]: True})
    wh = stack["warehouse_url"]
    registration.sync_registrations(config, stack["credentials_for"], SECRET)
    bc = stack["urls"]["bigcommerce"]
    for store_hash in STORES:
        requests.post(f"{bc}/__admin/bigcommerce/{store_hash}/orders", json={"count": 1}, timeout=10)
    assert _wait(lambda: EventStore(wh).waiting() >= 2)
    requests.delete(f"{bc}/__admin/bigcommerce/{STORES[1]}/token", timeout=10)  # revoked: retrying cannot help
    targets = microbatch.claim(wh, "run-1")
    with pytest.raises(microbatch.MicroBatchError, match=STORES[1]):
        microbatch.extract_stores(config, targets["bigcommerce"], stack["credentials_for"], wh, "run-1")
    assert dict_rows(wh, "select 1 from raw.bigcommerce_orders where connection_id = %s limit 1",
                     (f"bigcommerce:{STORES[0]}",)), "the healthy store was extracted"
    waiting = {e["connection_id"] for e in _events(stack) if e["claimed_by"] is None}
    assert waiting == {f"bigcommerce:{STORES[1]}"}


def test_with_every_webhook_dropped_the_schedule_still_delivers_everything(stack):  # B2, B10
    config = stack["config"]({STORES[0]: True})
    wh = stack["warehouse_url"]
    store = config.stores[0]
    credentials = stack["credentials_for"](store.conn_id)
    tasks.extract_store(config, store, credentials, ExtractRequest(), wh)
    registration.sync_registrations(config, stack["credentials_for"], SECRET)
    bc = stack["urls"]["bigcommerce"]
    requests.put(f"{bc}/__admin/webhooks", json={"drop": True}, timeout=10)
    created = requests.post(f"{bc}/__admin/bigcommerce/{STORES[0]}/orders", json={"count": 3},
                            timeout=10).json()["orders"]
    time.sleep(0.5)
    assert _events(stack) == [], "no webhook reached the receiver"
    assert microbatch.claim(wh, "run-1") == {"bigcommerce": [], "square": []}

    # the scheduled path: extract_bigcommerce (incremental) → transform → load_crm
    tasks.extract_store(config, store, credentials, ExtractRequest(mode="incremental"), wh)
    tasks.transform(config, wh)
    ac_server, _ = serve(activecampaign.create_app(enforce_rate_limit=False))
    try:
        ac = f"http://127.0.0.1:{ac_server.server_port}"
        tasks.load_crm(config, tasks.Credentials(ac, ACTIVECAMPAIGN_TOKEN), wh, "load-1")
        state = requests.get(f"{ac}/__admin/activecampaign/state", timeout=30).json()
    finally:
        ac_server.shutdown()
    pushed = {str(o.get("externalid")) for o in state["ecomOrders"]}
    expected = {str(o["id"]) for o in created if o["customer_id"] != 0}
    assert expected and expected <= pushed, "every new order reached the CRM without any webhook"
    with psycopg2.connect(wh) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from raw.bigcommerce_orders where pk = any(%s)", ([str(o["id"]) for o in created],))
        assert cur.fetchone()[0] == len(created)


def test_two_dbt_builds_on_one_warehouse_run_one_after_the_other(warehouse_url):  # P3
    # transform (schedule) and webhook_sync (events) build the same models: the second waits for the first.
    from ecomsync.build_lock import dbt_build_lock

    order = []
    first_in = threading.Event()

    def first():
        with dbt_build_lock(warehouse_url):
            order.append("first starts")
            first_in.set()
            time.sleep(0.5)
            order.append("first ends")

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with dbt_build_lock(warehouse_url):
        order.append("second starts")
    thread.join()
    assert order == ["first starts", "first ends", "second starts"]


def _built_from(wh: str, model: str):
    """When the incremental model's latest build started (its watermark; dbt_project/macros/incremental.sql)."""
    rows = dict_rows(wh, "select built_from from intermediate.incremental_watermarks where model = %s", (model,))
    return rows[0]["built_from"] if rows else None


def test_a_microbatch_builds_the_crm_marts_and_leaves_the_segments_to_the_schedule(stack):  # B2, S4, P1 (latency)
    config = stack["config"]({STORES[0]: True})
    wh = stack["warehouse_url"]
    store = config.stores[0]
    # connected earlier: the first (historical) sync and a scheduled build are done
    tasks.extract_store(config, store, stack["credentials_for"](store.conn_id), ExtractRequest(), wh)
    tasks.transform(config, wh)
    registration.sync_registrations(config, stack["credentials_for"], SECRET)
    # every crm mart and segment is incremental: a build moves its watermark, whatever it rewrote
    segments_before, contacts_mart_before = _built_from(wh, "segment_members"), _built_from(wh, "contacts")
    assert segments_before and contacts_mart_before
    created = requests.post(f"{stack['urls']['bigcommerce']}/__admin/bigcommerce/{STORES[0]}/orders",
                            json={"count": 3}, timeout=10).json()["orders"]
    assert _wait(lambda: EventStore(wh).waiting() >= 3)
    result = microbatch.run(config, stack["credentials_for"], wh, "webhook-run-1")
    assert result["targets"] == {"bigcommerce": [STORES[0]], "square": []} and result["dbt"]["success"]
    in_mart = dict_rows(wh, "select external_id from crm.ecom_orders where connection_id = %s",
                        (f"bigcommerce:{STORES[0]}",))
    expected = {str(o["id"]) for o in created if o["customer_id"] != 0}
    assert expected and expected <= {row["external_id"] for row in in_mart}, "the new orders are in the crm marts"
    assert _built_from(wh, "contacts") > contacts_mart_before, "the crm marts were rebuilt"
    assert _built_from(wh, "segment_members") == segments_before, "the segments are left to the schedule"
    assert microbatch.run(config, stack["credentials_for"], wh, "webhook-run-2")["dbt"] == {"skipped": "no events"}


def test_the_first_event_on_a_fresh_warehouse_builds_what_the_marts_read(stack):  # B2, P1 (make airflow's first run)
    config = stack["config"]({STORES[0]: True})
    wh = stack["warehouse_url"]
    assert microbatch.unbuilt_sources(wh) == {"bigcommerce", "square"}
    registration.sync_registrations(config, stack["credentials_for"], SECRET)
    order = requests.post(f"{stack['urls']['bigcommerce']}/__admin/bigcommerce/{STORES[0]}/orders",
                          json={"count": 1, "customer_id": 1}, timeout=10).json()["orders"][0]
    assert _wait(lambda: EventStore(wh).waiting() >= 1)
    # never built: the unioned models also read Square's staging, which no build has created yet
    result = microbatch.run(config, stack["credentials_for"], wh, "first-run")
    assert result["dbt"]["success"]
    assert dict_rows(wh, "select 1 from crm.ecom_orders where connection_id = %s and external_id = %s",
                     (f"bigcommerce:{STORES[0]}", str(order["id"])))
    assert microbatch.unbuilt_sources(wh) == frozenset()


def test_a_claim_on_a_current_schema_does_not_wait_for_the_receivers_inserts(warehouse_url):  # B2, S9
    """A run's claim (a new EventStore) runs no DDL once the table and its index exist: CREATE INDEX IF NOT
    EXISTS would take a SHARE lock and queue behind a receiver's open insert (and every later insert behind it)."""
    EventStore(warehouse_url).ensure_schema()
    receiver = psycopg2.connect(warehouse_url)
    try:
        with receiver.cursor() as cur:  # an insert in flight: ROW EXCLUSIVE until the transaction ends
            cur.execute("insert into raw.webhook_events (source, event_key, connection_id, scope, payload) "
                        "values ('bigcommerce', 'in-flight', 'bigcommerce:s', 'store/order/created', '{}')")
        sep = "&" if "?" in warehouse_url else "?"
        store = EventStore(f"{warehouse_url}{sep}options=-c%20lock_timeout%3D5s")  # a wait → an error
        assert store.claim("run-1") == []
    finally:
        receiver.rollback()
        receiver.close()
