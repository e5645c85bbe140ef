"""Webhooks for the BigCommerce and Square sandboxes: subscriptions, signed deliveries, retries.

One generic delivery engine (``Dispatcher``) and, per API, the subscription endpoints and the
events the sandbox's admin mutations publish. ``install_bigcommerce(app)`` / ``install_square(app)``
are called once by each sandbox's ``create_app``; nothing else in those modules knows about webhooks.

Sources (../shared/api-specs):
- BigCommerce: ``bigcommerce/webhooks.v3.yml`` (``/hooks`` CRUD: ``webhook_Base``, ``webhook_Put``,
  ``webhook_Full``, responses ``webhooks_Resp``/``webhook_Resp``, ``422_UnprocessableEntity``;
  callback payload ``webhook_callback_base``: ``scope``, ``store_id``, ``data``, ``hash`` = SHA-1 of the
  JSON-encoded ``data``, ``created_at``, ``producer`` = ``stores/{store_hash}``),
  ``bigcommerce/webhook-events/*.json`` (the payload examples copied below) and
  ``webhook-events/https-webhook-overview.mdx`` ("Callback retry mechanism": retries after 60, 180, 300,
  600, 900, 1800, 3600, 7200, 21600, 50400, 86400 s, then the hook is deactivated; "Security": the
  hook's custom ``headers`` come back on every delivery; "Creating a webhook": the destination must be
  served on port 443; "If a hook fires twice for the same event, both request bodies rely on the same hash").
- Square: ``square/api.json`` (``WebhookSubscription``, ``CreateWebhookSubscriptionRequest``,
  ``UpdateWebhookSubscriptionRequest``, ``UpdateWebhookSubscriptionSignatureKeyResponse``,
  ``TestWebhookSubscriptionRequest``; events ``PaymentCreatedEvent``, ``PaymentUpdatedEvent``,
  ``OrderCreatedEvent``, ``OrderUpdatedEvent``, ``RefundCreatedEvent``, ``CustomerCreatedEvent``,
  ``CustomerUpdatedEvent``: ``{merchant_id, type, event_id, created_at, data: {type, id, object}}``);
  api-specs README "Webhooks": header ``x-square-hmacsha256-signature`` = base64 HMAC-SHA256 of
  notification URL + body with the subscription's ``signature_key``; deliveries may be repeated.

Delivery on demand (``PUT /__admin/webhooks`` with a ``DeliveryPlan``): ``drop`` (nothing is sent,
as when the receiver is unreachable for good), ``duplicate`` (every event is sent twice, same body),
``reorder`` (deliveries are held and sent newest first when ``reorder_batch`` of them are waiting, or on
``POST /__admin/webhooks/flush``), ``retry_intervals_s`` and ``time_scale`` (shrink the real schedule in
tests). ``GET /__admin/webhooks`` → the plan and the delivery log (every attempt with its answer).

Local deviation: the real stores refuse a destination that is not ``https://…:443``; this sandbox
refuses those too, except loopback destinations (``http://127.0.0.1:<port>``), which stand for the
TLS-terminating proxy in front of the receiver.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from sandbox.core import ApiError, Request, Response, SandboxApp

# https-webhook-overview.mdx, "Callback retry mechanism".
BIGCOMMERCE_RETRY_INTERVALS_S = [60, 180, 300, 600, 900, 1800, 3600, 7200, 21600, 50400, 86400]
# Square documents no schedule in the files we hold ("may be repeated"): growing intervals as well.
SQUARE_RETRY_INTERVALS_S = [60, 300, 900, 3600, 10800, 43200]
DELIVERY_TIMEOUT_S = 10.0


@dataclass
class DeliveryPlan:
    drop: bool = False
    duplicate: bool = False
    reorder: bool = False
    reorder_batch: int = 2
    retry_intervals_s: list[float] | None = None  # None: the API's own schedule
    time_scale: float = 1.0  # 0.001 turns the 60 s first retry into 60 ms

    def __post_init__(self) -> None:
        if self.reorder_batch < 2:
            raise ValueError("reorder_batch must be at least 2")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")


@dataclass
class Delivery:
    subscription_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    event_key: str
    attempt: int = 1
    first_at: float = field(default_factory=time.time)


class Dispatcher:
    """Sends deliveries from a background thread, retrying non-2xx answers at growing intervals.

    ``on_exhausted(subscription_id)`` runs when a delivery used up its retries (BigCommerce then
    deactivates the hook). ``is_active(subscription_id)`` is asked before every attempt: a hook that
    was deactivated or deleted meanwhile gets nothing more.
    """

    def __init__(self, name: str, retry_intervals_s: list[float], *,
                 is_active: Callable[[str], bool], on_exhausted: Callable[[str], None] | None = None):
        self.name = name
        self.default_intervals = list(retry_intervals_s)
        self.is_active = is_active
        self.on_exhausted = on_exhausted or (lambda _id: None)
        self.plan = DeliveryPlan()
        self.queue: list[tuple[float, int, Delivery]] = []
        self.held: list[Delivery] = []
        self.log: list[dict] = []
        self.seq = itertools.count()
        self.cond = threading.Condition()
        self.http = requests.Session()
        self.thread = threading.Thread(target=self._run, name=f"webhooks-{name}", daemon=True)
        self.thread.start()

    # -- submitting -----------------------------------------------------------------------------------
    def submit(self, delivery: Delivery) -> None:
        with self.cond:
            if self.plan.drop:
                self._log(delivery, None, "dropped")
                return
            copies = [delivery] + ([Delivery(**asdict(delivery))] if self.plan.duplicate else [])
            if self.plan.reorder:
                self.held.extend(copies)
                if len(self.held) >= self.plan.reorder_batch:
                    self._release_held()
            else:
                for copy in copies:
                    self._schedule(copy, time.time())
            self.cond.notify_all()

    def flush(self) -> int:
        """Send every held (out-of-order) delivery now, newest first."""
        with self.cond:
            count = len(self.held)
            self._release_held()
            self.cond.notify_all()
            return count

    def set_plan(self, plan: DeliveryPlan) -> None:
        with self.cond:
            self.plan = plan
            if not plan.reorder:
                self._release_held()
            self.cond.notify_all()

    def idle(self) -> bool:
        with self.cond:
            return not self.queue and not self.held

    def _release_held(self) -> None:
        now = time.time()
        for delivery in reversed(self.held):
            self._schedule(delivery, now)
            now += 1e-6  # keep the reversed order in the heap
        self.held.clear()

    def _schedule(self, delivery: Delivery, due: float) -> None:
        heapq.heappush(self.queue, (due, next(self.seq), delivery))

    def _intervals(self) -> list[float]:
        intervals = self.plan.retry_intervals_s if self.plan.retry_intervals_s is not None else self.default_intervals
        return [seconds * self.plan.time_scale for seconds in intervals]

    # -- sending --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue or self.queue[0][0] > time.time():
                    self.cond.wait(timeout=None if not self.queue else max(0.0, self.queue[0][0] - time.time()))
                _, _, delivery = heapq.heappop(self.queue)
            self._attempt(delivery)

    def _attempt(self, delivery: Delivery) -> None:
        if not self.is_active(delivery.subscription_id):
            self._log(delivery, None, "inactive")
            return
        status: int | None = None
        outcome = "failed"
        try:
            answer = self.http.post(delivery.url, data=delivery.body, headers=delivery.headers,
                                    timeout=DELIVERY_TIMEOUT_S)
            status = answer.status_code
            outcome = "delivered" if 200 <= status < 300 else "failed"
        except requests.RequestException as exc:
            outcome = f"failed: {type(exc).__name__}"
        with self.cond:
            self._log(delivery, status, outcome)
            if outcome == "delivered":
                return
            intervals = self._intervals()
            if delivery.attempt <= len(intervals):
                due = time.time() + intervals[delivery.attempt - 1]
                delivery.attempt += 1
                self._schedule(delivery, due)
                self.cond.notify_all()
                return
        self.on_exhausted(delivery.subscription_id)

    def _log(self, delivery: Delivery, status: int | None, outcome: str) -> None:
        self.log.append({"seq": len(self.log) + 1, "at": time.time(), "subscription_id": delivery.subscription_id,
                         "url": delivery.url, "event_key": delivery.event_key, "attempt": delivery.attempt,
                         "status": status, "outcome": outcome, "body": json.loads(delivery.body)})

    # -- admin ----------------------------------------------------------------------------------------
    def install_admin(self, app: SandboxApp) -> None:
        app.add_route("GET", r"/__admin/webhooks", self._admin_get)
        app.add_route("PUT", r"/__admin/webhooks", self._admin_put)
        app.add_route("POST", r"/__admin/webhooks/flush", lambda request: Response(200, {"flushed": self.flush()}))

    def _admin_get(self, request: Request) -> Response:
        since = int(request.arg("since", "0"))
        with self.cond:
            return Response(200, {"plan": asdict(self.plan), "pending": len(self.queue), "held": len(self.held),
                                  "deliveries": [row for row in self.log if row["seq"] > since]})

    def _admin_put(self, request: Request) -> Response:
        try:
            plan = DeliveryPlan(**(request.json() or {}))
        except (TypeError, ValueError) as exc:
            return Response(400, {"error": f"invalid delivery plan: {exc}"})
        self.set_plan(plan)
        return Response(200, asdict(plan))


def destination_refusal(url: Any) -> str | None:
    """Why a hook destination is refused, or None (see the module docstring, "Local deviation")."""
    if not isinstance(url, str) or not url:
        return "error.path.missing."
    parts = urlsplit(url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.scheme in ("http", "https"):
        return None
    if parts.scheme != "https" or (parts.port not in (None, 443)):
        return "The destination must be served over HTTPS on port 443; custom ports are not supported."
    return None


def _wrap(app: SandboxApp, handler_name: str, after: Callable[[Request, Response, Any], None],
          before: Callable[[Request], Any] = lambda request: None) -> None:
    """Publish events after a successful admin mutation: wrap the route whose handler is ``handler_name``."""
    for index, (method, pattern, handler) in enumerate(app.routes):
        if getattr(handler, "__name__", "") != handler_name:
            continue

        def wrapped(request: Request, _handler=handler) -> Response:
            state = before(request)
            response = _handler(request)
            if response.status < 300:
                after(request, response, state)
            return response

        wrapped.__name__ = handler_name
        app.routes[index] = (method, pattern, wrapped)


# ================================================================================================
# BigCommerce: /v3/hooks per store
# ================================================================================================
def _store_id(store_hash: str) -> str:
    # webhook_callback_base.store_id: "A numerical identifier that is unique to each store".
    return str(int(hashlib.sha1(store_hash.encode()).hexdigest()[:7], 16))


def bigcommerce_payload(store_hash: str, scope: str, data: dict, created_at: int) -> dict:
    """A callback body as in webhook-events/store_order_created.json (``hash`` = SHA-1 of JSON ``data``)."""
    encoded = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return {"scope": scope, "store_id": _store_id(store_hash), "data": data,
            "hash": hashlib.sha1(encoded).hexdigest(), "created_at": created_at, "producer": f"stores/{store_hash}"}


def _scope_matches(subscribed: str, scope: str) -> bool:
    # webhooks.v3.yml: wildcard scopes such as store/order/* (store_order_wildcard).
    return subscribed == scope or (subscribed.endswith("/*") and scope.startswith(subscribed[:-1]))


class BigCommerceHooks:
    def __init__(self, app: SandboxApp):
        self.app = app
        self.lock = threading.Lock()
        self.hooks: dict[str, dict[int, dict]] = {}  # store hash -> id -> webhook_Full
        self.ids = itertools.count(20172984)
        self.refund_ids = itertools.count(1)
        self.dispatcher = Dispatcher("bigcommerce", BIGCOMMERCE_RETRY_INTERVALS_S, is_active=self._active,
                                     on_exhausted=self._deactivate)

    def _find(self, hook_id: str) -> dict | None:
        for hooks in self.hooks.values():
            if int(hook_id) in hooks:
                return hooks[int(hook_id)]
        return None

    def _active(self, hook_id: str) -> bool:
        with self.lock:
            hook = self._find(hook_id)
            return bool(hook and hook["is_active"])

    def _deactivate(self, hook_id: str) -> None:
        # https-webhook-overview.mdx: after the final retry the webhook is deactivated.
        with self.lock:
            hook = self._find(hook_id)
            if hook:
                hook.update(is_active=False, updated_at=int(time.time()))

    # -- /v3/hooks ------------------------------------------------------------------------------------
    def routes(self) -> None:
        store = r"/stores/(?P<store>[^/]+)/v3/hooks"
        self.app.add_route("GET", store, self.list_hooks)
        self.app.add_route("POST", store, self.create_hook)
        self.app.add_route("GET", rf"{store}/(?P<hook_id>\d+)", self.get_hook)
        self.app.add_route("PUT", rf"{store}/(?P<hook_id>\d+)", self.update_hook)
        self.app.add_route("DELETE", rf"{store}/(?P<hook_id>\d+)", self.delete_hook)

    @staticmethod
    def _error(status: int, title: str, errors: dict | None = None) -> ApiError:
        from sandbox.bigcommerce import v3_error

        return ApiError(v3_error(status, title, errors))

    def _hook(self, request: Request) -> dict:
        hook = self.hooks.get(request.params["store"], {}).get(int(request.params["hook_id"]))
        if hook is None:
            raise self._error(404, f"Webhook with id [{request.params['hook_id']}] not found")
        return hook

    def list_hooks(self, request: Request) -> Response:
        with self.lock:
            rows = list(self.hooks.get(request.params["store"], {}).values())
        for name in ("scope", "destination"):
            if request.arg(name) is not None:
                rows = [r for r in rows if r[name] == request.arg(name)]
        if request.arg("is_active") is not None:
            rows = [r for r in rows if r["is_active"] == (request.arg("is_active") == "true")]
        page, limit = int(request.arg("page", "1")), int(request.arg("limit", "50"))
        chunk = rows[(page - 1) * limit: page * limit]
        total_pages = max(1, -(-len(rows) // limit))
        return Response(200, {"data": [dict(r) for r in chunk], "meta": {"pagination": {
            "total": len(rows), "count": len(chunk), "per_page": limit, "current_page": page,
            "total_pages": total_pages, "links": {"current": f"?page={page}&limit={limit}"}}}})

    def _validated(self, body: Any, partial: bool) -> dict:
        if not isinstance(body, dict):
            raise self._error(400, "Input is invalid.")
        errors = {}
        if (not partial or "scope" in body) and (
                not isinstance(body.get("scope"), str) or not body["scope"].startswith("store/")):
            errors["scope"] = "error.path.missing."
        if not partial or "destination" in body:
            refusal = destination_refusal(body.get("destination"))
            if refusal:
                errors["destination"] = refusal
        headers = body.get("headers")
        if headers is not None and (not isinstance(headers, dict)
                                    or not all(isinstance(v, str) for v in headers.values())):
            errors["headers"] = "headers must be an object of string values"
        if partial and not body:
            errors["body"] = "At least one field is required to perform an update."
        if errors:
            raise self._error(422, "JSON data is missing or invalid", errors)
        return body

    def create_hook(self, request: Request) -> Response:
        body = self._validated(request.json(), partial=False)
        now = int(time.time())
        store_hash = request.params["store"]
        with self.lock:
            hook = {"id": next(self.ids), "client_id": "sandbox-client", "store_hash": store_hash,
                    "scope": body["scope"], "destination": body["destination"],
                    "is_active": bool(body.get("is_active", True)), "headers": body.get("headers"),
                    "created_at": now, "updated_at": now}
            self.hooks.setdefault(store_hash, {})[hook["id"]] = hook
            return Response(200, {"data": dict(hook), "meta": {}})

    def get_hook(self, request: Request) -> Response:
        with self.lock:
            return Response(200, {"data": dict(self._hook(request)), "meta": {}})

    def update_hook(self, request: Request) -> Response:
        body = self._validated(request.json(), partial=True)
        with self.lock:
            hook = self._hook(request)
            hook.update({k: v for k, v in body.items() if k in ("scope", "destination", "is_active", "headers")},
                        updated_at=int(time.time()))
            return Response(200, {"data": dict(hook), "meta": {}})

    def delete_hook(self, request: Request) -> Response:
        with self.lock:
            hook = self._hook(request)
            del self.hooks[request.params["store"]][hook["id"]]
            return Response(200, {"data": dict(hook), "meta": {}})

    # -- events ---------------------------------------------------------------------------------------
    def emit(self, store_hash: str, scope: str, data: dict) -> None:
        body = bigcommerce_payload(store_hash, scope, data, int(time.time()))
        encoded = json.dumps(body, separators=(",", ":")).encode()
        with self.lock:
            hooks = [dict(h) for h in self.hooks.get(store_hash, {}).values()
                     if h["is_active"] and _scope_matches(h["scope"], scope)]
        for hook in hooks:
            headers = {"Content-Type": "application/json", **(hook.get("headers") or {})}
            self.dispatcher.submit(Delivery(str(hook["id"]), hook["destination"], encoded, headers,
                                            f"{scope}:{body['hash']}"))

    def install_events(self) -> None:
        app = self.app

        def order_status(request: Request) -> int | None:
            store = app.stores.get(request.params.get("store"))  # type: ignore[attr-defined]
            order = store.orders.get(int(request.params["order_id"])) if store else None
            if order is None:
                return None
            return order.status_id if hasattr(order, "status_id") else int(order.get("status_id", 0))

        def created(request: Request, response: Response, _state: Any) -> None:
            for order in response.body.get("orders", []):
                self.emit(request.params["store"], "store/order/created", {"type": "order", "id": order["id"]})
                if int(order.get("status_id", -1)) == 0:
                    # An Incomplete order is an abandoned checkout: store_cart_abandoned.json.
                    self._abandoned(request.params["store"], order["id"])

        def status_changed(request: Request, response: Response, previous: int | None) -> None:
            self._order_changed(request.params["store"], response.body, previous)

        def refunded(request: Request, response: Response, previous: int | None) -> None:
            store_hash, order_id = request.params["store"], int(request.params["order_id"])
            # store_order_refund_created.json
            self.emit(store_hash, "store/order/refund/created",
                      {"type": "order", "id": order_id, "refund": {"refund_id": next(self.refund_ids)}})
            self._order_changed(store_hash, response.body, previous)

        def edited(request: Request, response: Response, _state: Any) -> None:
            # store_customer_updated.json; subscribers: store_subscriber_updated (webhooks.v3.yml).
            kind = "customer" if request.params["collection"] == "customers" else "subscriber"
            self.emit(request.params["store"], f"store/{kind}/updated",
                      {"type": kind, "id": int(request.params["record_id"])})

        _wrap(app, "admin_add_orders", created)
        _wrap(app, "admin_set_status", status_changed, before=order_status)
        _wrap(app, "admin_refund", refunded, before=order_status)
        _wrap(app, "admin_edit", edited)
        for name in ("admin_archive", "admin_archive_order"):  # if the sandbox offers an archive mutation
            _wrap(app, name, lambda request, response, _s: self.emit(
                request.params["store"], "store/order/archived",
                {"type": "order", "id": int(request.params["order_id"])}))

    def _abandoned(self, store_hash: str, order_id: int) -> None:
        store = self.app.stores[store_hash]  # type: ignore[attr-defined]
        generated = getattr(store, "generated", None)
        cart_id = generated.cart_id(order_id) if generated is not None else str(uuid.uuid4())
        self.emit(store_hash, "store/cart/abandoned",
                  {"type": "cart", "id": cart_id, "token": hashlib.md5(cart_id.encode()).hexdigest()})

    def _order_changed(self, store_hash: str, order: dict, previous: int | None) -> None:
        order_id, new_status = int(order["id"]), int(order.get("status_id", 0))
        if previous is not None and previous != new_status:
            # store_order_statusUpdated.json
            self.emit(store_hash, "store/order/statusUpdated", {"type": "order", "id": order_id, "status": {
                "previous_status_id": previous, "new_status_id": new_status}})
        self.emit(store_hash, "store/order/updated", {"type": "order", "id": order_id})
        if order.get("is_deleted"):
            self.emit(store_hash, "store/order/archived", {"type": "order", "id": order_id})


def install_bigcommerce(app: SandboxApp) -> BigCommerceHooks:
    hooks = BigCommerceHooks(app)
    hooks.routes()
    hooks.install_events()
    hooks.dispatcher.install_admin(app)
    app.webhooks = hooks  # type: ignore[attr-defined]
    return hooks


# ================================================================================================
# Square: /v2/webhooks/subscriptions (merchant-wide)
# ================================================================================================
SQUARE_EVENT_TYPES = ("payment.created", "payment.updated", "order.created", "order.updated", "refund.created",
                      "refund.updated", "customer.created", "customer.updated")


def square_signature(signature_key: str, notification_url: str, body: bytes) -> str:
    """``x-square-hmacsha256-signature``: base64(HMAC-SHA256(key, notification_url + body))."""
    digest = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SquareSubscriptions:
    def __init__(self, app: SandboxApp, merchant_id: str):
        self.app = app
        self.merchant_id = merchant_id
        self.lock = threading.Lock()
        self.subscriptions: dict[str, dict] = {}
        self.idempotency: dict[str, str] = {}
        self.dispatcher = Dispatcher("square", SQUARE_RETRY_INTERVALS_S, is_active=self._active)

    def _active(self, subscription_id: str) -> bool:
        with self.lock:
            sub = self.subscriptions.get(subscription_id)
            return bool(sub and sub["enabled"])

    def routes(self) -> None:
        base = r"/v2/webhooks/subscriptions"
        self.app.add_route("GET", base, self.list_subscriptions)
        self.app.add_route("POST", base, self.create_subscription)
        self.app.add_route("GET", rf"{base}/(?P<sub_id>[^/]+)", self.retrieve_subscription)
        self.app.add_route("PUT", rf"{base}/(?P<sub_id>[^/]+)", self.update_subscription)
        self.app.add_route("DELETE", rf"{base}/(?P<sub_id>[^/]+)", self.delete_subscription)
        self.app.add_route("POST", rf"{base}/(?P<sub_id>[^/]+)/signature-key", self.rotate_key)
        self.app.add_route("POST", rf"{base}/(?P<sub_id>[^/]+)/test", self.test_subscription)

    @staticmethod
    def _invalid(detail: str, field_name: str | None = None, code: str = "INVALID_VALUE",
                 status: int = 400) -> ApiError:
        error = {"category": "INVALID_REQUEST_ERROR", "code": code, "detail": detail}
        if field_name:
            error["field"] = field_name
        return ApiError(Response(status, {"errors": [error]}))

    def _sub(self, request: Request) -> dict:
        sub = self.subscriptions.get(request.params["sub_id"])
        if sub is None:
            raise self._invalid(f"Subscription {request.params['sub_id']} not found.", code="NOT_FOUND", status=404)
        return sub

    @staticmethod
    def _public(sub: dict, with_key: bool) -> dict:
        # ListWebhookSubscriptionsResponse and UpdateWebhookSubscriptionResponse examples carry no signature_key;
        # Create and Retrieve do.
        return {k: v for k, v in sub.items() if with_key or k != "signature_key"}

    def _check(self, fields: dict, partial: bool) -> None:
        if not partial or "notification_url" in fields:
            url = fields.get("notification_url")
            if not url:
                raise self._invalid("notification_url is required", "subscription.notification_url",
                                    code="MISSING_REQUIRED_PARAMETER")
            refusal = destination_refusal(url)
            if refusal:
                raise self._invalid(refusal, "subscription.notification_url")
        if not partial or "event_types" in fields:
            types = fields.get("event_types")
            if not isinstance(types, list) or not types:
                raise self._invalid("event_types must name at least one event", "subscription.event_types",
                                    code="MISSING_REQUIRED_PARAMETER")
            unknown = [t for t in types if t not in SQUARE_EVENT_TYPES]
            if unknown:
                raise self._invalid(f"unknown event types {unknown}", "subscription.event_types")

    def list_subscriptions(self, request: Request) -> Response:
        with self.lock:
            subs = [self._public(s, False) for s in self.subscriptions.values()]
        if request.arg("include_disabled", "false") != "true":
            subs = [s for s in subs if s["enabled"]]
        return Response(200, {"subscriptions": subs} if subs else {})

    def create_subscription(self, request: Request) -> Response:
        body = request.json() or {}
        fields = body.get("subscription") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            raise self._invalid("subscription is required", "subscription", code="MISSING_REQUIRED_PARAMETER")
        self._check(fields, partial=False)
        with self.lock:
            key = body.get("idempotency_key")
            if key and key in self.idempotency:
                return Response(200, {"subscription": dict(self.subscriptions[self.idempotency[key]])})
            now = _rfc3339_now()
            sub = {"id": f"wbhk_{uuid.uuid4().hex}", "name": fields.get("name"), "enabled": bool(fields.get("enabled", True)),
                   "event_types": list(fields["event_types"]), "notification_url": fields["notification_url"],
                   "api_version": fields.get("api_version") or "2025-08-20",
                   "signature_key": secrets.token_urlsafe(16), "created_at": now, "updated_at": now}
            self.subscriptions[sub["id"]] = sub
            if key:
                self.idempotency[key] = sub["id"]
            return Response(200, {"subscription": dict(sub)})

    def retrieve_subscription(self, request: Request) -> Response:
        with self.lock:
            return Response(200, {"subscription": self._public(self._sub(request), True)})

    def update_subscription(self, request: Request) -> Response:
        fields = (request.json() or {}).get("subscription") or {}
        self._check(fields, partial=True)
        with self.lock:
            sub = self._sub(request)
            sub.update({k: v for k, v in fields.items() if k in ("name", "enabled", "event_types",
                                                                  "notification_url", "api_version")},
                       updated_at=_rfc3339_now())
            return Response(200, {"subscription": self._public(sub, False)})

    def delete_subscription(self, request: Request) -> Response:
        with self.lock:
            del self.subscriptions[self._sub(request)["id"]]
        return Response(200, {})

    def rotate_key(self, request: Request) -> Response:
        with self.lock:
            sub = self._sub(request)
            sub.update(signature_key=secrets.token_urlsafe(16), updated_at=_rfc3339_now())
            return Response(200, {"signature_key": sub["signature_key"]})

    def test_subscription(self, request: Request) -> Response:
        event_type = (request.json() or {}).get("event_type") or "payment.created"
        with self.lock:
            sub = dict(self._sub(request))
        if event_type not in sub["event_types"]:
            raise self._invalid(f"{event_type} is not an event type of this subscription", "event_type")
        self._deliver(sub, self._event(event_type, "test", "test", {}))
        return Response(200, {"subscription_test_result": {"id": str(uuid.uuid4()), "status_code": None,
                                                           "created_at": _rfc3339_now()}})

    # -- events ---------------------------------------------------------------------------------------
    def _event(self, event_type: str, data_type: str, object_id: str, obj: dict) -> dict:
        return {"merchant_id": self.merchant_id, "type": event_type, "event_id": str(uuid.uuid4()),
                "created_at": _rfc3339_now(), "data": {"type": data_type, "id": object_id, "object": obj}}

    def _deliver(self, sub: dict, event: dict) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json",
                   "x-square-hmacsha256-signature": square_signature(sub["signature_key"], sub["notification_url"],
                                                                     body)}
        self.dispatcher.submit(Delivery(sub["id"], sub["notification_url"], body, headers, event["event_id"]))

    def emit(self, event_type: str, data_type: str, object_id: str, obj: dict) -> None:
        event = self._event(event_type, data_type, object_id, obj)
        with self.lock:
            subs = [dict(s) for s in self.subscriptions.values() if s["enabled"] and event_type in s["event_types"]]
        for sub in subs:
            self._deliver(sub, event)

    def _order_event(self, kind: str, order: dict) -> None:
        # OrderCreatedEvent / OrderUpdatedEvent: data.type "order_created", object {"order_created": {...}}.
        summary = {k: order.get(k) for k in ("order_id", "location_id", "state", "version", "created_at")}
        summary["order_id"] = order["id"]
        if kind == "updated":
            summary["updated_at"] = order.get("updated_at")
        self.emit(f"order.{kind}", f"order_{kind}", order["id"], {f"order_{kind}": summary})

    def install_events(self) -> None:
        def payment_added(request: Request, response: Response, _state: Any) -> None:
            body = response.body
            customer = body.get("customer")
            if customer and not (request.json() or {}).get("customer_id"):
                self.emit("customer.created", "customer", customer["id"], {"customer": customer})  # CustomerCreatedEvent
            self._order_event("created", body["order"])
            self.emit("payment.created", "payment", body["payment"]["id"], {"payment": body["payment"]})

        def refunded(request: Request, response: Response, _state: Any) -> None:
            payment = response.body["payment"]
            refund_id = payment["refund_ids"][-1]
            refund = {"id": refund_id, "location_id": payment["location_id"], "payment_id": payment["id"],
                      "order_id": payment.get("order_id"), "status": "PENDING",
                      "amount_money": payment["refunded_money"], "created_at": payment["updated_at"],
                      "updated_at": payment["updated_at"]}
            self.emit("refund.created", "refund", refund_id, {"refund": refund})  # RefundCreatedEvent
            self.emit("payment.updated", "payment", payment["id"], {"payment": payment})
            order = self.app.store.order(payment["order_id"]) if payment.get("order_id") else None  # type: ignore[attr-defined]
            if order:
                self._order_event("updated", order)

        def customer_edited(request: Request, response: Response, _state: Any) -> None:
            customer = response.body["customer"]
            self.emit("customer.updated", "customer", customer["id"], {"customer": customer})  # CustomerUpdatedEvent

        _wrap(self.app, "admin_add_payment", payment_added)
        _wrap(self.app, "admin_refund", refunded)
        _wrap(self.app, "admin_edit_customer", customer_edited)


def install_square(app: SandboxApp, merchant_id: str) -> SquareSubscriptions:
    subs = SquareSubscriptions(app, merchant_id)
    subs.routes()
    subs.install_events()
    subs.dispatcher.install_admin(app)
    app.webhooks = subs  # type: ignore[attr-defined]
    return subs
