"""BigCommerce streams (one store = one CRM connection).

Orders come with their line items and shipping method in one call
(``include=consignments.line_items&consignment_structure=object``). Each line item
carries its share of every coupon and manual discount in ``applied_discounts``
(orders v2 spec, ``orderProductAppliedDiscounts``: ``id``, ``amount``, ``name``,
``code`` — null for a manual discount — and ``target``), so no per-order
``/v2/orders/{id}/coupons`` call is made. What only ``/coupons`` can answer
(orders v2 spec, ``orderCoupons``): the coupon's definition — ``type``
(``per_item_discount`` … ``free_shipping``) and face ``amount`` (``5`` for 5 % or
$5) — and a coupon that lowers the shipping (``shipping_discount``,
``free_shipping``), which sits on no product line. The CRM payload needs neither
(``orderDiscounts`` takes a name and the amount given), so the call is kept
nowhere; an order whose lines' coupon shares do not add up to its
``coupon_discount`` is the one case where it would tell more, and dbt can see that
from the order payload alone.

Refunds are read from ``GET /v3/orders/payment_actions/refunds`` (orders v3
spec, ``getOrdersRefunds``): the v2 order's ``refunded_amount`` is documented as
"always returns 0", and status 4/14 only say that a refund exists.

Every incremental list is paged by keyset from the last seen (time, id)
(``ecomsync.streams.KeysetPaginator``), never by page number.

Every field read from a payload here (id, date, email, customer id, category
children) is read through ``ecomsync.fields``: a field of another type than the spec
says raises ``FieldError``, which the extract turns into a rejection with its reason
or an ``unreadable_field`` flag (issue 15) — never a crash of the stream.
"""
from __future__ import annotations

from ecomsync import fields
from ecomsync.http import ApiSession, HeaderQuotaPacer
from ecomsync.streams import (
    KeysetPaginator,
    MetaPaginator,
    PageNumberPaginator,
    Request,
    Stream,
    Window,
    iso_z,
)

SOURCE = "bigcommerce"


def session_for(base_url: str, store_hash: str, token: str, *, verify: bool = True) -> ApiSession:
    return ApiSession(f"{base_url.rstrip('/')}/stores/{store_hash}", {"X-Auth-Token": token},
                      pacer=HeaderQuotaPacer(), verify=verify)


def _id(record: dict) -> str:
    """``id: integer`` in every BigCommerce spec; text ids land as received (dbt's safe casts decide), any other
    JSON type is a ``FieldError``."""
    return fields.key(record)


def _window_params(window: Window, low: str, high: str) -> dict[str, str]:
    params = {}
    if window.start is not None:
        params[low] = iso_z(window.start)
    if window.end is not None:
        params[high] = iso_z(window.end)
    return params


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


def _guest_flag(order: dict) -> str | None:
    """orders.v2 ``customer_id``: 0 for a guest checkout."""
    return "guest_checkout" if (fields.integer(order, "customer_id") or 0) == 0 else None


def _missing_email_flag(customer: dict) -> str | None:
    return None if fields.trimmed(customer, "email") else "missing_email"


def _flatten_tree(nodes: list[dict]) -> list[dict]:
    """Category trees nest ``children``; land one row per category node. A node that is not an object, or
    whose ``children`` is not an array of objects, is passed on whole (landing rejects or lands it as
    received): the rest of the tree still lands."""
    flat: list[dict] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        try:
            children = fields.objects(node, "children")
        except fields.FieldError:
            flat.append(node)
            continue
        if not all(isinstance(child, dict) for child in children):
            flat.append(node)
            continue
        flat.append({key: value for key, value in node.items() if key != "children"})
        stack.extend(children)
    return flat


def _category_pk(node: dict) -> str:
    """catalog_categories.v3 tree nodes carry ``id``, the flat rows ``category_id`` (both integers)."""
    return fields.key(node, "id" if isinstance(node, dict) and "id" in node else "category_id")


def _modified_iso(record: dict):
    return fields.iso_time(record, "date_modified")


def _created_iso(record: dict):
    return fields.iso_time(record, "created")


def _modified_rfc2822(record: dict):
    return fields.rfc2822_time(record, "date_modified")


def _v3_keyset(time_of=_modified_iso, low: str = "date_modified:min", high: str = "date_modified:max",
               sort: str | None = "date_modified:asc") -> KeysetPaginator:
    return KeysetPaginator(time_of=time_of, min_param=low, max_param=high, envelope="v3", sort=sort, limit=250)


ORDERS = Stream(
    name="orders", table="bigcommerce_orders", path="/v2/orders",
    paginator=KeysetPaginator(time_of=_modified_rfc2822,
                              min_param="min_date_modified", max_param="max_date_modified", envelope="v2",
                              sort="date_modified:asc", id_sort="id:asc", limit=250),
    primary_key=_id, build_request=_orders_request,
    replication_key=_modified_rfc2822, sorted_by_replication_key=True,
    flag=_guest_flag,
)
CUSTOMERS = Stream(
    name="customers", table="bigcommerce_customers", path="/v3/customers", paginator=_v3_keyset(),
    primary_key=_id, build_request=_v3_request(),
    replication_key=_modified_iso, sorted_by_replication_key=True,
    flag=_missing_email_flag,
)
SUBSCRIBERS = Stream(
    # The subscribers spec documents no ``sort``; the list is asked sorted by date_modified all the same, and
    # an answer in another order stops the stream with a PagingError rather than skipping a subscriber.
    name="subscribers", table="bigcommerce_subscribers", path="/v3/customers/subscribers",
    paginator=_v3_keyset(), primary_key=_id, build_request=_v3_request(),
    replication_key=_modified_iso, sorted_by_replication_key=True,
)
PRODUCTS = Stream(
    # products_catalog.v3.yml: ``sort`` = date_modified with ``direction`` (asc by default).
    name="products", table="bigcommerce_products", path="/v3/catalog/products",
    paginator=_v3_keyset(sort="date_modified"), primary_key=_id, build_request=_v3_request(sort=None, include="images"),
    replication_key=_modified_iso, sorted_by_replication_key=True,
)
REFUNDS = Stream(
    # orders.v3.yml getOrdersRefunds: ordered by refund id (ascending), filtered by ``created:min|max``; a refund
    # is never edited, so ``created`` is its replication time. Landed as received (``raw.bigcommerce_refunds``).
    name="refunds", table="bigcommerce_refunds", path="/v3/orders/payment_actions/refunds",
    paginator=_v3_keyset(time_of=_created_iso, low="created:min", high="created:max", sort=None),
    primary_key=_id, build_request=lambda window: Request(_window_params(window, "created:min", "created:max")),
    replication_key=_created_iso, sorted_by_replication_key=True,
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

# Subscribers last: its ``sort`` is not in the spec, and a store that ignores it stops that stream with a
# PagingError — after orders and refunds have landed, not before.
STREAMS: tuple[Stream, ...] = (ORDER_STATUSES, CATEGORIES, PRODUCTS, CUSTOMERS, ORDERS, REFUNDS, SUBSCRIBERS)
