"""ActiveCampaign API v3 sandbox: a stateful, inspectable CRM account.

Serves the operations the pipeline uses under ``/api/3/`` (connections,
ecomCustomers, ecomOrders with their products, contact/sync, contacts, tags,
contactTags, lists, contactLists, import/bulk_import, import/info) with the real
API's quirks: ids and most numbers as strings on reads, amounts as integers in
create/update answers, ``meta.total`` as a string, 422
``{"errors": [{title, detail, code, source.pointer}]}`` on bad input, 404
``{"message": "No Result found for <Type> with id <id>"}``, and no idempotency
key (a second POST of the same order creates a second object).

Auth: header ``Api-Token: sandbox-ac-token``; anything else is a 401
``{"message": "No Result found for Subscriber with id 0"}``.

Rate limit: ``requests_per_second`` (5) per account in a sliding one-second
window, no burst; over it a 429 with ``Retry-After`` (whole seconds).

Automations (source: /work/shared/api-specs/README.md, ActiveCampaign, "Automations start on
more than orders"; the ``source`` field of ``POST|PUT /api/3/ecomOrders`` in the same section):

- ``tag_added``: a tag is newly added to a contact — ``POST contactTags`` or a bulk-import
  contact's ``tags`` (re-adding a tag the contact has starts nothing: no tag is added);
- ``subscribed_to_list``: a contact's status on a list becomes 1 (subscribed) — ``POST
  contactLists`` or a bulk-import contact's ``subscribe``;
- a bulk import starts both unless ``exclude_automations`` is true — per contact, as the
  official request example of ``/import/bulk_import`` puts it
  (ac-v3-ecom-contacts-subset.openapi.json, ``contacts[].exclude_automations``), or for the
  whole request (the guide's wording); ``contact/sync``, ``contactTags`` and ``contactLists``
  have no such switch;
- ``makes_a_purchase`` / ``abandoned_cart``: an ecomOrder with ``source`` 1 (order / cart) on
  create **and on update** — whether a PUT with ``source`` 1 fires again is undocumented, so
  the sandbox takes the inconvenient reading: it fires every time.

Bulk imports are processed asynchronously but deterministically: a batch is
applied once ``import_completes_after_requests`` further API requests (any) have
arrived, so an immediate ``import/info`` poll sees ``queued`` and a later one
``completed``.

Admin endpoints (never rate-limited, never faulted), under ``/__admin/activecampaign/``:

- ``GET state``: every stored object in the API's read shape (``ecomOrders`` carry
  their ``orderProducts`` and ``orderDiscounts`` as objects, not ids).
- ``GET writes[?since=seq]``: every successful write with its payload, the first
  automation it started (``automation``: a trigger name or null) and all of them
  (``automations``: ``[{trigger, object_type, object_id}]``; a bulk import's are added
  when the batch is processed).
- ``GET automations[?since=seq]``: the automation log — every automation a write started,
  ``{seq, write_seq, trigger, object_type, object_id, contact, key}`` — and ``counts`` per trigger.
- ``GET duplicates``: per object type, how many objects repeat a natural key.
- ``POST reset``: forget everything (the master list is recreated per the options).
- ``PUT master-list`` ``{"name": ...}`` renames (or recreates) the master list;
  ``DELETE master-list`` deletes it with its memberships.
- ``PUT rate-limit`` ``{"requests_per_second": n, "enforce": bool}``.
- ``PUT rejected-emails`` ``{"emails": [...]}``: these emails answer 422
  ``email_invalid`` wherever an email is written (and fail in bulk imports).
"""
from __future__ import annotations

import collections
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sandbox.core import ApiError, FaultPlan, Request, Response, SandboxApp

TOKEN = "sandbox-ac-token"
API = "/api/3"
ADMIN = "/__admin/activecampaign"
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
BULK_IMPORT_MAX_CONTACTS = 250
BULK_IMPORT_MAX_BYTES = 400 * 1024
DEFAULT_MASTER_LIST_NAME = "Master Contact List"
# Server-side arrival times jitter against a client's send times; a client pacing
# at exactly the limit must not be refused for a few milliseconds of scheduling.
ARRIVAL_JITTER_S = 0.025

EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")

# The real API answers create and update with these amounts as JSON integers, reads with strings.
ORDER_INT_FIELDS_ON_CREATE = ("totalPrice", "shippingAmount", "taxAmount", "discountAmount", "totalProducts", "state")
ORDER_INT_FIELDS_ON_UPDATE = ("totalPrice", "shippingAmount", "taxAmount", "discountAmount", "totalProducts")
ORDER_AMOUNT_FIELDS = ("totalPrice", "shippingAmount", "taxAmount", "discountAmount")
ORDER_TEXT_FIELDS = ("orderUrl", "shippingMethod", "orderNumber", "externalUpdatedDate")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- errors in the API's own shapes ------------------------------------------------

def unprocessable(code: str, title: str, pointer: str, detail: str = "") -> ApiError:
    return ApiError(Response(422, {"errors": [
        {"title": title, "detail": detail, "code": code, "source": {"pointer": f"/data/attributes/{pointer}"}}]}))


def field_missing(field: str) -> ApiError:
    return unprocessable("field_missing", f"The {field} field is required.", field,
                         f"Required field '{field}' is missing or empty")


def field_invalid(field: str, detail: str) -> ApiError:
    return unprocessable("field_invalid", f"The {field} field is invalid.", field, detail)


def email_invalid(email: Any) -> ApiError:
    return unprocessable("email_invalid", "Email address is not valid", "email",
                         f"'{email}' is not a valid email address")


def not_found(kind: str, object_id: Any) -> ApiError:
    return ApiError(Response(404, {"message": f"No Result found for {kind} with id {object_id}"}))


# -- input coercion ----------------------------------------------------------------

def root_object(request: Request, root: str) -> dict:
    body = request.json()
    if not isinstance(body, dict) or not isinstance(body.get(root), dict):
        raise field_missing(root)
    return body[root]


def present(payload: dict, field: str) -> bool:
    return payload.get(field) not in (None, "")


def require(payload: dict, fields: Iterable[str], may_be_empty: Iterable[str] = ()) -> None:
    missing = [f for f in fields if not present(payload, f) and not (f in may_be_empty and payload.get(f) == "")]
    if missing:
        raise ApiError(Response(422, {"errors": [field_missing(f).response.body["errors"][0] for f in missing]}))


