"""A local BigCommerce API: the store-scoped v2 orders and v3 customers/catalog/carts endpoints.

``create_app(seed, fixtures_dir, enforce_rate_limit, **sizes)`` builds the app;
``sandbox.core.serve(app)`` serves it. Every store lives under
``/stores/{store_hash}`` and takes the token ``sandbox-bc-token-<store_hash>`` in
``X-Auth-Token``; a wrong or missing token is a 401 (v2 or v3 error shape), an
unknown store hash a 404.

Operations (shapes from the official specs in ../shared/api-specs/bigcommerce):
``GET /v2/orders`` (bare array; page/limit ≤ 250; 204 past the last page;
``min|max_date_modified`` and ``min|max_date_created`` in RFC-2822, ISO-8601 or
epoch seconds; ``min_id``/``max_id``, ``customer_id``, ``status_id``; ``sort`` =
``id|date_created|date_modified[:asc|:desc]``; ``include=consignments.line_items``
with ``consignment_structure=object``), ``GET /v2/orders/{id}`` and its
``/products``, ``/shipping_addresses``, ``/coupons`` (204 when empty),
``GET /v2/order_statuses``; ``GET /v3/customers`` (``date_modified:min|max``,
``date_created:min|max``, ``id:in``, ``email:in``, ``sort``),
``GET /v3/customers/subscribers``, ``GET /v3/catalog/products``
(``date_modified:min|max``, ``id:in``, ``categories``/``categories:in``,
``include=images``), ``GET /v3/catalog/trees/categories`` (flat rows, as the spec
says), ``GET /v3/catalog/trees/{tree_id}/categories`` (nested ``children``),
``GET /v3/carts/{id}`` (the cart behind an Incomplete order, else 404),
``GET /v3/orders/payment_actions/refunds`` (``order_id:in``, ``id:in``, ``created:min|max``, page/limit; by
refund id) and ``GET /v3/orders/{id}/payment_actions/refunds`` (orders.v3.yml).

Rate limits, per store: a fixed window (default 150 requests per 30 s); every
answer carries ``X-Rate-Limit-Requests-Left``, ``-Requests-Quota``,
``-Time-Window-Ms`` and ``-Time-Reset-Ms``; over the quota a 429 whose
``X-Rate-Limit-Time-Reset-Ms`` says how long to wait. With
``enforce_rate_limit=False`` the headers report a quota too large to reach.

Data: generated lazily and deterministically by seed (``sandbox.bigcommerce_data``),
``orders``/``customers``/``products`` per store set by keyword. History spans the
two years before the sandbox's clock started (the current UTC day, or ``now=``).

Fixtures: ``fixtures_dir/<store_hash>/`` (a missing ``fixtures_dir`` means none) replaces that store's generated data with
JSON files in the API's own shapes, each optional (missing = empty):
``orders.json`` (orders as ``GET /v2/orders?include=consignments.line_items&consignment_structure=object``
shows them; products and shipping addresses are read from their consignments),
``coupons.json`` (``/v2/orders/{id}/coupons`` rows, each with its ``order_id``),
``customers.json``, ``subscribers.json``, ``products.json`` (with ``images``),
``categories.json`` (``/v3/catalog/trees/categories`` rows), ``carts.json``, ``refunds.json``
(``/v3/orders/payment_actions/refunds`` rows).

Admin endpoints (never rate-limited, never faulted), besides core's
``/__admin/requests`` and ``/__admin/faults``:

- ``GET  /__admin/bigcommerce/clock`` → ``{"now"}``; ``POST`` it ``{"advance_seconds": n}`` to travel in time.
- ``GET  /__admin/bigcommerce/{hash}/{orders|customers|subscribers|products|categories|coupons|refunds}`` →
  ``{"<name>": [every record exactly as the API shows it]}``; orders take the same ``include`` /
  ``consignment_structure`` parameters as ``/v2/orders``.
- ``POST /__admin/bigcommerce/{hash}/orders`` ``{"count", "customer_id"?, "status_id"?}`` → new orders, all
  created and modified in the same second (now).
- ``PUT  /__admin/bigcommerce/{hash}/orders/{id}`` ``{"status_id"}`` → a status change (bumps ``date_modified``).
- ``POST /__admin/bigcommerce/{hash}/orders/{id}/refunds`` ``{"amount"?: "12.3400"}`` → a new refund record
  (the rest of the total without an amount); status 14, or 4 once the whole total is refunded.
- ``POST /__admin/bigcommerce/{hash}/orders/{id}/archive`` → ``is_deleted: true``, bumping ``date_modified``.
- ``PUT  /__admin/bigcommerce/{hash}/{customers|subscribers|products}/{id}`` ``{fields…}`` → an edit
  (e.g. ``{"consents": []}``), bumping ``date_modified``; with ``"after_pages": n`` it waits until that
  list answered ``n`` more pages (a change between two page reads).
- ``PUT  /__admin/bigcommerce/{hash}/token`` ``{"token"}`` rotates the store's token; ``DELETE`` revokes it.
- ``PUT  /__admin/bigcommerce/{hash}/quota`` ``{"quota", "window_ms"?}`` sets the rate limit (a new window starts).
- ``PUT|DELETE /__admin/bigcommerce/{hash}/poison/{orders|customers|subscribers|products|categories|refunds|``
  ``order_statuses}/{id}`` ``{"field.path": value, …}`` serves that record with values outside the spec (a NUL in
  a name, ``status_id`` 15, ``""`` money, a garbage date), its place in every list unchanged; ``GET
  /__admin/bigcommerce/{hash}/poison`` lists them (``sandbox/poison.py``; issue 15).
"""
from __future__ import annotations

