"""The sandboxes' webhooks behave as documented (issue 17 item 4).

BigCommerce ``/v3/hooks`` per ``bigcommerce/webhooks.v3.yml`` and deliveries per
``webhook-events/https-webhook-overview.mdx``; Square subscriptions and events per ``square/api.json``.
A tiny HTTP server on an ephemeral loopback port stands for the receiver and records what it gets.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from ecomsync.webhooks.signatures import square_signature_valid
from sandbox import bigcommerce, square
from sandbox.core import serve

STORE = "k3x9q2m7a1"
BC_HEADERS = {"X-Auth-Token": bigcommerce.token_for(STORE)}
SQ_HEADERS = {"Authorization": f"Bearer {square.TOKEN}"}


class Recorder:
    """A receiver that answers ``status`` (a list is consumed one answer per delivery) and keeps every delivery."""

    def __init__(self):
        self.deliveries: list[dict] = []
        self.statuses: list[int] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.deliveries.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                            "raw": body, "body": json.loads(body), "at": time.time()})
                status = recorder.statuses.pop(0) if recorder.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.time() + timeout
        while len(self.deliveries) < count and time.time() < deadline:
            time.sleep(0.02)
        return self.deliveries


@pytest.fixture
def receiver():
    recorder = Recorder()
    yield recorder
    recorder.server.shutdown()


@pytest.fixture
def bc():
    server, _ = serve(bigcommerce.create_app(orders=20, customers=8, products=6, enforce_rate_limit=False))
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def sq():
    server, _ = serve(square.create_app(payments=10, customers=6))
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _hook(bc_url: str, body: dict) -> requests.Response:
    return requests.post(f"{bc_url}/stores/{STORE}/v3/hooks", json=body, headers=BC_HEADERS, timeout=10)


def test_bigcommerce_hooks_crud_follows_the_spec(bc):  # webhooks.v3.yml /hooks
    assert requests.get(f"{bc}/stores/{STORE}/v3/hooks", timeout=10).status_code == 401
    missing = _hook(bc, {"scope": "store/order/created"})
    assert missing.status_code == 422 and "destination" in missing.json()["errors"]
    custom_port = _hook(bc, {"scope": "store/order/created", "destination": "https://example.com:8443/hooks"})
    assert custom_port.status_code == 422, "custom ports are not supported"
    created = _hook(bc, {"scope": "store/order/created", "destination": "https://example.com/hooks",
                         "headers": {"X-Secret": "s3cret"}})
    assert created.status_code == 200
    hook = created.json()["data"]
    assert {"id", "client_id", "store_hash", "scope", "destination", "is_active", "headers", "created_at",
            "updated_at"} <= set(hook) and hook["is_active"] is True and hook["store_hash"] == STORE
    listed = requests.get(f"{bc}/stores/{STORE}/v3/hooks", headers=BC_HEADERS, timeout=10).json()
    assert [h["id"] for h in listed["data"]] == [hook["id"]] and listed["meta"]["pagination"]["total"] == 1
    updated = requests.put(f"{bc}/stores/{STORE}/v3/hooks/{hook['id']}", json={"is_active": False},
                           headers=BC_HEADERS, timeout=10).json()["data"]
    assert updated["is_active"] is False
    assert requests.delete(f"{bc}/stores/{STORE}/v3/hooks/{hook['id']}", headers=BC_HEADERS,
                           timeout=10).json()["data"]["id"] == hook["id"]
    gone = requests.get(f"{bc}/stores/{STORE}/v3/hooks/{hook['id']}", headers=BC_HEADERS, timeout=10)
    assert gone.status_code == 404


def test_bigcommerce_delivers_admin_mutations_with_the_hook_headers(bc, receiver):  # B2, B4, B9
    for scope in ("store/order/*", "store/customer/updated", "store/cart/abandoned"):
        assert _hook(bc, {"scope": scope, "destination": f"{receiver.url}/bc",
                          "headers": {"X-Secret": "s3cret"}}).status_code == 200
    admin = f"{bc}/__admin/bigcommerce/{STORE}"
    order = requests.post(f"{admin}/orders", json={"count": 1}, timeout=10).json()["orders"][0]
    requests.put(f"{admin}/orders/{order['id']}", json={"status_id": 2}, timeout=10)
    requests.post(f"{admin}/orders/{order['id']}/refunds", json={}, timeout=10)
    incomplete = requests.post(f"{admin}/orders", json={"count": 1, "status_id": 0}, timeout=10).json()["orders"][0]
    customer_id = requests.get(f"{admin}/customers", timeout=10).json()["customers"][0]["id"]
    requests.put(f"{admin}/customers/{customer_id}", json={"first_name": "Ada"}, timeout=10)
    deliveries = receiver.wait_for(9)
    scopes = [d["body"]["scope"] for d in deliveries]
    assert scopes.count("store/order/created") == 2
    assert {"store/order/statusUpdated", "store/order/updated", "store/order/refund/created",
            "store/cart/abandoned", "store/customer/updated"} <= set(scopes)
    for delivery in deliveries:
        body = delivery["body"]
        assert delivery["headers"]["x-secret"] == "s3cret"
        assert set(body) == {"scope", "store_id", "data", "hash", "created_at", "producer"}
        assert body["producer"] == f"stores/{STORE}" and body["store_id"].isdigit()
        # webhook_callback_base.hash: the JSON-encoded data through SHA-1
        assert body["hash"] == hashlib.sha1(json.dumps(body["data"], separators=(",", ":"),
                                                       sort_keys=True).encode()).hexdigest()
    status = next(d["body"]["data"] for d in deliveries if d["body"]["scope"] == "store/order/statusUpdated")
    assert status == {"type": "order", "id": order["id"], "status": {"previous_status_id": 11, "new_status_id": 2}}
    abandoned = next(d["body"]["data"] for d in deliveries if d["body"]["scope"] == "store/cart/abandoned")
    cart = requests.get(f"{bc}/stores/{STORE}/v3/carts/{abandoned['id']}", headers=BC_HEADERS, timeout=10)
    assert cart.status_code == 200, "the abandoned cart named by the webhook can be fetched"
    assert incomplete["status_id"] == 0


def test_bigcommerce_retries_at_growing_intervals_then_deactivates_the_hook(bc, receiver):
    hook = _hook(bc, {"scope": "store/order/created", "destination": f"{receiver.url}/bc"}).json()["data"]
    # the real schedule (60 s, 180 s, 300 s, …) shrunk a thousandfold
    requests.put(f"{bc}/__admin/webhooks", json={"time_scale": 0.001,
                                                  "retry_intervals_s": [60, 180, 300]}, timeout=10)
    receiver.statuses = [500, 503, 500, 500]
    requests.post(f"{bc}/__admin/bigcommerce/{STORE}/orders", json={"count": 1}, timeout=10)
    deliveries = receiver.wait_for(4)
    assert len(deliveries) == 4
    gaps = [b["at"] - a["at"] for a, b in zip(deliveries, deliveries[1:])]
    assert gaps[0] < gaps[1] < gaps[2], f"intervals must grow: {gaps}"
    deadline = time.time() + 5
    while time.time() < deadline:
        state = requests.get(f"{bc}/stores/{STORE}/v3/hooks/{hook['id']}", headers=BC_HEADERS, timeout=10).json()
        if not state["data"]["is_active"]:
            break
        time.sleep(0.05)
    assert state["data"]["is_active"] is False, "a hook whose retries ran out is deactivated"
    requests.post(f"{bc}/__admin/bigcommerce/{STORE}/orders", json={"count": 1}, timeout=10)
    time.sleep(0.3)
    assert len(receiver.deliveries) == 4, "a deactivated hook gets nothing"


def test_duplicates_reordering_and_drop_on_demand(bc, receiver):
    _hook(bc, {"scope": "store/order/created", "destination": f"{receiver.url}/bc"})
    admin = f"{bc}/__admin/bigcommerce/{STORE}/orders"
    requests.put(f"{bc}/__admin/webhooks", json={"duplicate": True}, timeout=10)
    requests.post(admin, json={"count": 1}, timeout=10)
    first, second = receiver.wait_for(2)
    assert first["raw"] == second["raw"], "a duplicate is the same body (same hash)"
    requests.put(f"{bc}/__admin/webhooks", json={"reorder": True, "reorder_batch": 3}, timeout=10)
    created = requests.post(admin, json={"count": 3}, timeout=10).json()["orders"]
    delivered = [d["body"]["data"]["id"] for d in receiver.wait_for(5)[2:]]
    assert delivered == [o["id"] for o in reversed(created)], "out of order: newest first"
    requests.put(f"{bc}/__admin/webhooks", json={"drop": True}, timeout=10)
    requests.post(admin, json={"count": 2}, timeout=10)
    time.sleep(0.3)
    assert len(receiver.deliveries) == 5
    log = requests.get(f"{bc}/__admin/webhooks", timeout=10).json()["deliveries"]
    assert [row["outcome"] for row in log[-2:]] == ["dropped", "dropped"]


def test_square_subscriptions_and_signed_events(sq, receiver):  # S4
    url = f"{receiver.url}/square"
    base = f"{sq}/v2/webhooks/subscriptions"
    refused = requests.post(base, json={"subscription": {"notification_url": url}}, headers=SQ_HEADERS, timeout=10)
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "subscription.event_types"
    created = requests.post(base, headers=SQ_HEADERS, timeout=10, json={
        "idempotency_key": "k1", "subscription": {"name": "ecomsync", "notification_url": url,
                                                  "event_types": ["payment.created", "order.created",
                                                                  "customer.created", "customer.updated",
                                                                  "refund.created", "payment.updated",
                                                                  "order.updated"]}}).json()["subscription"]
    assert created["signature_key"] and created["enabled"] is True and created["id"].startswith("wbhk_")
    listed = requests.get(base, headers=SQ_HEADERS, timeout=10).json()["subscriptions"]
    assert "signature_key" not in listed[0], "the list does not show the key (ListWebhookSubscriptionsResponse)"
    retrieved = requests.get(f"{base}/{created['id']}", headers=SQ_HEADERS, timeout=10).json()["subscription"]
    assert retrieved["signature_key"] == created["signature_key"]

    sale = requests.post(f"{sq}/__admin/square/payments", json={}, timeout=10).json()
    requests.post(f"{sq}/__admin/square/payments/{sale['payment']['id']}/refund", json={}, timeout=10)
    requests.post(f"{sq}/__admin/square/customers/{sale['customer']['id']}", json={"given_name": "Ada"}, timeout=10)
    deliveries = receiver.wait_for(7)
    types = [d["body"]["type"] for d in deliveries]
    assert types[:3] == ["customer.created", "order.created", "payment.created"]
    assert {"refund.created", "payment.updated", "order.updated", "customer.updated"} <= set(types)
    for delivery in deliveries:
        body = delivery["body"]
        assert set(body) == {"merchant_id", "type", "event_id", "created_at", "data"}
        assert square_signature_valid(delivery["raw"], delivery["headers"]["x-square-hmacsha256-signature"],
                                      created["signature_key"], url)
        assert not square_signature_valid(delivery["raw"], delivery["headers"]["x-square-hmacsha256-signature"],
                                          created["signature_key"], url + "x")
    payment = next(d["body"] for d in deliveries if d["body"]["type"] == "payment.created")
    assert payment["data"]["object"]["payment"]["location_id"] == sale["payment"]["location_id"]
    order = next(d["body"] for d in deliveries if d["body"]["type"] == "order.created")
    assert order["data"]["type"] == "order_created" and order["data"]["object"]["order_created"]["location_id"]

    new_key = requests.post(f"{base}/{created['id']}/signature-key", headers=SQ_HEADERS,
                            timeout=10).json()["signature_key"]
    assert new_key != created["signature_key"]
    requests.put(f"{base}/{created['id']}", json={"subscription": {"enabled": False}}, headers=SQ_HEADERS, timeout=10)
    requests.post(f"{sq}/__admin/square/payments", json={}, timeout=10)
    time.sleep(0.3)
    assert len(receiver.deliveries) == 7, "a disabled subscription gets nothing"
    assert requests.delete(f"{base}/{created['id']}", headers=SQ_HEADERS, timeout=10).status_code == 200