def as_id(value: Any, field: str) -> int:
    """An id sent as a JSON integer or a numeric string, like the real API accepts."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise field_invalid(field, f"'{value}' is not an id")
    return int(value)


def as_cents(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_invalid(field, f"{field} must be an integer amount in cents, got {value!r}")
    if value < 0:
        raise field_invalid(field, f"{field} must not be negative, got {value}")
    return value


def as_flag(value: Any, field: str) -> int:
    """0/1 sent as an integer, a string or a boolean."""
    if value in (0, 1, "0", "1", True, False):
        return int(value)
    raise field_invalid(field, f"{field} must be 0 or 1, got {value!r}")


def as_date(value: Any, field: str) -> str:
    try:
        datetime.fromisoformat(str(value))
    except ValueError:
        raise field_invalid(field, f"'{value}' is not an ISO-8601 date") from None
    return str(value)


def as_text(value: Any, field: str) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise field_invalid(field, f"{field} must be a string, got {value!r}")
    return str(value)


class SlidingWindowLimiter:
    """At most ``per_second`` accepted requests in any one-second window; refusals do not count."""

    def __init__(self, per_second: int, enforce: bool):
        self.lock = threading.Lock()
        self.accepted: collections.deque[float] = collections.deque()
        self.configure(per_second, enforce)

    def configure(self, per_second: int, enforce: bool) -> None:
        if per_second < 1:
            raise ValueError(f"requests_per_second must be at least 1, got {per_second}")
        with self.lock:
            self.per_second, self.enforce = per_second, enforce
            self.accepted.clear()

    def admit(self) -> int | None:
        """None when admitted, else the whole seconds to wait (``Retry-After``)."""
        with self.lock:
            now = time.monotonic()
            window = 1.0 - ARRIVAL_JITTER_S
            while self.accepted and now - self.accepted[0] >= window:
                self.accepted.popleft()
            if self.enforce and len(self.accepted) >= self.per_second:
                return max(1, math.ceil(self.accepted[0] + window - now))
            self.accepted.append(now)
            return None


class Account:
    """Every stored object of one CRM account; guarded by the app's lock."""

    TABLES = ("connections", "ecomCustomers", "ecomOrders", "ecomOrderProducts", "ecomOrderDiscounts",
              "contacts", "tags", "contactTags", "lists", "contactLists")

    def __init__(self) -> None:
        self.tables: dict[str, dict[int, dict]] = {name: {} for name in self.TABLES}
        self.next_ids = dict.fromkeys(self.TABLES, 1)
        self.imports: dict[str, dict] = {}
        self.writes: list[dict] = []
        self.automations: list[dict] = []
        # Contacts are unique by email (delete_contact drops a deleted one), so an index stays exact.
        self.contact_ids_by_email: dict[str, int] = {}

    def insert(self, table: str, record: dict) -> dict:
        record["id"] = self.next_ids[table]
        self.next_ids[table] += 1
        self.tables[table][record["id"]] = record
        return record

    def get(self, table: str, object_id: Any, kind: str) -> dict:
        try:
            return self.tables[table][int(object_id)]
        except (KeyError, ValueError):
            raise not_found(kind, object_id) from None

    def rows(self, table: str) -> list[dict]:
        return list(self.tables[table].values())