import bisect
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from sandbox.bigcommerce_data import (
    ORDER_STATUSES,
    STATUS_NAMES,
    Collection,
    Entry,
    GeneratedStore,
    OrderFacts,
    Query,
    RefundFacts,
    iso,
    render_cart,
    render_coupons,
    render_line_item,
    render_order,
    render_refund,
    render_shipping_address,
    rfc2822,
)
from sandbox.core import ApiError, FaultPlan, Request, Response, SandboxApp
from sandbox.poison import Poisons
from sandbox.webhooks import install_bigcommerce

DEFAULT_STORES = ("k3x9q2m7a1", "p8w4z6t2n5")
V3_ERROR_TYPE = "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"
UNLIMITED_QUOTA = 1_000_000_000
MAX_LIMIT = 250
POISON_ROUTE = (r"/__admin/bigcommerce/(?P<store>[^/]+)/poison/(?P<kind>orders|customers|subscribers|products"
                r"|categories|refunds|order_statuses)/(?P<record_id>[^/]+)")


def token_for(store_hash: str) -> str:
    return f"sandbox-bc-token-{store_hash}"


# -- errors in the two API generations' shapes ------------------------------------------------------
def v2_error(status: int, message: str) -> Response:
    return Response(status, [{"status": status, "message": message}])


def v3_error(status: int, title: str, errors: dict[str, str] | None = None) -> Response:
    return Response(status, {"status": status, "title": title, "type": V3_ERROR_TYPE, "errors": errors or {}})


def api_error(request: Request, status: int, message: str) -> Response:
    return v3_error(status, message) if "/v3/" in request.path else v2_error(status, message)


