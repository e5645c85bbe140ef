"""BigCommerce streams (one store = one CRM connection).

Orders come with their line items and shipping method in one call
(``include=consignments.line_items``); coupons cost a call per order, so only
orders that carry a coupon discount ask for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterator

from ecomsync.http import ApiError, ApiSession, HeaderQuotaPacer
from ecomsync.streams import (ChildStream, MetaPaginator, PageNumberPaginator, Request, Stream, Window, iso_z,
                              parse_iso, parse_rfc2822)

SOURCE = "bigcommerce"


def session_for(base_url: str, store_hash: str, token: str, *, verify: bool = True) -> ApiSession:
    return ApiSession(f"{base_url.rstrip('/')}/stores/{store_hash}", {"X-Auth-Token": token},
                      pacer=HeaderQuotaPacer(), verify=verify)


def _id(record: dict) -> str:
    return str(record["id"])


def _window_params(window: Window, low: str, high: str) -> dict[str, str]:
    params = {}
    if window.start is not None:
        params[low] = iso_z(window.start)
    if window.end is not None:
        params[high] = iso_z(window.end)
    return params


@dataclass(frozen=True)
class ModifiedSincePaginator:
    """v2 orders by ``date_modified:asc``, each page asked from the last one's newest ``date_modified``.

    Page numbers are offsets: an order changed while later pages are read moves to
    the end, everything behind it shifts one place forward and the order at the
    page boundary is never seen. Restarting each page at the last seen timestamp
    (inclusive, the ids already seen there skipped) loses nothing. Only when a whole
    page shares one second does it page on within that second.
    """

    limit: int = 250

    def pages(self, session: ApiSession, method: str, path: str, request: Request) -> Iterator[list[dict]]:
        params = dict(request.params)
        since, page, seen_at_since = params.pop("min_date_modified", None), 1, set()
        while True:
            query = {**params, "page": page, "limit": self.limit}
            if since is not None:
                query["min_date_modified"] = since
            _, body, _ = session.request_json(method, path, params=query)
            records = body or []
            if not isinstance(records, list):
                raise ApiError(f"GET {path}: expected a JSON array, got {type(records).__name__}")
            fresh = [r for r in records if r["id"] not in seen_at_since]
            if fresh:
                yield fresh
            if len(records) < self.limit:
                return
            newest = iso_z(parse_rfc2822(records[-1]["date_modified"]))
            at_newest = {r["id"] for r in records if iso_z(parse_rfc2822(r["date_modified"])) == newest}
            if newest == since:
                page, seen_at_since = page + 1, seen_at_since | at_newest
            else:
                page, since, seen_at_since = 1, newest, at_newest


def _orders_request(window: Window) -> Request:
    return Request({"sort": "date_modified:asc", "include": "consignments.line_items",
                    "consignment_structure": "object",
                    **_window_params(window, "min_date_modified", "max_date_modified")})


def _v3_request(sort: str | None = "date_modified:asc", **fixed: str):
    def build(window: Window) -> Request:
        params = dict(fixed)
        if sort:
            params["sort"] = sort
        params.update(_window_params(window, "date_modified:min", "date_modified:max"))
        return Request(params)
    return build


def _has_coupon(order: dict) -> bool:
    try:
        return Decimal(str(order.get("coupon_discount") or "0")) != 0
    except InvalidOperation:
        return True  # an unreadable amount: ask, rather than lose a coupon


def _guest_flag(order: dict) -> str | None:
    return "guest_checkout" if int(order.get("customer_id") or 0) == 0 else None


def _flatten_tree(nodes: list[dict]) -> list[dict]:
    """Category trees nest ``children``; land one row per category node."""
    flat: list[dict] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        children = node.get("children") or []
        flat.append({key: value for key, value in node.items() if key != "children"})
        stack.extend(children)
    return flat


def _category_pk(node: dict) -> str:
    return str(node.get("id", node.get("category_id")))


ORDERS = Stream(
    name="orders", table="bigcommerce_orders", path="/v2/orders", paginator=ModifiedSincePaginator(limit=250),
    primary_key=_id, build_request=_orders_request,
    replication_key=lambda o: parse_rfc2822(o.get("date_modified")), sorted_by_replication_key=True,
    flag=_guest_flag,
    children=(ChildStream(table="bigcommerce_order_coupons",
                          path_for=lambda o: f"/v2/orders/{o['id']}/coupons" if _has_coupon(o) else None,
                          primary_key=lambda c: f"{c.get('order_id')}:{c['id']}"),),
)
CUSTOMERS = Stream(
    name="customers", table="bigcommerce_customers", path="/v3/customers", paginator=MetaPaginator(limit=250),
    primary_key=_id, build_request=_v3_request(),
    replication_key=lambda c: parse_iso(c.get("date_modified")), sorted_by_replication_key=True,
    flag=lambda c: None if (c.get("email") or "").strip() else "missing_email",
)
SUBSCRIBERS = Stream(
    name="subscribers", table="bigcommerce_subscribers", path="/v3/customers/subscribers",
    paginator=MetaPaginator(limit=250), primary_key=_id, build_request=_v3_request(sort=None),
    replication_key=lambda s: parse_iso(s.get("date_modified")),
)
PRODUCTS = Stream(
    name="products", table="bigcommerce_products", path="/v3/catalog/products", paginator=MetaPaginator(limit=250),
    primary_key=_id, build_request=_v3_request(sort=None, include="images"),
    replication_key=lambda p: parse_iso(p.get("date_modified")),
)
CATEGORIES = Stream(
    name="categories", table="bigcommerce_categories", path="/v3/catalog/trees/categories",
    paginator=MetaPaginator(limit=250), primary_key=_category_pk, build_request=lambda window: Request(),
    transform=_flatten_tree,
)
ORDER_STATUSES = Stream(
    name="order_statuses", table="bigcommerce_order_statuses", path="/v2/order_statuses",
    paginator=PageNumberPaginator(limit=250), primary_key=_id, build_request=lambda window: Request(),
)

STREAMS: tuple[Stream, ...] = (ORDER_STATUSES, CATEGORIES, PRODUCTS, CUSTOMERS, SUBSCRIBERS, ORDERS)