class ActiveCampaignApp(SandboxApp):
    name = "activecampaign"

    def __init__(self, *, enforce_rate_limit: bool = True, requests_per_second: int = 5, master_list: bool = True,
                 master_list_name: str = DEFAULT_MASTER_LIST_NAME, import_completes_after_requests: int = 2,
                 faults: FaultPlan | None = None):
        super().__init__(faults)
        self.lock = threading.RLock()
        self.limiter = SlidingWindowLimiter(requests_per_second, enforce_rate_limit)
        self.master_list, self.master_list_name = master_list, master_list_name
        self.import_completes_after_requests = import_completes_after_requests
        self.api_requests = 0
        self.rejected_emails: set[str] = set()
        self.reset()

        api: list[tuple[str, str, Callable[[Request], Response]]] = [
            ("POST", "/connections", self.create_connection),
            ("GET", "/connections", self.list_connections),
            ("GET", r"/connections/(?P<id>\d+)", self.get_connection),
            ("PUT", r"/connections/(?P<id>\d+)", self.update_connection),
            ("DELETE", r"/connections/(?P<id>\d+)", self.delete_connection),
            ("POST", "/ecomCustomers", self.create_customer),
            ("GET", "/ecomCustomers", self.list_customers),
            ("GET", r"/ecomCustomers/(?P<id>\d+)", self.get_customer),
            ("PUT", r"/ecomCustomers/(?P<id>\d+)", self.update_customer),
            ("DELETE", r"/ecomCustomers/(?P<id>\d+)", self.delete_customer),
            ("POST", "/ecomOrders", self.create_order),
            ("GET", "/ecomOrders", self.list_orders),
            ("GET", r"/ecomOrders/(?P<id>\d+)", self.get_order),
            ("PUT", r"/ecomOrders/(?P<id>\d+)", self.update_order),
            ("DELETE", r"/ecomOrders/(?P<id>\d+)", self.delete_order),
            ("GET", r"/ecomOrders/(?P<id>\d+)/orderProducts", self.list_products_of_order),
            ("GET", "/ecomOrderProducts", self.list_order_products),
            ("GET", r"/ecomOrderProducts/(?P<id>\d+)", self.get_order_product),
            ("POST", "/contact/sync", self.sync_contact),
            ("POST", "/contacts", self.create_contact),
            ("GET", "/contacts", self.list_contacts),
            ("GET", r"/contacts/(?P<id>\d+)", self.get_contact),
            ("DELETE", r"/contacts/(?P<id>\d+)", self.delete_contact),
            ("POST", "/tags", self.create_tag),
            ("GET", "/tags", self.list_tags),
            ("POST", "/contactTags", self.add_contact_tag),
            ("GET", "/lists", self.list_lists),
            ("POST", "/contactLists", self.update_list_status),
            ("POST", "/import/bulk_import", self.bulk_import),
            ("GET", "/import/info", self.import_info),
        ]
        admin: list[tuple[str, str, Callable[[Request], Response]]] = [
            ("GET", "/state", self.admin_state),
            ("GET", "/writes", self.admin_writes),
            ("GET", "/automations", self.admin_automations),
            ("GET", "/duplicates", self.admin_duplicates),
            ("POST", "/reset", self.admin_reset),
            ("PUT", "/master-list", self.admin_rename_master_list),
            ("DELETE", "/master-list", self.admin_delete_master_list),
            ("PUT", "/rate-limit", self.admin_rate_limit),
            ("PUT", "/rejected-emails", self.admin_rejected_emails),
        ]
        for prefix, routes in ((API, api), (ADMIN, admin)):
            for method, path, handler in routes:
                self.add_route(method, prefix + path, self._locked(handler))

    def _locked(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            with self.lock:
                return handler(request)
        return run

    def reset(self) -> None:
        with self.lock:
            self.account = Account()
            self.api_requests = 0
            self.master_list_id = self._create_list(self.master_list_name)["id"] if self.master_list else None

    # -- shared machinery, specialised --------------------------------------------
    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        if request.path.startswith(API + "/"):
            with self.lock:
                self.api_requests += 1
                self._process_due_imports()
        return super().dispatch(request)

    def authenticate(self, request: Request) -> Response | None:
        if request.headers.get("api-token") == TOKEN:
            return None
        return Response(401, {"message": "No Result found for Subscriber with id 0"})

    def rate_limit(self, request: Request) -> tuple[Response | None, dict[str, str]]:
        wait = self.limiter.admit()
        if wait is None:
            return None, {}
        return Response(429, {"message": "Too Many Requests"}), {"Retry-After": str(wait)}

    def fault_response(self, kind: str, request: Request) -> Response:
        if kind == "429":
            return Response(429, {"message": "Too Many Requests"}, {"Retry-After": "1"})
        return Response(503, {"message": "Service Unavailable"})

    def bad_json_response(self, message: str) -> Response:
        return Response(400, {"errors": [{"title": "The request body is not valid JSON", "detail": message,
                                          "code": "invalid_json"}]})

    def not_found_response(self, request: Request) -> Response:
        return Response(404, {"message": f"No Result found for route {request.method} {request.path}"})

    # -- helpers ------------------------------------------------------------------
    def _record_write(self, request: Request, object_type: str, object_id: Any,
                      automations: Iterable[tuple[str, str, Any]] = ()) -> dict:
        """Log a successful write and the automations it started: ``(trigger, object_type, object_id)``."""
        write = {"seq": len(self.account.writes) + 1, "at": now_iso(), "method": request.method, "path": request.path,
                 "object_type": object_type, "object_id": str(object_id), "payload": request.json(),
                 "automation": None, "automations": []}
        self.account.writes.append(write)
        for trigger, fired_type, fired_id in automations:
            self._start_automation(write, trigger, fired_type, fired_id)
        return write

    def _start_automation(self, write: dict, trigger: str, object_type: str, object_id: Any) -> None:
        """One automation started by ``write``; ``key`` names the object across the CRM's ids (for tests)."""
        entry = {"seq": len(self.account.automations) + 1, "write_seq": write["seq"], "at": now_iso(),
                 "trigger": trigger, "object_type": object_type, "object_id": str(object_id),
                 **self._automation_subject(object_type, object_id)}
        self.account.automations.append(entry)
        write["automations"].append({"trigger": trigger, "object_type": object_type, "object_id": str(object_id)})
        if write["automation"] is None:
            write["automation"] = trigger

    def _automation_subject(self, object_type: str, object_id: Any) -> dict:
        """The contact's email and a natural key of the object an automation started for."""
        if object_type == "ecomOrder":
            order = self.account.tables["ecomOrders"][int(object_id)]
            connection = self.account.tables["connections"].get(order["connectionid"]) or {}
            ref = order["externalid"] or order["externalcheckoutid"]
            return {"contact": order["email"].strip().lower(),
                    "key": f"{connection.get('service')}:{connection.get('externalid')}|{ref}"}
        if object_type == "contactTag":
            link = self.account.tables["contactTags"][int(object_id)]
            email = self.account.tables["contacts"][link["contact"]]["email"].lower()
            return {"contact": email, "key": f"{email}|{self.account.tables['tags'][link['tag']]['tag']}"}
        membership = self.account.tables["contactLists"][int(object_id)]
        email = self.account.tables["contacts"][membership["contact"]]["email"].lower()
        return {"contact": email, "key": f"{email}|list:{membership['list']}"}

    def _valid_email(self, email: Any) -> str:
        if not isinstance(email, str) or not EMAIL_PATTERN.match(email.strip()) \
                or email.strip().lower() in self.rejected_emails:
            raise email_invalid(email)
        return email.strip()

    @staticmethod
    def _page(request: Request, rows: list[dict]) -> tuple[list[dict], dict]:
        try:
            limit = min(int(request.arg("limit", str(DEFAULT_PAGE_SIZE))), MAX_PAGE_SIZE)
            offset = int(request.arg("offset", "0"))
        except ValueError:
            raise ApiError(Response(400, {"message": "limit and offset must be integers"})) from None
        if limit < 0 or offset < 0:
            raise ApiError(Response(400, {"message": "limit and offset must not be negative"}))
        return rows[offset:offset + limit], {"total": str(len(rows))}

    @staticmethod
    def _filtered(request: Request, rows: list[dict], fields: dict[str, Callable[[dict], Any]]) -> list[dict]:
        """Rows matching every ``filters[name]`` given; emails compare case-insensitively."""
        for name, value_of in fields.items():
            wanted = request.arg(f"filters[{name}]")
            if wanted is None:
                continue
            if name == "email":
                rows = [r for r in rows if str(value_of(r) or "").lower() == wanted.strip().lower()]
            else:
                rows = [r for r in rows if value_of(r) is not None and str(value_of(r)) == wanted]
        return rows

    # -- connections --------------------------------------------------------------
    @staticmethod
    def _connection_view(c: dict, numeric_internal: bool = False) -> dict:
        cid = str(c["id"])
        return {"isInternal": 0 if numeric_internal else "0", "connectionType": "ecommerce",
                "service": c["service"], "externalid": c["externalid"], "name": c["name"],
                "status": str(c["status"]), "syncStatus": str(c["syncStatus"]), "lastSync": "",
                "logoUrl": c["logoUrl"], "linkUrl": c["linkUrl"], "listId": c.get("listId", ""),
                "cdate": c["cdate"], "udate": c["udate"], "serviceName": c["service"],
                "links": {"options": f"{API}/connections/{cid}/options", "customers": f"{API}/connections/{cid}/customers"},
                "id": cid}

    def _check_unique_connection(self, service: str, externalid: str, own_id: int | None = None) -> None:
        for c in self.account.rows("connections"):
            if c["service"] == service and c["externalid"] == externalid and c["id"] != own_id:
                raise unprocessable("duplicate", "The integration already exists in the system.", "externalid",
                                    f"A connection for service '{service}' and externalid '{externalid}' exists")

    def create_connection(self, request: Request) -> Response:
        payload = root_object(request, "connection")
        # The URLs must be sent, but a store without a logo sends an empty one.
        require(payload, ("service", "externalid", "name", "logoUrl", "linkUrl"), may_be_empty=("logoUrl", "linkUrl"))
        fields = {f: as_text(payload[f], f) for f in ("service", "externalid", "name", "logoUrl", "linkUrl")}
        self._check_unique_connection(fields["service"], fields["externalid"])
        stamp = now_iso()
        record = self.account.insert("connections", {**fields, "listId": str(payload.get("listId", "")),
                                                     "status": 1, "syncStatus": 0, "cdate": stamp, "udate": stamp})
        self._record_write(request, "connection", record["id"])
        # The API reference documents 200 (not 201) for this create.
        return Response(200, {"connection": self._connection_view(record, numeric_internal=True)})

    def list_connections(self, request: Request) -> Response:
        rows = self._filtered(request, self.account.rows("connections"),
                              {"service": lambda c: c["service"], "externalid": lambda c: c["externalid"]})
        page, meta = self._page(request, rows)
        return Response(200, {"connections": [self._connection_view(c) for c in page], "meta": meta})

    def get_connection(self, request: Request) -> Response:
        record = self.account.get("connections", request.params["id"], "Connection")
        return Response(200, {"connection": self._connection_view(record, numeric_internal=True)})

    def update_connection(self, request: Request) -> Response:
        record = self.account.get("connections", request.params["id"], "Connection")
        payload = root_object(request, "connection")
        changes = {f: as_text(payload[f], f) for f in ("service", "externalid", "name", "logoUrl", "linkUrl")
                   if present(payload, f)}
        changes.update({f: as_flag(payload[f], f) for f in ("status", "syncStatus") if f in payload})
        self._check_unique_connection(changes.get("service", record["service"]),
                                      changes.get("externalid", record["externalid"]), record["id"])
        record.update(changes, udate=now_iso())
        self._record_write(request, "connection", record["id"])
        return Response(200, {"connection": self._connection_view(record)})

    def delete_connection(self, request: Request) -> Response:
        # Like the real account, deleting a connection deletes its e-commerce customers and orders.
        record = self.account.get("connections", request.params["id"], "Connection")
        for order in [o for o in self.account.rows("ecomOrders") if o["connectionid"] == record["id"]]:
            self._delete_order_record(order)
        for customer in [c for c in self.account.rows("ecomCustomers") if c["connectionid"] == record["id"]]:
            del self.account.tables["ecomCustomers"][customer["id"]]
        del self.account.tables["connections"][record["id"]]
        self._record_write(request, "connection", record["id"])
        return Response(200, {})

    # -- e-commerce customers -----------------------------------------------------
    def _orders_by_customer(self) -> dict[int, list[dict]]:
        """Real orders (not carts) per e-commerce customer id: the CRM computes the customer's totals from them."""
        index: dict[int, list[dict]] = collections.defaultdict(list)
        for order in self.account.rows("ecomOrders"):
            if order["externalid"]:
                index[order["customerid"]].append(order)
        return index

    def _customer_view(self, c: dict, orders_by_customer: dict[int, list[dict]] | None = None) -> dict:
        orders = (orders_by_customer if orders_by_customer is not None else self._orders_by_customer()).get(c["id"], [])
        products = [p for o in orders for p in o["products"]]
        revenue = sum(o["totalPrice"] for o in orders)
        categories = collections.Counter(p["category"] for p in products if p["category"])
        cid = str(c["id"])
        return {"connectionid": str(c["connectionid"]), "externalid": c["externalid"], "email": c["email"],
                "totalRevenue": str(revenue), "totalOrders": str(len(orders)),
                "totalProducts": str(sum(p["quantity"] for p in products)),
                "avgRevenuePerOrder": str(revenue // len(orders)) if orders else "0",
                # the most bought category; a tie goes to the first name, not to whichever order arrived first
                "avgProductCategory": min(categories.items(), key=lambda kv: (-kv[1], kv[0]))[0] if categories else "",
                "tstamp": c["tstamp"], "acceptsMarketing": str(c["acceptsMarketing"]),
                "links": {"connection": f"{API}/ecomCustomers/{cid}/connection",
                          "orders": f"{API}/ecomCustomers/{cid}/orders"},
                "id": cid, "connection": str(c["connectionid"])}

    def _existing_connection(self, value: Any) -> int:
        connection_id = as_id(value, "connectionid")
        if connection_id not in self.account.tables["connections"]:
            raise unprocessable("related_missing", "The related connection does not exist.", "connectionid",
                                f"Connection with id {value} does not exist")
        return connection_id

    def create_customer(self, request: Request) -> Response:
        payload = root_object(request, "ecomCustomer")
        require(payload, ("connectionid", "externalid", "email"))
        record = self.account.insert("ecomCustomers", {
            "connectionid": self._existing_connection(payload["connectionid"]),
            "externalid": as_text(payload["externalid"], "externalid"),
            "email": self._valid_email(payload["email"]),
            "acceptsMarketing": as_flag(payload.get("acceptsMarketing", 0), "acceptsMarketing"),
            "tstamp": now_iso()})
        self._record_write(request, "ecomCustomer", record["id"])
        return Response(201, {"ecomCustomer": self._customer_view(record)})

    def list_customers(self, request: Request) -> Response:
        rows = self._filtered(request, self.account.rows("ecomCustomers"), {
            "connectionid": lambda c: c["connectionid"], "externalid": lambda c: c["externalid"],
            "email": lambda c: c["email"]})
        page, meta = self._page(request, rows)
        orders = self._orders_by_customer()
        return Response(200, {"ecomCustomers": [self._customer_view(c, orders) for c in page], "meta": meta})

    def get_customer(self, request: Request) -> Response:
        record = self.account.get("ecomCustomers", request.params["id"], "EcomCustomer")
        return Response(200, {"ecomCustomer": self._customer_view(record)})

    def update_customer(self, request: Request) -> Response:
        record = self.account.get("ecomCustomers", request.params["id"], "EcomCustomer")
        payload = root_object(request, "ecomCustomer")
        changes: dict[str, Any] = {}
        if present(payload, "connectionid"):
            changes["connectionid"] = self._existing_connection(payload["connectionid"])
        if present(payload, "externalid"):
            changes["externalid"] = as_text(payload["externalid"], "externalid")
        if "email" in payload:
            changes["email"] = self._valid_email(payload["email"])
        if "acceptsMarketing" in payload:
            changes["acceptsMarketing"] = as_flag(payload["acceptsMarketing"], "acceptsMarketing")
        record.update(changes, tstamp=now_iso())
        self._record_write(request, "ecomCustomer", record["id"])
        return Response(200, {"ecomCustomer": self._customer_view(record)})

    def delete_customer(self, request: Request) -> Response:
        record = self.account.get("ecomCustomers", request.params["id"], "EcomCustomer")
        del self.account.tables["ecomCustomers"][record["id"]]
        self._record_write(request, "ecomCustomer", record["id"])
        return Response(200, {})

    # -- e-commerce orders --------------------------------------------------------
    @staticmethod
    def _product_view(p: dict, numeric: bool = False) -> dict:
        pid, oid = str(p["id"]), str(p["orderid"])
        return {"orderid": oid, "connectionid": str(p["connectionid"]), "externalid": p["externalid"],
                "sku": p["sku"], "name": p["name"], "description": p["description"],
                "price": p["price"] if numeric else str(p["price"]),
                "quantity": p["quantity"] if numeric else str(p["quantity"]),
                "category": p["category"], "imageUrl": p["imageUrl"], "productUrl": p["productUrl"],
                "createdDate": p["createdDate"], "updatedDate": p["updatedDate"], "tstamp": p["updatedDate"],
                "links": {"ecomOrder": f"{API}/ecomOrderProducts/{pid}/ecomOrder"}, "id": pid, "ecomOrder": oid}

    @staticmethod
    def _discount_view(d: dict) -> dict:
        return {"name": d["name"], "type": d["type"], "orderid": str(d["orderid"]),
                "discountAmount": str(d["discountAmount"]), "id": str(d["id"]),
                "createdDate": d["createdDate"], "updatedDate": d["updatedDate"]}

    @staticmethod
    def _order_view(o: dict, int_fields: Iterable[str] = ()) -> dict:
        oid = str(o["id"])
        view = {"customerid": str(o["customerid"]), "connectionid": str(o["connectionid"]),
                "state": str(o["state"]), "source": str(o["source"]), "externalid": o["externalid"],
                "externalcheckoutid": o["externalcheckoutid"], "orderNumber": o["orderNumber"], "email": o["email"],
                **{f: str(o[f]) for f in ORDER_AMOUNT_FIELDS},
                "totalProducts": str(len(o["products"])), "currency": o["currency"],
                "shippingMethod": o["shippingMethod"], "orderUrl": o["orderUrl"],
                "externalCreatedDate": o["externalCreatedDate"], "externalUpdatedDate": o["externalUpdatedDate"],
                "abandonedDate": o["abandonedDate"], "createdDate": o["createdDate"], "updatedDate": o["updatedDate"],
                "orderDate": o["externalCreatedDate"], "tstamp": o["updatedDate"],
                "orderProducts": [str(p["id"]) for p in o["products"]],
                "orderDiscounts": [str(d["id"]) for d in o["discounts"]],
                "links": {name: f"{API}/ecomOrders/{oid}/{name}"
                          for name in ("connection", "customer", "orderProducts", "orderDiscounts", "orderActivities")},
                "id": oid, "connection": str(o["connectionid"]), "customer": str(o["customerid"])}
        for name in int_fields:
            view[name] = int(view[name])
        return view

    def _order_answer(self, o: dict, int_fields: Iterable[str], numeric_products: bool) -> dict:
        return {"connections": [self._connection_view(self.account.tables["connections"][o["connectionid"]])],
                "ecomOrderProducts": [self._product_view(p, numeric_products) for p in o["products"]],
                "ecomOrderDiscounts": [self._discount_view(d) for d in o["discounts"]],
                "ecomOrder": self._order_view(o, int_fields)}

    def _order_products(self, value: Any, order: dict) -> list[dict]:
        if not isinstance(value, list) or not value:
            raise field_missing("orderProducts")
        stamp = now_iso()
        products = []
        for index, item in enumerate(value):
            pointer = f"orderProducts/{index}"
            if not isinstance(item, dict):
                raise field_invalid(pointer, "each order product must be an object")
            missing = [f for f in ("externalid", "name", "price", "quantity") if item.get(f) in (None, "")]
            if missing:
                raise field_missing(f"{pointer}/{missing[0]}")
            quantity = item["quantity"]
            if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
                raise field_invalid(f"{pointer}/quantity", f"quantity must be a positive integer, got {quantity!r}")
            products.append({"orderid": order["id"], "connectionid": order["connectionid"],
                             "externalid": as_text(item["externalid"], f"{pointer}/externalid"),
                             "name": as_text(item["name"], f"{pointer}/name"),
                             "price": as_cents(item["price"], f"{pointer}/price"), "quantity": quantity,
                             **{f: as_text(item.get(f) or "", f"{pointer}/{f}")
                                for f in ("sku", "category", "description", "imageUrl", "productUrl")},
                             "createdDate": stamp, "updatedDate": stamp})
        return products

    def _order_discounts(self, value: Any, order: dict) -> list[dict]:
        if not isinstance(value, list):
            raise field_invalid("orderDiscounts", "orderDiscounts must be a list")
        stamp = now_iso()
        discounts = []
        for index, item in enumerate(value):
            pointer = f"orderDiscounts/{index}"
            if not isinstance(item, dict):
                raise field_invalid(pointer, "each order discount must be an object")
            require(item, ("discountAmount",))
            discounts.append({"orderid": order["id"], "name": as_text(item.get("name") or "", f"{pointer}/name"),
                              "type": as_text(item.get("type") or "order", f"{pointer}/type"),
                              "discountAmount": as_cents(item["discountAmount"], f"{pointer}/discountAmount"),
                              "createdDate": stamp, "updatedDate": stamp})
        return discounts

    def _apply_order_fields(self, order: dict, payload: dict) -> None:
        """Validate and apply the scalar fields ``payload`` carries (a POST carries all required ones)."""
        if "externalid" in payload:
            order["externalid"] = as_text(payload["externalid"], "externalid") if present(payload, "externalid") else None
        if "externalcheckoutid" in payload:
            order["externalcheckoutid"] = (as_text(payload["externalcheckoutid"], "externalcheckoutid")
                                           if present(payload, "externalcheckoutid") else None)
        if present(payload, "source"):
            order["source"] = as_flag(payload["source"], "source")
        if "email" in payload:
            order["email"] = self._valid_email(payload["email"])
        for name in ORDER_AMOUNT_FIELDS:
            if name in payload:
                order[name] = as_cents(payload[name], name)
        if "currency" in payload:
            currency = payload["currency"]
            if not isinstance(currency, str) or not CURRENCY_PATTERN.match(currency):
                raise field_invalid("currency", f"currency must be a three-letter ISO code, got {currency!r}")
            order["currency"] = currency
        if present(payload, "connectionid"):
            order["connectionid"] = self._existing_connection(payload["connectionid"])
        if present(payload, "customerid"):
            customer_id = as_id(payload["customerid"], "customerid")
            if customer_id not in self.account.tables["ecomCustomers"]:
                raise unprocessable("related_missing", "The related customer does not exist.", "customerid",
                                    f"EcomCustomer with id {payload['customerid']} does not exist")
            order["customerid"] = customer_id
        if present(payload, "externalCreatedDate"):
            order["externalCreatedDate"] = as_date(payload["externalCreatedDate"], "externalCreatedDate")
        if "abandonedDate" in payload:
            order["abandonedDate"] = self._abandoned_date(payload["abandonedDate"]) \
                if present(payload, "abandonedDate") else None
        for name in ORDER_TEXT_FIELDS:
            if name in payload:
                order[name] = as_text(payload[name] if payload[name] is not None else "", name)

    @staticmethod
    def _abandoned_date(value: Any) -> str:
        stamp = as_date(value, "abandonedDate")
        parsed = datetime.fromisoformat(stamp)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        if parsed > datetime.now(UTC):
            raise field_invalid("abandonedDate", f"abandonedDate must be in the past, got {stamp}")
        return stamp

    @staticmethod
    def _check_order_identity(order: dict) -> None:
        if not order["externalid"] and not order["externalcheckoutid"]:
            raise field_missing("externalid")
        if not order["externalid"] and not order["abandonedDate"]:
            raise field_missing("abandonedDate")

    @staticmethod
    def _order_automations(order: dict) -> list[tuple[str, str, Any]]:
        """``source`` 1 starts "makes a purchase" (an order) or the abandoned-cart automation (a cart), on a
        create and — the undocumented, inconvenient reading — on every update too."""
        if order["source"] != 1:
            return []
        return [("makes_a_purchase" if order["externalid"] else "abandoned_cart", "ecomOrder", order["id"])]

    def _replace_lines(self, order: dict, payload: dict) -> None:
        """A write carrying orderProducts / orderDiscounts replaces all of them."""
        if "orderProducts" in payload:
            products = self._order_products(payload["orderProducts"], order)
            for old in order["products"]:
                del self.account.tables["ecomOrderProducts"][old["id"]]
            order["products"] = [self.account.insert("ecomOrderProducts", p) for p in products]
        if "orderDiscounts" in payload:
            discounts = self._order_discounts(payload["orderDiscounts"], order)
            for old in order["discounts"]:
                del self.account.tables["ecomOrderDiscounts"][old["id"]]
            order["discounts"] = [self.account.insert("ecomOrderDiscounts", d) for d in discounts]

    def create_order(self, request: Request) -> Response:
        payload = root_object(request, "ecomOrder")
        require(payload, ("email", "totalPrice", "currency", "connectionid", "customerid", "externalCreatedDate",
                          "orderProducts"))
        if not present(payload, "source"):
            raise field_missing("source")
        stamp = now_iso()
        order = {"id": self.account.next_ids["ecomOrders"], "externalid": None, "externalcheckoutid": None,
                 "abandonedDate": None, "shippingAmount": 0, "taxAmount": 0, "discountAmount": 0,
                 **dict.fromkeys(ORDER_TEXT_FIELDS, ""), "products": [], "discounts": [],
                 "createdDate": stamp, "updatedDate": stamp}
        self._apply_order_fields(order, payload)
        self._check_order_identity(order)
        # Validate the lines before anything is stored: a rejected order leaves no trace.
        self._order_products(payload["orderProducts"], order)
        if "orderDiscounts" in payload:
            self._order_discounts(payload["orderDiscounts"], order)
        order["state"] = 1 if order["externalid"] else 0
        self.account.insert("ecomOrders", order)
        self._replace_lines(order, payload)
        self._record_write(request, "ecomOrder", order["id"], self._order_automations(order))
        return Response(201, self._order_answer(order, ORDER_INT_FIELDS_ON_CREATE, numeric_products=True))

    def update_order(self, request: Request) -> Response:
        order = self.account.get("ecomOrders", request.params["id"], "EcomOrder")
        payload = root_object(request, "ecomOrder")
        candidate = {**order}
        self._apply_order_fields(candidate, payload)
        self._check_order_identity(candidate)
        if "orderProducts" in payload:
            self._order_products(payload["orderProducts"], candidate)
        if "orderDiscounts" in payload:
            self._order_discounts(payload["orderDiscounts"], candidate)
        order.update(candidate, state=1 if candidate["externalid"] else 0, updatedDate=now_iso())
        self._replace_lines(order, payload)
        self._record_write(request, "ecomOrder", order["id"], self._order_automations(order))
        return Response(200, self._order_answer(order, ORDER_INT_FIELDS_ON_UPDATE, numeric_products=False))

    def list_orders(self, request: Request) -> Response:
        rows = self._filtered(request, self.account.rows("ecomOrders"), {
            "connectionid": lambda o: o["connectionid"], "externalid": lambda o: o["externalid"],
            "externalcheckoutid": lambda o: o["externalcheckoutid"], "email": lambda o: o["email"],
            "customerid": lambda o: o["customerid"], "state": lambda o: o["state"]})
        page, meta = self._page(request, rows)
        return Response(200, {"ecomOrders": [self._order_view(o) for o in page], "meta": meta})

    def get_order(self, request: Request) -> Response:
        order = self.account.get("ecomOrders", request.params["id"], "EcomOrder")
        return Response(200, {"ecomOrder": self._order_view(order)})

    def _delete_order_record(self, order: dict) -> None:
        for product in order["products"]:
            del self.account.tables["ecomOrderProducts"][product["id"]]
        for discount in order["discounts"]:
            del self.account.tables["ecomOrderDiscounts"][discount["id"]]
        del self.account.tables["ecomOrders"][order["id"]]

    def delete_order(self, request: Request) -> Response:
        order = self.account.get("ecomOrders", request.params["id"], "EcomOrder")
        self._delete_order_record(order)
        self._record_write(request, "ecomOrder", order["id"])
        return Response(200, {})

    def list_products_of_order(self, request: Request) -> Response:
        order = self.account.get("ecomOrders", request.params["id"], "EcomOrder")
        page, meta = self._page(request, order["products"])
        return Response(200, {"ecomOrderProducts": [self._product_view(p) for p in page], "meta": meta})

    def list_order_products(self, request: Request) -> Response:
        page, meta = self._page(request, self.account.rows("ecomOrderProducts"))
        return Response(200, {"ecomOrderProducts": [self._product_view(p) for p in page], "meta": meta})

    def get_order_product(self, request: Request) -> Response:
        product = self.account.get("ecomOrderProducts", request.params["id"], "EcomOrderProduct")
        return Response(200, {"ecomOrderProduct": self._product_view(product)})

    # -- contacts -----------------------------------------------------------------
    @staticmethod
    def _contact_links(cid: str) -> dict:
        return {name: f"{API}/contacts/{cid}/{name}" for name in (
            "bounceLogs", "contactAutomations", "contactData", "contactGoals", "contactLists", "contactLogs",
            "contactTags", "contactDeals", "deals", "fieldValues", "geoIps", "notes", "organization",
            "plusAppend", "trackingLogs", "scoreValues")}

    def _contact_view(self, c: dict) -> dict:
        """The shape of a contact in create and sync answers."""
        cid = str(c["id"])
        return {"email": c["email"], "phone": c["phone"], "firstName": c["firstName"], "lastName": c["lastName"],
                "email_empty": not c["email"], "cdate": c["cdate"], "udate": c["udate"], "orgid": "0",
                "orgname": "", "links": self._contact_links(cid), "hash": c["hash"], "fieldValues": [], "id": cid}

    def _contact_row(self, c: dict) -> dict:
        """The shape of a contact in reads (list, retrieve, admin state)."""
        cid = str(c["id"])
        local, _, domain = c["email"].partition("@")
        return {"cdate": c["cdate"], "email": c["email"], "phone": c["phone"], "firstName": c["firstName"],
                "lastName": c["lastName"], "orgid": "0", "segmentio_id": "", "bounced_hard": "0",
                "bounced_soft": "0", "bounced_date": "", "ip": "0", "ua": "", "hash": c["hash"],
                "socialdata_lastcheck": "", "email_local": local, "email_domain": domain, "sentcnt": "0",
                "rating_tstamp": "", "gravatar": "0", "deleted": "0", "adate": "", "udate": c["udate"], "edate": "",
                "scoreValues": [], "links": self._contact_links(cid), "id": cid, "organization": None}

    def _contact_by_email(self, email: str) -> dict | None:
        contact_id = self.account.contact_ids_by_email.get(email.strip().lower())
        return None if contact_id is None else self.account.tables["contacts"][contact_id]

    def _upsert_contact(self, email: str, names: dict[str, Any]) -> tuple[dict, bool]:
        """Create or update the contact with ``email``; only the given name/phone fields change."""
        changes = {f: as_text(v if v is not None else "", f) for f, v in names.items()}
        contact = self._contact_by_email(email)
        stamp = now_iso()
        if contact is not None:
            contact.update(changes, udate=stamp)
            return contact, False
        contact = self.account.insert("contacts", {
            "email": email, "firstName": "", "lastName": "", "phone": "", **changes,
            "hash": uuid.uuid5(uuid.NAMESPACE_URL, email.lower()).hex, "cdate": stamp, "udate": stamp})
        self.account.contact_ids_by_email[email.lower()] = contact["id"]
        return contact, True

    def sync_contact(self, request: Request) -> Response:
        payload = root_object(request, "contact")
        require(payload, ("email",))
        email = self._valid_email(payload["email"])
        contact, created = self._upsert_contact(
            email, {f: payload[f] for f in ("firstName", "lastName", "phone") if f in payload})
        self._record_write(request, "contact", contact["id"])
        return Response(201 if created else 200, {"fieldValues": [], "contact": self._contact_view(contact)})

    def create_contact(self, request: Request) -> Response:
        payload = root_object(request, "contact")
        require(payload, ("email",))
        email = self._valid_email(payload["email"])
        if self._contact_by_email(email) is not None:
            raise unprocessable("duplicate", "Email address already exists in the system.", "email",
                                f"A contact with email '{email}' exists")
        contact, _ = self._upsert_contact(
            email, {f: payload[f] for f in ("firstName", "lastName", "phone") if f in payload})
        self._record_write(request, "contact", contact["id"])
        return Response(201, {"fieldValues": [], "contact": self._contact_view(contact)})

    def list_contacts(self, request: Request) -> Response:
        email = request.arg("email") or request.arg("filters[email]")
        if email is None:
            rows = self.account.rows("contacts")
        else:
            contact = self._contact_by_email(email)
            rows = [contact] if contact else []
        page, meta = self._page(request, rows)
        return Response(200, {"scoreValues": [], "contacts": [self._contact_row(c) for c in page], "meta": meta})

    def _contact_list_row(self, cl: dict, status_as_int: bool = False) -> dict:
        contact = self.account.tables["contacts"][cl["contact"]]
        return {"contact": str(cl["contact"]), "list": str(cl["list"]), "form": None, "seriesid": "0",
                "sdate": cl["sdate"], "udate": cl["udate"],
                "status": cl["status"] if status_as_int else str(cl["status"]), "responder": "1", "sync": "0",
                "unsubreason": "", "campaign": None, "message": None, "first_name": contact["firstName"],
                "last_name": contact["lastName"], "ip4Sub": "0", "sourceid": str(cl["sourceid"]),
                "autosyncLog": None, "ip4_last": "0", "ip4Unsub": "0", "unsubscribeAutomation": None,
                "links": {name: f"{API}/contactLists/{cl['id']}/{name}" for name in (
                    "automation", "list", "contact", "form", "autosyncLog", "campaign", "unsubscribeAutomation",
                    "message")},
                "id": str(cl["id"]), "automation": None}

    def get_contact(self, request: Request) -> Response:
        contact = self.account.get("contacts", request.params["id"], "Contact")
        memberships = [cl for cl in self.account.rows("contactLists") if cl["contact"] == contact["id"]]
        return Response(200, {"contactAutomations": [], "contactLists": [self._contact_list_row(cl) for cl in memberships],
                              "deals": [], "fieldValues": [], "geoAddresses": [], "geoIps": [],
                              "contact": self._contact_row(contact)})

    def delete_contact(self, request: Request) -> Response:
        # Like the real account, deleting a contact deletes its tags and list memberships with it.
        contact = self.account.get("contacts", request.params["id"], "Contact")
        for table in ("contactTags", "contactLists"):
            for link in [row for row in self.account.rows(table) if row["contact"] == contact["id"]]:
                del self.account.tables[table][link["id"]]
        del self.account.tables["contacts"][contact["id"]]
        del self.account.contact_ids_by_email[contact["email"].lower()]
        self._record_write(request, "contact", contact["id"])
        return Response(200, {})

    # -- tags and contact tags ----------------------------------------------------
    @staticmethod
    def _tag_view(t: dict) -> dict:
        tid = str(t["id"])
        return {"tagType": t["tagType"], "tag": t["tag"], "description": t["description"], "cdate": t["cdate"],
                "links": {"contactGoalTags": f"{API}/tags/{tid}/contactGoalTags"}, "id": tid}

    def _tag_by_name(self, name: str) -> dict | None:
        return next((t for t in self.account.rows("tags") if t["tag"].lower() == name.lower()), None)

    def _insert_tag(self, name: str, tag_type: str = "contact", description: str = "") -> dict:
        return self.account.insert("tags", {"tag": name, "tagType": tag_type, "description": description,
                                            "cdate": now_iso()})

    def create_tag(self, request: Request) -> Response:
        payload = root_object(request, "tag")
        require(payload, ("tag",))
        name = as_text(payload["tag"], "tag")
        if self._tag_by_name(name) is not None:
            raise unprocessable("duplicate", "Tag already exists.", "tag", f"A tag named '{name}' exists")
        tag = self._insert_tag(name, as_text(payload.get("tagType") or "contact", "tagType"),
                               as_text(payload.get("description") or "", "description"))
        self._record_write(request, "tag", tag["id"])
        return Response(201, {"tag": self._tag_view(tag)})

    def list_tags(self, request: Request) -> Response:
        rows = self.account.rows("tags")
        search = request.arg("search")
        if search:
            rows = [t for t in rows if search.lower() in t["tag"].lower()]
        page, meta = self._page(request, rows)
        return Response(200, {"tags": [self._tag_view(t) for t in page], "meta": meta})

    @staticmethod
    def _contact_tag_view(ct: dict) -> dict:
        ctid = str(ct["id"])
        return {"cdate": ct["cdate"], "contact": str(ct["contact"]), "id": ctid,
                "links": {"contact": f"{API}/contactTags/{ctid}/contact", "tag": f"{API}/contactTags/{ctid}/tag"},
                "tag": str(ct["tag"])}

    def _link_tag(self, contact_id: int, tag_id: int) -> tuple[dict, bool]:
        """The link between a contact and a tag, and whether it is new (the same pair twice gives the existing
        link; only a new one is a "tag is added" trigger)."""
        existing = next((ct for ct in self.account.rows("contactTags")
                         if ct["contact"] == contact_id and ct["tag"] == tag_id), None)
        if existing is not None:
            return existing, False
        return self.account.insert("contactTags", {"contact": contact_id, "tag": tag_id, "cdate": now_iso()}), True

    def add_contact_tag(self, request: Request) -> Response:
        payload = root_object(request, "contactTag")
        require(payload, ("contact", "tag"))
        contact_id, tag_id = as_id(payload["contact"], "contact"), as_id(payload["tag"], "tag")
        if contact_id not in self.account.tables["contacts"]:
            raise ApiError(Response(404, {"errors": [{"status": 404, "title": "Not Found",
                                                      "detail": "Contact not found"}]}))
        if tag_id not in self.account.tables["tags"]:
            raise ApiError(Response(404, {"errors": [{"status": 404, "title": "Not Found",
                                                      "detail": "Tag not found"}]}))
        link, added = self._link_tag(contact_id, tag_id)
        # "Tag is added" starts automations; contactTags has no switch to prevent it.
        self._record_write(request, "contactTag", link["id"], [("tag_added", "contactTag", link["id"])] if added else [])
        return Response(201, {"contactTag": self._contact_tag_view(link)})

    # -- lists and memberships ----------------------------------------------------
    def _create_list(self, name: str) -> dict:
        stamp = now_iso()
        return self.account.insert("lists", {"name": name, "stringid": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"),
                                             "cdate": stamp, "udate": stamp})

    @staticmethod
    def _list_view(lst: dict) -> dict:
        lid = str(lst["id"])
        return {"stringid": lst["stringid"], "userid": "1", "name": lst["name"], "cdate": lst["cdate"],
                "udate": lst["udate"], "private": "0", "send_last_broadcast": "0", "require_name": "0",
                "get_unsubscribe_reason": "0", "optinoptout": "1", "sender_url": "", "sender_reminder": "",
                "links": {name: f"{API}/lists/{lid}/{name}" for name in ("contactGoalLists", "user", "addressLists")},
                "id": lid, "user": "1"}

    def list_lists(self, request: Request) -> Response:
        rows = self._filtered(request, self.account.rows("lists"), {"name": lambda lst: lst["name"]})
        page, meta = self._page(request, rows)
        return Response(200, {"lists": [self._list_view(lst) for lst in page], "meta": meta})

    def _set_list_status(self, contact_id: int, list_id: int, status: int, sourceid: int = 0) -> tuple[dict, bool]:
        """The membership, and whether the contact just subscribed (its status became 1): a trigger."""
        stamp = now_iso()
        membership = next((cl for cl in self.account.rows("contactLists")
                           if cl["contact"] == contact_id and cl["list"] == list_id), None)
        if membership is None:
            return self.account.insert("contactLists", {"contact": contact_id, "list": list_id, "status": status,
                                                        "sourceid": sourceid, "sdate": stamp, "udate": stamp}), \
                status == 1
        subscribed = status == 1 and membership["status"] != 1
        membership.update(status=status, udate=stamp)
        return membership, subscribed

    def update_list_status(self, request: Request) -> Response:
        payload = root_object(request, "contactList")
        require(payload, ("list", "contact", "status"))
        list_id, contact_id = as_id(payload["list"], "list"), as_id(payload["contact"], "contact")
        status = payload["status"]
        if str(status) not in ("1", "2") or isinstance(status, bool):
            raise field_invalid("status", f"status must be 1 (subscribe) or 2 (unsubscribe), got {status!r}")
        contact = self.account.get("contacts", contact_id, "Contact")
        self.account.get("lists", list_id, "List")
        membership, subscribed = self._set_list_status(contact_id, list_id, int(status),
                                                       as_id(payload.get("sourceid", 0), "sourceid"))
        # "Subscribes to a list" starts automations; contactLists has no switch to prevent it.
        self._record_write(request, "contactList", membership["id"],
                           [("subscribed_to_list", "contactList", membership["id"])] if subscribed else [])
        return Response(200, {"contacts": [self._contact_row(contact)],
                              "contactList": self._contact_list_row(membership, status_as_int=True)})

    # -- bulk import --------------------------------------------------------------
    @staticmethod
    def _import_refused(message: str, reasons: list) -> ApiError:
        return ApiError(Response(400, {"success": 0, "message": message, "failureReasons": reasons}))

    def bulk_import(self, request: Request) -> Response:
        if len(request.body) >= BULK_IMPORT_MAX_BYTES:
            raise self._import_refused("Payload too large.",
                                       [f"The payload must be smaller than {BULK_IMPORT_MAX_BYTES // 1024} KB."])
        body = request.json()
        contacts = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(contacts, list) or not contacts:
            raise self._import_refused("JSON payload did not pass validation.", ["'contacts' is a required field."])
        if len(contacts) > BULK_IMPORT_MAX_CONTACTS:
            raise self._import_refused(
                "JSON payload did not pass validation.",
                [f"Up to {BULK_IMPORT_MAX_CONTACTS} contacts may be imported per request, got {len(contacts)}."])
        reasons = [{"contact": index, "failureReason": reason} for index, contact in enumerate(contacts)
                   for reason in [self._import_shape_error(contact)] if reason]
        if reasons:
            raise self._import_refused("JSON payload did not pass validation. Please fix failure Reasons and retry. "
                                       "The import was not queued for processing.", reasons)
        batch_id = str(uuid.UUID(int=random.Random(f"batch:{len(self.account.imports)}").getrandbits(128), version=4))
        write = self._record_write(request, "import", batch_id)
        self.account.imports[batch_id] = {"batchId": batch_id, "status": "queued", "contacts": contacts,
                                          "exclude_automations": _truthy(body.get("exclude_automations")),
                                          "due_at_request": self.api_requests + self.import_completes_after_requests,
                                          "success": [], "failure": [], "write": write}
        return Response(200, {"Success": 1, "queued_contacts": len(contacts), "batchId": batch_id,
                              "message": "Contact import queued"})

    @staticmethod
    def _import_shape_error(contact: Any) -> str | None:
        if not isinstance(contact, dict):
            return "Each contact must be an object"
        if not isinstance(contact.get("email"), str) or not contact["email"].strip():
            return "Field 'email' is required"
        if not isinstance(contact.get("tags", []), list) or not all(isinstance(t, str) for t in contact.get("tags", [])):
            return "Field 'tags' must be a list of tag names"
        if contact.get("exclude_automations") not in (None, True, False, 0, 1, "0", "1", "true", "false"):
            return "Field 'exclude_automations' must be a boolean"
        for field in ("subscribe", "unsubscribe"):
            entries = contact.get(field, [])
            if not isinstance(entries, list) or not all(isinstance(e, dict) and "listid" in e for e in entries):
                return f"Field '{field}' must be a list of {{\"listid\": ...}}"
        return None

    def _process_due_imports(self) -> None:
        for batch in self.account.imports.values():
            if batch["status"] == "queued" and self.api_requests >= batch["due_at_request"]:
                for contact in batch["contacts"]:
                    self._import_contact(batch, contact)
                batch["status"] = "completed"

    def _import_contact(self, batch: dict, item: dict) -> None:
        """Apply one imported contact; an invalid email or an unknown list fails that contact only."""
        try:
            email = self._valid_email(item["email"])
            list_changes = [(as_id(e["listid"], "listid"), status)
                            for field, status in (("subscribe", 1), ("unsubscribe", 2)) for e in item.get(field, [])]
            for list_id, _ in list_changes:
                self.account.get("lists", list_id, "List")
        except ApiError:
            batch["failure"].append(str(item["email"]))
            return
        contact, _ = self._upsert_contact(email, {target: item[source] for source, target in (
            ("first_name", "firstName"), ("last_name", "lastName"), ("phone", "phone")) if source in item})
        # Automations run unless the contact (or the whole request) sets exclude_automations.
        quiet = _truthy(item["exclude_automations"]) if "exclude_automations" in item else batch["exclude_automations"]
        for name in item.get("tags", []):
            tag = self._tag_by_name(name) or self._insert_tag(name)
            link, added = self._link_tag(contact["id"], tag["id"])
            if added and not quiet:
                self._start_automation(batch["write"], "tag_added", "contactTag", link["id"])
        for list_id, status in list_changes:
            membership, subscribed = self._set_list_status(contact["id"], list_id, status)
            if subscribed and not quiet:
                self._start_automation(batch["write"], "subscribed_to_list", "contactList", membership["id"])
        batch["success"].append(str(contact["id"]))

    def import_info(self, request: Request) -> Response:
        batch_id = request.arg("batchId")
        if not batch_id:
            return Response(400, {"success": 0, "message": "'batchId' is a required field."})
        batch = self.account.imports.get(batch_id)
        if batch is None:
            return Response(400, {"success": 0, "message": f"No import found with batchId '{batch_id}'."})
        return Response(200, self._import_view(batch))

    @staticmethod
    def _import_view(batch: dict) -> dict:
        return {"batchId": batch["batchId"], "status": batch["status"], "success": list(batch["success"]),
                "failure": list(batch["failure"])}

    # -- admin --------------------------------------------------------------------
    def admin_state(self, request: Request) -> Response:
        orders_by_customer = self._orders_by_customer()
        orders = []
        for o in self.account.rows("ecomOrders"):
            view = self._order_view(o)
            view["orderProducts"] = [self._product_view(p) for p in o["products"]]
            view["orderDiscounts"] = [self._discount_view(d) for d in o["discounts"]]
            orders.append(view)
        return Response(200, {
            "connections": [self._connection_view(c) for c in self.account.rows("connections")],
            "ecomCustomers": [self._customer_view(c, orders_by_customer) for c in self.account.rows("ecomCustomers")],
            "ecomOrders": orders,
            "contacts": [self._contact_row(c) for c in self.account.rows("contacts")],
            "tags": [self._tag_view(t) for t in self.account.rows("tags")],
            "contactTags": [self._contact_tag_view(ct) for ct in self.account.rows("contactTags")],
            "lists": [self._list_view(lst) for lst in self.account.rows("lists")],
            "contactLists": [self._contact_list_row(cl) for cl in self.account.rows("contactLists")],
            "imports": [self._import_view(b) for b in self.account.imports.values()]})

    def admin_writes(self, request: Request) -> Response:
        since = int(request.arg("since", "0"))
        return Response(200, {"writes": [w for w in self.account.writes if w["seq"] > since]})

    def admin_automations(self, request: Request) -> Response:
        since = int(request.arg("since", "0"))
        entries = [a for a in self.account.automations if a["seq"] > since]
        return Response(200, {"automations": entries,
                              "counts": dict(collections.Counter(a["trigger"] for a in entries))})

    @staticmethod
    def _repeats(rows: list[dict], *keys: Callable[[dict], Any]) -> int:
        """How many objects repeat a natural key another object already has (None keys do not count)."""
        repeated: set[int] = set()
        for key in keys:
            seen: set[Any] = set()
            for row in rows:
                value = key(row)
                if value is None:
                    continue
                if value in seen:
                    repeated.add(row["id"])
                seen.add(value)
        return len(repeated)

    def admin_duplicates(self, request: Request) -> Response:
        a = self.account
        return Response(200, {
            "connections": self._repeats(a.rows("connections"), lambda c: (c["service"], c["externalid"])),
            "ecomCustomers": self._repeats(a.rows("ecomCustomers"), lambda c: (c["connectionid"], c["externalid"])),
            "ecomOrders": self._repeats(
                a.rows("ecomOrders"),
                lambda o: (o["connectionid"], o["externalid"]) if o["externalid"] else None,
                lambda o: (o["connectionid"], o["externalcheckoutid"]) if o["externalcheckoutid"] else None),
            "contacts": self._repeats(a.rows("contacts"), lambda c: c["email"].strip().lower()),
            "contactTags": self._repeats(a.rows("contactTags"), lambda ct: (ct["contact"], ct["tag"])),
            "contactLists": self._repeats(a.rows("contactLists"), lambda cl: (cl["contact"], cl["list"]))})

    def admin_reset(self, request: Request) -> Response:
        self.reset()
        self.limiter.configure(self.limiter.per_second, self.limiter.enforce)
        return Response(204)

    def _master_list(self) -> dict | None:
        return self.account.tables["lists"].get(self.master_list_id) if self.master_list_id else None

    def admin_rename_master_list(self, request: Request) -> Response:
        body = request.json() or {}
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return Response(400, {"error": "body must be {\"name\": \"<non-empty list name>\"}"})
        current = self._master_list()
        if current is None:
            current = self._create_list(name)
            self.master_list_id = current["id"]
        current.update(name=name, udate=now_iso())
        return Response(200, {"list": self._list_view(current)})

    def admin_delete_master_list(self, request: Request) -> Response:
        current = self._master_list()
        if current is None:
            return Response(404, {"error": "there is no master list"})
        for membership in [cl for cl in self.account.rows("contactLists") if cl["list"] == current["id"]]:
            del self.account.tables["contactLists"][membership["id"]]
        del self.account.tables["lists"][current["id"]]
        return Response(204)

    def admin_rate_limit(self, request: Request) -> Response:
        body = request.json() or {}
        per_second, enforce = body.get("requests_per_second", self.limiter.per_second), body.get("enforce", True)
        if not isinstance(per_second, int) or isinstance(per_second, bool) or not isinstance(enforce, bool):
            return Response(400, {"error": "body must be {\"requests_per_second\": <int>, \"enforce\": <bool>}"})
        try:
            self.limiter.configure(per_second, enforce)
        except ValueError as exc:
            return Response(400, {"error": str(exc)})
        return Response(200, {"requests_per_second": self.limiter.per_second, "enforce": self.limiter.enforce})

    def admin_rejected_emails(self, request: Request) -> Response:
        body = request.json() or {}
        emails = body.get("emails")
        if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
            return Response(400, {"error": "body must be {\"emails\": [\"...\"]}"})
        self.rejected_emails = {e.strip().lower() for e in emails}
        return Response(200, {"emails": sorted(self.rejected_emails)})


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true")


def create_app(enforce_rate_limit: bool = True, **options: Any) -> ActiveCampaignApp:
    """Options: ``requests_per_second`` (5), ``master_list`` (True), ``master_list_name``
    ("Master Contact List"), ``import_completes_after_requests`` (2), ``faults`` (a FaultPlan)."""
    return ActiveCampaignApp(enforce_rate_limit=enforce_rate_limit, **options)