# -- parsing query parameters -------------------------------------------------------------------------
def parse_time(value: str) -> int:
    """Epoch seconds from RFC-2822, ISO-8601 (date or date-time) or epoch seconds; ValueError otherwise."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    if "," in value or (value[:3].isalpha() and " " in value):
        parsed = parsedate_to_datetime(value)
    else:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return math.floor(parsed.timestamp())


def _ints(value: str) -> frozenset[int]:
    return frozenset(int(part) for part in value.split(",") if part.strip())


class RateWindow:
    """A per-store fixed window: ``quota`` requests per ``window_ms``."""

    def __init__(self, quota: int, window_ms: int, enforce: bool):
        self.lock = threading.Lock()
        self.set(quota if enforce else UNLIMITED_QUOTA, window_ms)

    def set(self, quota: int, window_ms: int) -> None:
        self.quota, self.window_ms = quota, window_ms
        self.started = -math.inf
        self.used = 0

    def take(self) -> tuple[bool, dict[str, str]]:
        """(allowed, headers) for one request."""
        with self.lock:
            now = time.monotonic()
            if now >= self.started + self.window_ms / 1000:
                self.started, self.used = now, 0
            allowed = self.used < self.quota
            if allowed:
                self.used += 1
            # min(): float rounding must not announce a reset later than the window itself
            reset_ms = min(self.window_ms, max(1, math.ceil((self.started + self.window_ms / 1000 - now) * 1000)))
            return allowed, {"X-Rate-Limit-Requests-Left": str(self.quota - self.used),
                             "X-Rate-Limit-Requests-Quota": str(self.quota),
                             "X-Rate-Limit-Time-Window-Ms": str(self.window_ms),
                             "X-Rate-Limit-Time-Reset-Ms": str(reset_ms)}


class Store:
    """One store: its token, rate window and collections (generated, or from fixtures)."""

    def __init__(self, store_hash: str, rate: RateWindow, generated: GeneratedStore | None):
        self.hash = store_hash
        self.token: str | None = token_for(store_hash)
        self.rate = rate
        self.generated = generated
        self.lock = threading.Lock()  # mutations of the overlays
        g = generated
        self.orders = Collection(g.orders_timeline if g else None, g.base_order if g else _missing,
                                 g.cheap_order_field if g else None)
        self.customers = Collection(g.customers_timeline if g else None, g.customer if g else _missing)
        self.subscribers = Collection(g.subscribers_timeline if g else None, g.subscriber if g else _missing)
        self.products = Collection(None, _missing)
        self.categories: list[dict] = []
        self.fixture_coupons: dict[int, list[dict]] = {}
        self.fixture_carts: dict[str, dict] = {}
        self.fixture_refunds: list[dict] = []
        # Refunds made after the generated history (admin): refund id -> (order id, created), ids counting on.
        self.later_refunds: dict[int, tuple[int, int]] = {}
        # Edits a test asked to happen while a list is being paged: [collection, pages still to serve, id, fields].
        self.pending_edits: list[list] = []
        self.poisons = Poisons()  # records served with values outside the spec (admin, issue 15)
        if g:
            for product in g.products:
                self.products.put(_entry(product))
            self.categories = [_category_row(c) for c in g.categories]

    # -- rendering: generated orders are facts, fixture orders are payloads --------------------------------
    def render_order(self, order: OrderFacts | dict, include: set[str], as_object: bool) -> dict:
        return self.poisons.served("orders", self._render_order(order, include, as_object))

    def _render_order(self, order: OrderFacts | dict, include: set[str], as_object: bool) -> dict:
        with_lines = bool(include & {"consignments", "consignments.line_items"}) and as_object
        if isinstance(order, OrderFacts):
            payload = render_order(self.generated, order, with_lines)
            if with_lines and "consignments.line_items" not in include:
                for consignment in payload["consignments"]["shipping"]:
                    consignment["line_items"] = [{"url": f"https://api.bigcommerce.com/stores/{self.hash}/v2/orders/"
                                                         f"{order.order_id}/products/{line['id']}",
                                                  "resource": f"/orders/{order.order_id}/products/{line['id']}"}
                                                 for line in consignment["line_items"]]
            return payload
        payload = dict(order)
        if not with_lines:
            payload["consignments"] = {"url": f"https://api.bigcommerce.com/stores/{self.hash}/v2/orders/"
                                              f"{order['id']}/consignments", "resource": f"/orders/{order['id']}/consignments"}
        return payload

    def line_items(self, order: OrderFacts | dict) -> list[dict]:
        if isinstance(order, OrderFacts):
            return [render_line_item(order, line, order.order_id) for line in order.lines]
        return [item for kind in (order.get("consignments") or {}).values() if isinstance(kind, list)
                for consignment in kind for item in consignment.get("line_items") or []]

    def shipping_addresses(self, order: OrderFacts | dict) -> list[dict]:
        if isinstance(order, OrderFacts):
            return [render_shipping_address(self.generated, order)]
        return [{**{k: v for k, v in consignment.items() if k != "line_items"}, "order_id": order["id"]}
                for consignment in (order.get("consignments") or {}).get("shipping") or []]

    def coupons(self, order: OrderFacts | dict) -> list[dict]:
        if isinstance(order, OrderFacts):
            return render_coupons(order)
        return self.fixture_coupons.get(int(order["id"]), [])

    def refunds(self, order_ids: frozenset[int] | None = None, refund_ids: frozenset[int] | None = None,
                created_min: int | None = None, created_max: int | None = None) -> list[dict]:
        """Every refund matching the filters, ordered by refund id (orders.v3.yml ``getOrdersRefunds``)."""
        if self.generated is None:
            return [r for r in self.fixture_refunds
                    if (order_ids is None or r["order_id"] in order_ids) and (refund_ids is None or r["id"] in refund_ids)
                    and (created_min is None or parse_time(r["created"]) >= created_min)
                    and (created_max is None or parse_time(r["created"]) <= created_max)]
        t = self.generated.orders_timeline
        base = self.generated.refunded_base_order_ids()
        # A generated refund has the order's id and was made when the order was last generated-modified,
        # so both grow together: a created range is a slice of the sorted ids.
        lo = 0 if created_min is None else bisect.bisect_left(base, created_min, key=t.modified)
        hi = len(base) if created_max is None else bisect.bisect_right(base, created_max, key=t.modified)
        found = [(order_id, order_id) for order_id in base[lo:hi]]
        found += [(refund_id, order_id) for refund_id, (order_id, created) in sorted(self.later_refunds.items())
                  if (created_min is None or created >= created_min) and (created_max is None or created <= created_max)]
        rows = []
        for refund_id, order_id in found:
            if (order_ids is not None and order_id not in order_ids) or (refund_ids is not None
                                                                          and refund_id not in refund_ids):
                continue
            order = self.orders.get(order_id)
            refund = next(r for r in order.refunds if r.refund_id == refund_id)
            rows.append(render_refund(order, refund))
        return rows

    def order_refunds(self, order: OrderFacts | dict) -> list[dict]:
        if isinstance(order, OrderFacts):
            return [render_refund(order, refund) for refund in sorted(order.refunds, key=lambda r: r.refund_id)]
        return [r for r in self.fixture_refunds if r["order_id"] == int(order["id"])]

    def next_refund_id(self) -> int:
        return max([self.generated.first_admin_refund_id - 1, *self.later_refunds]) + 1

    def cart(self, cart_id: str) -> dict | None:
        if cart_id in self.fixture_carts:
            return self.fixture_carts[cart_id]
        try:
            order_id = int(cart_id.replace("-", "")[-12:], 16)
        except ValueError:
            return None
        order = self.orders.get(order_id)
        # Only an abandoned checkout still has its cart; a completed order's cart is gone.
        if isinstance(order, OrderFacts) and order.status_id == 0 and self.generated.cart_id(order_id) == cart_id:
            return render_cart(self.generated, order)
        return None

    # -- fixtures -------------------------------------------------------------------------------------
    def load_fixtures(self, folder: Path) -> None:
        def read(name: str) -> list[dict]:
            path = folder / name
            records = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
            if not isinstance(records, list):
                raise ValueError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
            return records

        for name, collection in (("orders.json", self.orders), ("customers.json", self.customers),
                                 ("subscribers.json", self.subscribers), ("products.json", self.products)):
            for position, record in enumerate(read(name)):
                try:
                    collection.put(_entry(record))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{folder / name}: record {position} needs an integer id and valid "
                                     f"date_modified/date_created ({type(exc).__name__}: {exc})") from None
        self.categories = read("categories.json")
        for coupon in read("coupons.json"):
            self.fixture_coupons.setdefault(int(coupon["order_id"]), []).append(coupon)
        self.fixture_carts = {cart["id"]: cart for cart in read("carts.json")}
        self.fixture_refunds = sorted(read("refunds.json"), key=lambda refund: refund["id"])


def _missing(record_id: int) -> None:
    return None


def _entry(record: dict) -> Entry:
    """An overlay entry for a payload in the API's shape (its dates are RFC-2822 or ISO-8601)."""
    modified = parse_time(record["date_modified"])
    return Entry(int(record["id"]), record, modified, parse_time(record.get("date_created") or record["date_modified"]))


def _category_row(category: dict) -> dict:
    return {"category_id": category["id"], "parent_id": category["parent_id"], "tree_id": 1, "name": category["name"],
            "description": "", "views": 0, "sort_order": 0, "page_title": "", "meta_keywords": [],
            "meta_description": "", "layout_file": "category.html", "image_url": "", "is_visible": True,
            "search_keywords": "", "default_product_sort": "use_store_settings",
            "url": {"path": f"/{category['name'].lower().replace(' ', '-')}/", "is_customized": False}}


class BigCommerceApp(SandboxApp):
    name = "bigcommerce"

    def __init__(self, stores: dict[str, Store], started_at: int, faults: FaultPlan | None = None):
        super().__init__(faults)
        self.stores = stores
        self.clock_lock = threading.Lock()
        self.clock_offset = started_at - time.time()
        store = r"/stores/(?P<store>[^/]+)"
        routes: list[tuple[str, str, Callable[[Request], Response]]] = [
            ("GET", f"{store}/v2/orders", self.list_orders),
            ("GET", rf"{store}/v2/orders/(?P<order_id>\d+)", self.get_order),
            ("GET", rf"{store}/v2/orders/(?P<order_id>\d+)/products", self.order_products),
            ("GET", rf"{store}/v2/orders/(?P<order_id>\d+)/shipping_addresses", self.order_shipping_addresses),
            ("GET", rf"{store}/v2/orders/(?P<order_id>\d+)/coupons", self.order_coupons),
            ("GET", f"{store}/v2/order_statuses", self.order_statuses),
            ("GET", f"{store}/v3/customers", self.list_customers),
            ("GET", f"{store}/v3/customers/subscribers", self.list_subscribers),
            ("GET", f"{store}/v3/catalog/products", self.list_products),
            ("GET", f"{store}/v3/catalog/trees/categories", self.list_categories),
            ("GET", rf"{store}/v3/catalog/trees/(?P<tree_id>\d+)/categories", self.category_tree),
            ("GET", f"{store}/v3/carts/(?P<cart_id>[^/]+)", self.get_cart),
            ("GET", f"{store}/v3/orders/payment_actions/refunds", self.list_refunds),
            ("GET", rf"{store}/v3/orders/(?P<order_id>\d+)/payment_actions/refunds", self.order_refunds),
            ("GET", r"/__admin/bigcommerce/clock", self.admin_clock),
            ("POST", r"/__admin/bigcommerce/clock", self.admin_advance_clock),
            ("GET", r"/__admin/bigcommerce/(?P<store>[^/]+)/(?P<collection>orders|customers|subscribers|products"
                    r"|categories|coupons|refunds)", self.admin_dump),
            ("POST", r"/__admin/bigcommerce/(?P<store>[^/]+)/orders", self.admin_add_orders),
            ("PUT", r"/__admin/bigcommerce/(?P<store>[^/]+)/orders/(?P<order_id>\d+)", self.admin_set_status),
            ("POST", r"/__admin/bigcommerce/(?P<store>[^/]+)/orders/(?P<order_id>\d+)/refunds", self.admin_refund),
            ("POST", r"/__admin/bigcommerce/(?P<store>[^/]+)/orders/(?P<order_id>\d+)/archive", self.admin_archive),
            ("PUT", r"/__admin/bigcommerce/(?P<store>[^/]+)/(?P<collection>customers|subscribers|products)"
                    r"/(?P<record_id>\d+)", self.admin_edit),
            ("PUT", r"/__admin/bigcommerce/(?P<store>[^/]+)/token", self.admin_set_token),
            ("DELETE", r"/__admin/bigcommerce/(?P<store>[^/]+)/token", self.admin_revoke_token),
            ("PUT", r"/__admin/bigcommerce/(?P<store>[^/]+)/quota", self.admin_set_quota),
            ("GET", r"/__admin/bigcommerce/(?P<store>[^/]+)/poison", self.admin_poisons),
            ("PUT", POISON_ROUTE, self.admin_poison),
            ("DELETE", POISON_ROUTE, self.admin_poison),
        ]
        for method, pattern, handler in routes:
            self.add_route(method, pattern, handler)

    # -- clock ------------------------------------------------------------------------------------------
    def now(self) -> int:
        with self.clock_lock:
            return math.floor(time.time() + self.clock_offset)

    # -- core hooks -----------------------------------------------------------------------------------
    def _store_of(self, request: Request) -> Store | None:
        parts = request.path.split("/")
        return self.stores.get(parts[2]) if len(parts) > 2 and parts[1] == "stores" else None

    def authenticate(self, request: Request) -> Response | None:
        store = self._store_of(request)
        if store is None:
            return api_error(request, 404, "The requested store was not found.")
        if store.token is None or request.headers.get("x-auth-token") != store.token:
            return api_error(request, 401, "You are not authorized to access this resource: missing, invalid "
                                           "or revoked X-Auth-Token.")
        return None

    def rate_limit(self, request: Request) -> tuple[Response | None, dict[str, str]]:
        store = self._store_of(request)
        allowed, headers = store.rate.take()
        if allowed:
            return None, headers
        return api_error(request, 429, f"Too many requests: the quota of {store.rate.quota} requests per "
                                       f"{store.rate.window_ms} ms is used up; retry in "
                                       f"{headers['X-Rate-Limit-Time-Reset-Ms']} ms."), headers

    def fault_response(self, kind: str, request: Request) -> Response:
        if kind == "429":
            response = api_error(request, 429, "Too many requests.")
            response.headers.update({"X-Rate-Limit-Requests-Left": "0", "X-Rate-Limit-Time-Reset-Ms": "500"})
            return response
        return api_error(request, 503, "Service Unavailable")

    def not_found_response(self, request: Request) -> Response:
        return api_error(request, 404, "The requested resource was not found.")

    # -- helpers --------------------------------------------------------------------------------------
    def _store(self, request: Request) -> Store:
        store = self.stores.get(request.params["store"])
        if store is None:
            raise ApiError(Response(404, {"error": f"no store {request.params['store']!r}"}))
        return store

    @staticmethod
    def _paging(request: Request, default_limit: int) -> tuple[int, int]:
        try:
            page = max(1, int(request.arg("page") or 1))
            limit = min(MAX_LIMIT, max(1, int(float(request.arg("limit") or default_limit))))
        except ValueError:
            raise ApiError(api_error(request, 400 if "/v2/" in request.path else 422,
                                     "page and limit must be whole numbers")) from None
        return page, limit

    @staticmethod
    def _time_arg(request: Request, name: str) -> int | None:
        value = request.arg(name)
        if value in (None, ""):
            return None
        try:
            return parse_time(value)
        except (ValueError, TypeError):
            raise ApiError(api_error(request, 400 if "/v2/" in request.path else 422,
                                     f"The field '{name}' is invalid: {value!r} is not a date.")) from None

    @staticmethod
    def _int_set(request: Request, name: str) -> frozenset[int] | None:
        value = request.arg(name)
        if value in (None, ""):
            return None
        try:
            return _ints(value)
        except ValueError:
            raise ApiError(api_error(request, 400 if "/v2/" in request.path else 422,
                                     f"The field '{name}' is invalid: {value!r}.")) from None

    @staticmethod
    def _sort(request: Request, allowed: tuple[str, ...], default: str = "id") -> tuple[str, bool]:
        value = request.arg("sort") or default
        field, _, direction = value.partition(":")
        direction = direction or request.arg("direction") or "asc"
        if field not in allowed or direction not in ("asc", "desc"):
            raise ApiError(api_error(request, 400 if "/v2/" in request.path else 422,
                                     f"The field 'sort' is invalid: {value!r} (one of {', '.join(allowed)}"
                                     " with :asc or :desc)."))
        return field, direction == "desc"

    def _v3_page(self, request: Request, store: Store, name: str, query: Query,
                 render: Callable[[Any], dict] = lambda record: record) -> Response:
        page, limit = self._paging(request, 50)
        collection: Collection = getattr(store, name)
        with store.lock:
            total, records = collection.query(query, (page - 1) * limit, limit)
            self._apply_due_edits(store, name)
        return Response(200, {"data": [store.poisons.served(name, render(r)) for r in records],
                              "meta": _pagination(total, len(records), page, limit)})

    def _apply_due_edits(self, store: Store, name: str) -> None:
        """Edits asked for ``after_pages``: applied once that many pages of the list were answered, i.e. between
        two page reads — the "paging under change" case (../shared/api-specs/README.md)."""
        for edit in list(store.pending_edits):
            if edit[0] == name:
                edit[1] -= 1
                if edit[1] <= 0:
                    store.pending_edits.remove(edit)
                    self._edit(store, name, edit[2], edit[3])

    # -- v2 orders --------------------------------------------------------------------------------------
    def _orders_query(self, request: Request) -> Query:
        equals = []
        for name in ("customer_id", "status_id"):
            values = self._int_set(request, name)
            if values is not None:
                equals.append((name, values))
        id_min, id_max = self._int_set(request, "min_id"), self._int_set(request, "max_id")
        sort, descending = self._sort(request, ("id", "date_created", "date_modified"))
        return Query(modified_min=self._time_arg(request, "min_date_modified"),
                     modified_max=self._time_arg(request, "max_date_modified"),
                     created_min=self._time_arg(request, "min_date_created"),
                     created_max=self._time_arg(request, "max_date_created"),
                     id_min=min(id_min) if id_min else None, id_max=max(id_max) if id_max else None,
                     equals=tuple(equals), sort=sort, descending=descending)

    @staticmethod
    def _includes(request: Request) -> tuple[set[str], bool]:
        include = {part.strip() for value in request.query.get("include", []) for part in value.split(",")}
        return include, request.arg("consignment_structure") == "object"

    def list_orders(self, request: Request) -> Response:
        store = self._store(request)
        query = self._orders_query(request)
        page, limit = self._paging(request, 50)
        include, as_object = self._includes(request)
        _, orders = store.orders.query(query, (page - 1) * limit, limit)
        if not orders:
            return Response(204)
        return Response(200, [store.render_order(order, include, as_object) for order in orders])

    def _order(self, request: Request) -> tuple[Store, OrderFacts | dict]:
        store = self._store(request)
        order = store.orders.get(int(request.params["order_id"]))
        if order is None:
            raise ApiError(v2_error(404, "The requested resource was not found."))
        return store, order

    def get_order(self, request: Request) -> Response:
        store, order = self._order(request)
        include, as_object = self._includes(request)
        return Response(200, store.render_order(order, include, as_object))

    def _order_rows(self, request: Request, rows: Callable[[Store, Any], list[dict]]) -> Response:
        store, order = self._order(request)
        page, limit = self._paging(request, 50)
        found = rows(store, order)[(page - 1) * limit:page * limit]
        return Response(200, found) if found else Response(204)

    def order_products(self, request: Request) -> Response:
        return self._order_rows(request, Store.line_items)

    def order_shipping_addresses(self, request: Request) -> Response:
        return self._order_rows(request, Store.shipping_addresses)

    def order_coupons(self, request: Request) -> Response:
        return self._order_rows(request, Store.coupons)

    def order_statuses(self, request: Request) -> Response:
        store = self._store(request)
        page, limit = self._paging(request, 50)
        rows = [store.poisons.served("order_statuses", {"id": status_id, "name": name, "system_label": name,
                                                        "custom_label": name, "system_description": description})
                for status_id, name, description in ORDER_STATUSES][(page - 1) * limit:page * limit]
        return Response(200, rows) if rows else Response(204)

    # -- v3 ---------------------------------------------------------------------------------------------
    def _v3_query(self, request: Request, sorts: tuple[str, ...], **extra: Any) -> Query:
        equals = list(extra.pop("equals", ()))
        ids = self._int_set(request, "id:in") or self._int_set(request, "id")
        if ids is not None:
            equals.append(("id", ids))
        sort, descending = self._sort(request, sorts)
        return Query(modified_min=self._time_arg(request, "date_modified:min"),
                     modified_max=self._time_arg(request, "date_modified:max"),
                     created_min=self._time_arg(request, "date_created:min"),
                     created_max=self._time_arg(request, "date_created:max"),
                     equals=tuple(equals), sort=sort, descending=descending, **extra)

    @staticmethod
    def _emails(value: str | None) -> tuple[tuple[str, frozenset], ...]:
        if not value:
            return ()
        return (("email", frozenset(part.strip().lower() for part in value.split(","))),)

    def list_customers(self, request: Request) -> Response:
        store = self._store(request)
        query = self._v3_query(request, ("id", "date_created", "date_modified"),
                               equals=self._emails(request.arg("email:in")))
        return self._v3_page(request, store, "customers", query)

    def list_subscribers(self, request: Request) -> Response:
        store = self._store(request)
        query = self._v3_query(request, ("id", "date_created", "date_modified"),
                               equals=self._emails(request.arg("email")))
        return self._v3_page(request, store, "subscribers", query)

    def list_products(self, request: Request) -> Response:
        store = self._store(request)
        categories = self._int_set(request, "categories:in") or self._int_set(request, "categories")
        query = self._v3_query(request, ("id", "date_modified"),
                               contains=(("categories", categories),) if categories else ())
        include, _ = self._includes(request)
        if "images" in include:
            return self._v3_page(request, store, "products", query)
        return self._v3_page(request, store, "products", query,
                             lambda product: {k: v for k, v in product.items() if k != "images"})

    def list_categories(self, request: Request) -> Response:
        store = self._store(request)
        page, limit = self._paging(request, 50)
        rows = store.categories
        for name, field in (("category_id:in", "category_id"), ("parent_id:in", "parent_id"), ("tree_id:in", "tree_id")):
            wanted = self._int_set(request, name)
            if wanted is not None:
                rows = [row for row in rows if row.get(field) in wanted]
        found = [store.poisons.served("categories", row, row.get("category_id"))
                 for row in rows[(page - 1) * limit:page * limit]]
        return Response(200, {"data": found, "meta": _pagination(len(rows), len(found), page, limit)})

    def category_tree(self, request: Request) -> Response:
        store = self._store(request)
        tree_id = int(request.params["tree_id"])
        rows = [row for row in store.categories if row.get("tree_id", 1) == tree_id]
        if not rows:
            raise ApiError(v3_error(404, f"Category tree {tree_id} was not found."))

        def node(row: dict, path: list[int]) -> dict:
            return {"id": row["category_id"], "parent_id": row["parent_id"], "depth": len(path) + 1,
                    "path": path, "name": row["name"], "is_visible": row.get("is_visible", True),
                    "url": (row.get("url") or {}).get("path") or "/",
                    "children": [node(child, [*path, row["category_id"]]) for child in rows
                                 if child["parent_id"] == row["category_id"]]}

        return Response(200, {"data": [node(row, []) for row in rows if not row["parent_id"]], "meta": {}})

    def list_refunds(self, request: Request) -> Response:
        """orders.v3.yml ``getOrdersRefunds``: ``order_id:in``, ``id:in``, ``created:min|max`` (inclusive),
        ``page``/``limit``; ordered by refund id. The spec leaves ``meta`` open (``metaEmpty_Full``); it carries
        the v3 ``pagination`` block like every other v3 list."""
        store = self._store(request)
        page, limit = self._paging(request, 50)
        rows = store.refunds(self._int_set(request, "order_id:in"), self._int_set(request, "id:in"),
                             self._time_arg(request, "created:min"), self._time_arg(request, "created:max"))
        found = [store.poisons.served("refunds", row) for row in rows[(page - 1) * limit:page * limit]]
        return Response(200, {"data": found, "meta": _pagination(len(rows), len(found), page, limit)})

    def order_refunds(self, request: Request) -> Response:
        """orders.v3.yml ``getOrderRefunds``: the order's refunds by refund id; an unknown order is a 404."""
        store = self._store(request)
        order = store.orders.get(int(request.params["order_id"]))
        if order is None:
            raise ApiError(v3_error(404, "The requested order was not found."))
        return Response(200, {"data": store.order_refunds(order), "meta": {}})

    def get_cart(self, request: Request) -> Response:
        cart = self._store(request).cart(request.params["cart_id"])
        if cart is None:
            raise ApiError(v3_error(404, "Cart not found."))
        return Response(200, {"data": cart, "meta": {}})

    # -- admin ----------------------------------------------------------------------------------------
    def admin_clock(self, request: Request) -> Response:
        return Response(200, {"now": iso(self.now())})

    def admin_advance_clock(self, request: Request) -> Response:
        seconds = float((request.json() or {}).get("advance_seconds", 0))
        if seconds < 0:
            raise ApiError(Response(400, {"error": "the clock only moves forward"}))
        with self.clock_lock:
            self.clock_offset += seconds
        return self.admin_clock(request)

    def admin_dump(self, request: Request) -> Response:
        store, name = self._store(request), request.params["collection"]
        if name == "orders":
            include, as_object = self._includes(request)
            rows = [store.render_order(order, include, as_object) for order in store.orders.all()]
        elif name == "coupons":
            rows = [coupon for order in store.orders.all() for coupon in store.coupons(order)]
        elif name == "refunds":
            rows = [store.poisons.served("refunds", row) for row in store.refunds()]
        elif name == "categories":
            rows = store.categories
        else:
            rows = [store.poisons.served(name, row) for row in getattr(store, name).all()]
        return Response(200, {name: rows})

    def admin_add_orders(self, request: Request) -> Response:
        store, body = self._store(request), request.json() or {}
        if store.generated is None:
            raise ApiError(Response(400, {"error": "new orders need a generated store, not a fixture store"}))
        status_id = int(body.get("status_id", 11))
        if status_id not in STATUS_NAMES:
            raise ApiError(Response(400, {"error": f"unknown status_id {status_id}"}))
        created = []
        with store.lock:
            now = self.now()  # one batch, one second (like an import): many orders share a date_modified
            for _ in range(int(body.get("count", 1))):
                order_id = store.orders.next_id()
                customer_id = int(body["customer_id"]) if "customer_id" in body \
                    else store.generated.order_customer_id(order_id)
                facts = store.generated.order_facts(order_id, now, now, status_id, customer_id)
                if status_id in (4, 14):  # created refunded: with the refund that made it so
                    facts = _refunded(store, facts, None if status_id == 4 else facts.total_inc_cents // 2, now)
                store.orders.put(Entry(order_id, facts, now, now))
                created.append(store.render_order(facts, {"consignments.line_items"}, True))
        return Response(201, {"orders": created})

    def _change_order(self, request: Request, change: Callable[[OrderFacts | dict, int], OrderFacts | dict]) -> Response:
        store = self._store(request)
        order_id = int(request.params["order_id"])
        with store.lock:
            order = store.orders.get(order_id)
            if order is None:
                raise ApiError(Response(404, {"error": f"no order {order_id}"}))
            now = self.now()
            changed = change(order, now)
            created = changed.created if isinstance(changed, OrderFacts) else parse_time(changed["date_created"])
            store.orders.put(Entry(order_id, changed, now, created))
        return Response(200, store.render_order(changed, {"consignments.line_items"}, True))

    def admin_set_status(self, request: Request) -> Response:
        status_id = int((request.json() or {}).get("status_id", -1))
        if status_id not in STATUS_NAMES:
            raise ApiError(Response(400, {"error": f"unknown status_id {status_id}"}))

        def change(order: OrderFacts | dict, now: int) -> OrderFacts | dict:
            if isinstance(order, OrderFacts):
                return replace(order, status_id=status_id, modified=now)
            return {**order, "status_id": status_id, "status": STATUS_NAMES[status_id], "date_modified": rfc2822(now)}

        return self._change_order(request, change)

    def admin_refund(self, request: Request) -> Response:
        amount = (request.json() or {}).get("amount")
        try:
            cents = None if amount is None else int(Decimal(str(amount)) * 100)
        except InvalidOperation:
            raise ApiError(Response(400, {"error": f"amount {amount!r} is not a decimal"})) from None

        store = self._store(request)

        def change(order: OrderFacts | dict, now: int) -> OrderFacts:
            if not isinstance(order, OrderFacts):
                raise ApiError(Response(400, {"error": "refunds need a generated order"}))
            if order.refunded >= order.total_inc_cents:
                raise ApiError(Response(400, {"error": f"order {order.order_id} is refunded in full already"}))
            return _refunded(store, order, cents, now)

        return self._change_order(request, change)

    def admin_archive(self, request: Request) -> Response:
        """Archive an order (``is_deleted: true``, as a v2 ``PUT {"is_deleted": true}`` or ``DELETE`` does; the
        store sends ``store/order/archived``): still listed, ``date_modified`` bumped."""
        def change(order: OrderFacts | dict, now: int) -> OrderFacts | dict:
            if isinstance(order, OrderFacts):
                return replace(order, archived=True, modified=now)
            return {**order, "is_deleted": True, "date_modified": rfc2822(now)}

        return self._change_order(request, change)

    def admin_edit(self, request: Request) -> Response:
        """An edit now, or — with ``after_pages: n`` — right after the store answered the next ``n`` pages of
        that list (so a test can change a record between page 1 and page 2 of a read)."""
        store, name = self._store(request), request.params["collection"]
        record_id, body = int(request.params["record_id"]), dict(request.json() or {})
        after_pages = int(body.pop("after_pages", 0))
        with store.lock:
            if getattr(store, name).get(record_id) is None:
                raise ApiError(Response(404, {"error": f"no {name} {record_id}"}))
            if after_pages > 0:
                store.pending_edits.append([name, after_pages, record_id, body])
                return Response(202, {"pending": {"id": record_id, "after_pages": after_pages, "fields": body}})
            return Response(200, self._edit(store, name, record_id, body))

    def _edit(self, store: Store, name: str, record_id: int, fields: dict) -> dict:
        """Apply an edit (the caller holds ``store.lock``): the record moves to the end of a date_modified list."""
        collection: Collection = getattr(store, name)
        record = collection.get(record_id)
        now = self.now()
        edited = {**record, **fields, "id": record_id, "date_modified": iso(now)}
        collection.put(Entry(record_id, edited, now, parse_time(record.get("date_created") or record["date_modified"])))
        return edited

    def admin_set_token(self, request: Request) -> Response:
        store, token = self._store(request), (request.json() or {}).get("token")
        if not token:
            raise ApiError(Response(400, {"error": "give the new token as {\"token\": …}"}))
        store.token = token
        return Response(200, {"store_hash": store.hash, "token_set": True})

    def admin_revoke_token(self, request: Request) -> Response:
        self._store(request).token = None
        return Response(204)

    def admin_poisons(self, request: Request) -> Response:
        return Response(200, {"poisons": self._store(request).poisons.listed()})

    def admin_poison(self, request: Request) -> Response:
        """Serve one record with values outside the spec (``sandbox/poison.py``), or (``DELETE``) as the spec says."""
        return self._store(request).poisons.admin(request, lambda message: ApiError(Response(400, {"error": message})))

    def admin_set_quota(self, request: Request) -> Response:
        store, body = self._store(request), request.json() or {}
        with store.rate.lock:
            store.rate.set(int(body["quota"]), int(body.get("window_ms", store.rate.window_ms)))
        return Response(200, {"quota": store.rate.quota, "window_ms": store.rate.window_ms})


def _refunded(store: Store, order: OrderFacts, cents: int | None, now: int) -> OrderFacts:
    """``order`` with one more refund, made ``now``: ``cents`` (None: the rest of the total); status 4 once the
    whole total is given back, else 14 (the statuses say that a refund exists, the refund says how much)."""
    left = order.total_inc_cents - order.refunded
    amount = left if cents is None else max(0, min(cents, left))
    refund_id = store.next_refund_id()
    store.later_refunds[refund_id] = (order.order_id, now)
    full = amount >= left and not order.refunds
    refunds = (*order.refunds, RefundFacts(refund_id, now, amount, full=full))
    status_id = 4 if order.refunded + amount >= order.total_inc_cents else 14
    return replace(order, status_id=status_id, refunds=refunds, modified=now)


def _pagination(total: int, count: int, page: int, limit: int) -> dict:
    total_pages = math.ceil(total / limit)
    links = {"current": f"?page={page}&limit={limit}"}
    if page > 1:
        links["previous"] = f"?page={page - 1}&limit={limit}"
    if page < total_pages:
        links["next"] = f"?page={page + 1}&limit={limit}"
    return {"pagination": {"total": total, "count": count, "per_page": limit, "current_page": page,
                           "total_pages": total_pages, "links": links}}


def create_app(seed: int = 42, fixtures_dir: Path | None = None, enforce_rate_limit: bool = True, *,
               stores: tuple[str, ...] = DEFAULT_STORES, orders: int = 120, customers: int = 40, products: int = 24,
               quota: int = 150, window_ms: int = 30_000, now: datetime | None = None,
               faults: FaultPlan | None = None) -> BigCommerceApp:
    """The BigCommerce sandbox. ``orders``/``customers``/``products`` are per store; ``quota`` requests per
    ``window_ms`` per store when ``enforce_rate_limit``; ``now`` starts the sandbox clock (default: the wall clock)."""
    started_at = math.floor((now or datetime.now(UTC)).timestamp())
    # History ends an hour before the clock's day began, so a seed gives the same data all day long.
    history_end = started_at - started_at % 86400 - 3600
    # A missing fixtures folder means no fixtures (``python -m sandbox --fixtures`` may hold only other APIs').
    fixture_stores = sorted(p.name for p in Path(fixtures_dir).iterdir() if p.is_dir()) \
        if fixtures_dir and Path(fixtures_dir).is_dir() else []
    built: dict[str, Store] = {}
    for store_no, store_hash in enumerate(dict.fromkeys([*stores, *fixture_stores])):
        rate = RateWindow(quota, window_ms, enforce_rate_limit)
        if store_hash in fixture_stores:
            store = Store(store_hash, rate, None)
            store.load_fixtures(Path(fixtures_dir) / store_hash)
        else:
            store = Store(store_hash, rate, GeneratedStore(seed, store_no, store_hash, orders, customers, products,
                                                           history_end))
        built[store_hash] = store
    app = BigCommerceApp(built, started_at, faults)
    install_bigcommerce(app)  # /v3/hooks and the admin mutations' webhook deliveries (sandbox/webhooks.py)
    return app
