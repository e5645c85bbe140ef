"""The BigCommerce sandbox's data: generated lazily from (seed, store, index), plus a small overlay.

No store ever holds its generated orders or customers in memory. Record ``i`` is
built on demand from a hash of (seed, store, i), and base timestamps are
strictly increasing in the id, so a date filter is a binary search and any page
of a 1,000,000-order store costs the same as the first. Whatever changes later
(time travel, admin edits, fixtures) lives in a per-collection overlay of full
records, merged into every answer.

Monotonic ids and dates: base record ``i`` is modified at ``start + i*step + jm``
and created ``lag`` earlier, with ``jm`` and ``lag`` below ``step/2`` — so both
``date_created`` and ``date_modified`` increase with the id. Overlay records are
modified at the sandbox clock's "now", after the whole generated history.
"""
from __future__ import annotations

import bisect
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

from sandbox.people import Person, person

HISTORY_SECONDS = 730 * 86400  # two years of history before the sandbox's "now"
FIRST_ORDER_ID = 100

ORDER_STATUSES = [
    (0, "Incomplete", "An incomplete order happens when a shopper reached the payment page, but did not complete the transaction."),
    (1, "Pending", "Customer started the checkout process, but did not complete it."),
    (2, "Shipped", "Order has been shipped, but receipt has not been confirmed; seller has used the Ship Items action."),
    (3, "Partially Shipped", "Only some items in the order have been shipped, due to some products being pre-order only or other reasons."),
    (4, "Refunded", "Seller has used the Refund action."),
    (5, "Cancelled", "Seller has cancelled an order, due to a stock inconsistency or other reasons."),
    (6, "Declined", "Seller has marked the order as declined for lack of manual payment, or other reasons."),
    (7, "Awaiting Payment", "Customer has completed checkout process, but payment has yet to be confirmed."),
    (8, "Awaiting Pickup", "Order has been pulled, and is awaiting customer pickup from a seller-specified location."),
    (9, "Awaiting Shipment", "Order has been pulled and packaged, and is awaiting collection from a shipping provider."),
    (10, "Completed", "Client has paid for their digital product and their file(s) are available for download."),
    (11, "Awaiting Fulfillment", "Customer has completed the checkout process and payment has been confirmed."),
    (12, "Manual Verification Required", "Order on hold while some aspect needs to be manually confirmed."),
    (13, "Disputed", "Customer has initiated a dispute resolution process for the PayPal transaction that paid for the order."),
    (14, "Partially Refunded", "Seller has partially refunded the order."),
]
STATUS_NAMES = {status_id: name for status_id, name, _ in ORDER_STATUSES}
# Per-mille weights of the statuses in generated history (every eighth order cycles through all 15).
STATUS_WEIGHTS = [(10, 300), (2, 150), (11, 100), (0, 80), (9, 60), (1, 60), (7, 40), (5, 40), (4, 40),
                  (14, 30), (3, 30), (6, 20), (8, 20), (12, 20), (13, 10)]
PAYMENT_STATUS = {0: "", 1: "pending", 4: "refunded", 5: "void", 6: "declined", 7: "pending",
                  12: "held for review", 14: "partially refunded"}

CURRENCIES = {  # code: (currency_id, tax rate in per-mille, exchange rate to USD as text)
    "USD": (1, 80, "1.0000000000"), "EUR": (2, 190, "0.9200000000"),
    "GBP": (3, 200, "0.7900000000"), "CAD": (4, 130, "1.3600000000"),
}
SHIPPING_METHODS = ["Flat Rate", "Free Shipping", "UPS® Ground", "DHL Express", "Royal Mail Tracked 48"]
COUPONS = [("WELCOME10", 1, 10), ("SOMMER-5", 2, 5), ("BÜCHER15", 1, 15)]  # code, type, face value
COUPON_NAMES = {"WELCOME10": "Welcome 10 % off", "SOMMER-5": "Sommer: 5 off", "BÜCHER15": "Bücher 15 %"}
# Shares of generated orders (per mille) with the inconvenient real cases (issue 13):
DISPLAY_CURRENCY_SHARE = 150  # shown in another currency than the one paid in (currencies guide, "Orders")
ARCHIVED_SHARE = 30           # archived: ``is_deleted: true`` (orders v2 spec, ``is_deleted``)
COUNTRIES = [("United States", "US", "Texas", "Austin", "78701"), ("Germany", "DE", "Berlin", "Berlin", "10115"),
             ("United Kingdom", "GB", "England", "London", "SW1A 1AA"), ("Canada", "CA", "Québec", "Montréal", "H2X 1Y4")]

CATEGORY_TREE = [  # (id, parent_id, name)
    (18, 0, "Outdoor"), (19, 18, "Zelte & Schlafsäcke"), (20, 18, "Rucksäcke"), (21, 20, "Daypacks"),
    (22, 0, "Books"), (23, 22, "Fiction"), (24, 22, "Cookbooks — Küche"), (25, 0, "Apparel"),
    (26, 25, "Jackets"), (27, 25, "Socks"),
]
PRODUCT_WORDS = ["Alpine", "Nordlys", "Café", "Trail", "Señora", "Fjäll", "Urban", "Kiri", "Łąka", "Harbor"]
DELETED_PRODUCT_IDS = (98, 99)  # still on old orders' line items, gone from the catalog

_MASK = (1 << 64) - 1


def mix(*values: int) -> int:
    """A fast, well-spread 64-bit hash of integers (splitmix64 steps)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & _MASK
        state ^= state >> 31
    return state


@lru_cache(maxsize=1 << 16)  # a page repeats the same few amounts (zeros, prices) hundreds of times
def money(cents: int) -> str:
    """BigCommerce v2 money: a string with four decimals, from integer cents."""
    whole, part = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{whole}.{part:02d}00"


def number(cents: int) -> float:
    """v2 consignment and v3 money are JSON numbers; repr of cents/100 is the exact two-decimal value."""
    return cents / 100


def rfc2822(epoch: int) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC)).replace("-0000", "+0000")


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the lazily generated, overlaid collection ----------------------------------------------------
@dataclass
class Entry:
    """An overlay record: a full payload with its timestamps (epoch seconds) for filtering and sorting."""

    id: int
    record: dict
    modified: int
    created: int


@dataclass
class Timeline:
    """Base ids ``first_id .. first_id+count-1`` with strictly increasing created and modified times."""

    count: int
    first_id: int
    end: int  # epoch seconds of the last possible base timestamp
    salt: int
    step: int = field(init=False)
    start: int = field(init=False)

    def __post_init__(self) -> None:
        self.step = max(4, HISTORY_SECONDS // max(self.count, 1))
        self.start = self.end - (self.count + 1) * self.step

    def modified(self, record_id: int) -> int:
        index = record_id - self.first_id + 1
        return self.start + index * self.step + mix(self.salt, record_id, 1) % (self.step // 2)

    def created(self, record_id: int) -> int:
        return self.modified(record_id) - mix(self.salt, record_id, 2) % (self.step // 2)

    def first_id_at_or_after(self, at: Callable[[int], int], when: int) -> int:
        """The smallest base id whose time ``at(id)`` is >= ``when`` (binary search: ``at`` is monotonic)."""
        lo, hi = self.first_id, self.first_id + self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if at(mid) < when:
                lo = mid + 1
            else:
                hi = mid
        return lo


@dataclass(frozen=True)
class Query:
    """Filters shared by every list endpoint; times are epoch seconds, both bounds inclusive."""

    modified_min: int | None = None
    modified_max: int | None = None
    created_min: int | None = None
    created_max: int | None = None
    id_min: int | None = None
    id_max: int | None = None
    # Field equality filters (``customer_id``, ``status_id``, ``id:in``, ``email:in`` …): field -> allowed values.
    equals: tuple[tuple[str, frozenset], ...] = ()
    # List fields that must hold one of the values (a product's ``categories``).
    contains: tuple[tuple[str, frozenset], ...] = ()
    sort: str = "id"  # id | date_created | date_modified
    descending: bool = False


class Collection:
    """A generated base timeline plus an overlay of explicit records, queried as one sorted list."""

    def __init__(self, timeline: Timeline | None, build: Callable[[int], dict],
                 cheap_field: Callable[[int, str], Any] | None = None):
        self.timeline = timeline
        self.build_base = build
        # For equality filters on base records without building them (e.g. status_id); None = build.
        self.cheap_field = cheap_field
        self.overlay: dict[int, Entry] = {}
        self.overlaid_base_ids: list[int] = []  # sorted

    # -- content ---------------------------------------------------------------------
    def is_base(self, record_id: int) -> bool:
        t = self.timeline
        return t is not None and t.first_id <= record_id < t.first_id + t.count

    def get(self, record_id: int) -> dict | None:
        entry = self.overlay.get(record_id)
        if entry is not None:
            return entry.record
        return self.build_base(record_id) if self.is_base(record_id) else None

    def put(self, entry: Entry) -> None:
        if self.is_base(entry.id) and entry.id not in self.overlay:
            bisect.insort(self.overlaid_base_ids, entry.id)
        self.overlay[entry.id] = entry

    def next_id(self) -> int:
        base_end = self.timeline.first_id + self.timeline.count if self.timeline else 1
        return max([base_end - 1, *self.overlay]) + 1

    # -- querying --------------------------------------------------------------------------
    def query(self, query: Query, offset: int, limit: int) -> tuple[int, list[dict]]:
        """(total matching, the records at [offset, offset+limit) in the query's order)."""
        base = self._base_candidates(query)
        extra = sorted((self._key(query.sort, e.id, e.modified, e.created), e) for e in self.overlay.values()
                       if self._entry_matches(query, e))
        total = len(base) + len(extra)
        if query.descending:
            start = max(0, total - offset - limit)
            stop = max(0, total - offset)
        else:
            start, stop = min(offset, total), min(offset + limit, total)
        picked = self._merged_slice(query.sort, base, extra, start, stop - start)
        if query.descending:
            picked.reverse()
        return total, [self.build_base(item) if isinstance(item, int) else item.record for item in picked]

    def all(self, query: Query = Query()) -> list[dict]:
        total, _ = self.query(query, 0, 0)
        return self.query(query, 0, total)[1]

    def _key(self, sort: str, record_id: int, modified: int, created: int) -> tuple[int, int]:
        primary = {"id": record_id, "date_modified": modified, "date_created": created}[sort]
        return primary, record_id

    def _base_key(self, sort: str, record_id: int) -> tuple[int, int]:
        t = self.timeline
        if sort == "id":
            return record_id, record_id
        return (t.modified(record_id) if sort == "date_modified" else t.created(record_id)), record_id

    def _entry_matches(self, query: Query, entry: Entry) -> bool:
        checks = ((query.modified_min, entry.modified, 1), (query.modified_max, entry.modified, -1),
                  (query.created_min, entry.created, 1), (query.created_max, entry.created, -1),
                  (query.id_min, entry.id, 1), (query.id_max, entry.id, -1))
        for bound, value, direction in checks:
            if bound is not None and (value - bound) * direction < 0:
                return False
        return (all(_field(entry.record, name) in allowed for name, allowed in query.equals)
                and all(allowed.intersection(_field(entry.record, name) or ()) for name, allowed in query.contains))

    def _base_candidates(self, query: Query) -> BaseIds:
        t = self.timeline
        if t is None:
            return BaseIds(0, -1, [])
        lo, hi = t.first_id, t.first_id + t.count - 1
        if query.id_min is not None:
            lo = max(lo, query.id_min)
        if query.id_max is not None:
            hi = min(hi, query.id_max)
        for at, low, high in ((t.modified, query.modified_min, query.modified_max),
                              (t.created, query.created_min, query.created_max)):
            if low is not None:
                lo = max(lo, t.first_id_at_or_after(at, low))
            if high is not None:
                hi = min(hi, t.first_id_at_or_after(at, high + 1) - 1)
        excluded = self.overlaid_base_ids
        if query.contains:
            raise ValueError("list-field filters apply to overlay-only collections (the catalog)")
        if not query.equals:
            return BaseIds(lo, hi, excluded)
        # Equality filters need a scan of the candidate range (cheap fields are a hash, not a build).
        skip = set(excluded)
        kept = [record_id for record_id in range(lo, hi + 1)
                if record_id not in skip and all(self._base_field(record_id, name) in allowed
                                                 for name, allowed in query.equals)]
        return BaseIds(0, -1, [], explicit=kept)

    def _base_field(self, record_id: int, name: str) -> Any:
        if self.cheap_field is not None:
            value = self.cheap_field(record_id, name)
            if value is not NotImplemented:
                return value
        return _field(self.build_base(record_id), name)

    def _merged_slice(self, sort: str, base: BaseIds, extra: list[tuple], start: int, count: int) -> list:
        """Positions [start, start+count) of the merge of base ids and overlay entries, both sorted by key."""
        if count <= 0:
            return []
        extra_keys = [key for key, _ in extra]

        def position(k: int) -> int:  # where base[k] lands in the merged order
            return k + bisect.bisect_left(extra_keys, self._base_key(sort, base.at(k)))

        lo, hi = 0, len(base)
        while lo < hi:  # the first base element at or after ``start``
            mid = (lo + hi) // 2
            if position(mid) < start:
                lo = mid + 1
            else:
                hi = mid
        k, j = lo, start - lo
        picked: list = []
        while len(picked) < count and (k < len(base) or j < len(extra)):
            if j >= len(extra) or (k < len(base) and self._base_key(sort, base.at(k)) < extra_keys[j]):
                picked.append(base.at(k))
                k += 1
            else:
                picked.append(extra[j][1])
                j += 1
        return picked


class BaseIds:
    """The base ids in [lo, hi] minus the overlaid ones (a sorted list), or an explicit sorted list."""

    def __init__(self, lo: int, hi: int, excluded: list[int], explicit: list[int] | None = None):
        self.lo, self.hi, self.explicit = lo, hi, explicit
        self.excluded = excluded[bisect.bisect_left(excluded, lo):bisect.bisect_right(excluded, hi)]

    def __len__(self) -> int:
        if self.explicit is not None:
            return len(self.explicit)
        return max(0, self.hi - self.lo + 1 - len(self.excluded))

    def at(self, k: int) -> int:
        if self.explicit is not None:
            return self.explicit[k]
        record_id, skipped = self.lo + k, 0
        while True:  # step over the overlaid ids at or below the candidate
            now_skipped = bisect.bisect_right(self.excluded, record_id)
            if now_skipped == skipped:
                return record_id
            record_id += now_skipped - skipped
            skipped = now_skipped


def _field(record: Any, name: str) -> Any:
    """A record's field, for filters: records are payload dicts or (orders) ``OrderFacts``."""
    value = record.get(name) if isinstance(record, dict) else getattr(record, name, None)
    return value.strip().lower() if name == "email" and isinstance(value, str) else value


# -- the generated store ----------------------------------------------------------------------
class GeneratedStore:
    """Builds one store's records. ``store_no`` tells stores apart; ``seed`` makes everything repeatable."""

    def __init__(self, seed: int, store_no: int, store_hash: str, orders: int, customers: int, products: int,
                 history_end: int):
        self.seed, self.store_no, self.store_hash = seed, store_no, store_hash
        self._people: dict[int, Person] = {}
        self._refunded_ids: list[int] | None = None
        self.n_customers = customers
        self.currency = ["USD", "EUR", "GBP", "CAD"][store_no % 4]
        self.history_end = history_end
        self.categories = [{"id": cid, "parent_id": parent, "name": name} for cid, parent, name in CATEGORY_TREE]
        self.products = [self._product(k, products) for k in range(products)]
        self.product_ids = [p["id"] for p in self.products]
        self.orders_timeline = Timeline(orders, FIRST_ORDER_ID, history_end, mix(seed, store_no, 11))
        self.customers_timeline = Timeline(customers, 1, history_end, mix(seed, store_no, 12))
        self.subscribers_timeline = Timeline(customers // 2 + customers // 10, 1, history_end, mix(seed, store_no, 13))

    def _h(self, *values: int) -> int:
        return mix(self.seed, self.store_no, *values)

    def _person(self, index: int) -> Person:
        """``people.person``, remembered for the last few thousand people (a page asks for each several times)."""
        cached = self._people.get(index)
        if cached is None:
            if len(self._people) >= 4096:
                self._people.clear()
            cached = self._people[index] = person(self.seed, index)
        return cached

    # -- people ---------------------------------------------------------------------------
    def _customer_person_index(self, customer_id: int) -> int:
        # One customer in ten shops in every store under the same email.
        return customer_id if customer_id % 10 == 3 else (self.store_no + 1) * 10_000_000 + customer_id

    def customer_email(self, customer_id: int) -> str:
        who = self._person(self._customer_person_index(customer_id))
        if customer_id % 50 == 7:
            return ""  # imported without an email
        if customer_id % 50 == 19:
            return who.email.replace("@", " at ")  # typed wrong, never validated
        return who.email

    # -- customers ------------------------------------------------------------------------
    def customer(self, customer_id: int) -> dict:
        t = self.customers_timeline
        who = self._person(self._customer_person_index(customer_id))
        h = self._h(21, customer_id)
        customer = {
            "id": customer_id, "email": self.customer_email(customer_id), "first_name": who.first_name,
            "last_name": who.last_name, "company": "", "phone": who.phone if h % 3 else "",
            "registration_ip_address": f"203.0.113.{h % 250 + 1}", "notes": "", "tax_exempt_category": "",
            "customer_group_id": 0, "date_modified": iso(t.modified(customer_id)),
            "date_created": iso(t.created(customer_id)), "address_count": 1, "attribute_count": 0,
            "authentication": {"force_password_reset": False},
            "accepts_product_review_abandoned_cart_emails": bool(h % 2), "origin_channel_id": 1, "channel_ids": [1],
        }
        if not customer["email"]:
            del customer["email"]  # the spec allows no empty email: an account imported without one has none
        return customer

    # -- newsletter subscribers -------------------------------------------------------------
    def subscriber(self, subscriber_id: int) -> dict:
        t = self.subscribers_timeline
        h = self._h(31, subscriber_id)
        linked_customer = 2 * subscriber_id if 2 * subscriber_id <= self.n_customers else None
        if linked_customer:
            who = self._person(self._customer_person_index(linked_customer))
            email, source = self.customer_email(linked_customer) or who.email, "storefront"
        else:  # signed up for the newsletter without an account
            who = self._person((self.store_no + 1) * 30_000_000 + subscriber_id)
            email, source = who.email, "newsletter"
        return {
            "id": subscriber_id, "email": email.strip(), "first_name": who.first_name, "last_name": who.last_name,
            "source": source, "order_id": None, "channel_id": 1,
            "consents": [] if h % 100 < 15 else ["marketing_newsletter"],  # some withdrew their consent
            "date_modified": iso(t.modified(subscriber_id)), "date_created": iso(t.created(subscriber_id)),
        }

    # -- catalog -------------------------------------------------------------------------------
    def _product(self, k: int, count: int) -> dict:
        product_id = 100 + k
        h = self._h(41, product_id)
        leaf = [c for c in CATEGORY_TREE if not any(other[1] == c[0] for other in CATEGORY_TREE)]
        category = leaf[h % len(leaf)]
        name = f"{PRODUCT_WORDS[h % len(PRODUCT_WORDS)]} {category[2].split()[0]} {k + 1}"
        modified = self.history_end - HISTORY_SECONDS + (k + 1) * (HISTORY_SECONDS // (count + 1)) - h % 3600
        images = [{
            "id": product_id * 10 + n, "product_id": product_id, "is_thumbnail": n == 0, "sort_order": n,
            "description": "", "image_file": f"p/{product_id}/{n}.jpg",
            "url_zoom": f"https://cdn11.bigcommerce.com/s-{self.store_hash}/images/stencil/1280x1280/products/{product_id}/{n}.jpg",
            "url_standard": f"https://cdn11.bigcommerce.com/s-{self.store_hash}/images/stencil/500x659/products/{product_id}/{n}.jpg",
            "url_thumbnail": f"https://cdn11.bigcommerce.com/s-{self.store_hash}/images/stencil/220x290/products/{product_id}/{n}.jpg",
            "url_tiny": f"https://cdn11.bigcommerce.com/s-{self.store_hash}/images/stencil/44x44/products/{product_id}/{n}.jpg",
            "date_modified": iso(modified),
        } for n in range(1 + h % 2)]
        return {
            "id": product_id, "name": name, "type": "physical", "sku": f"SKU-{self.store_no}-{product_id}",
            "description": f"<p>{name}</p>", "weight": 1 + h % 5, "width": 0, "depth": 0, "height": 0,
            "price": number(499 + h % 20000), "cost_price": 0, "categories": [category[0], category[1]] if category[1] else [category[0]],
            "inventory_level": h % 80, "inventory_tracking": "product", "is_visible": True, "availability": "available",
            "condition": "New", "custom_url": {"url": f"/{name.lower().replace(' ', '-')}/", "is_customized": False},
            "date_created": iso(modified - 86400 * (1 + h % 30)), "date_modified": iso(modified),
            "images": images,
        }

    # -- orders --------------------------------------------------------------------------------
    def order_status(self, order_id: int) -> int:
        if order_id % 8 == 0:
            return (order_id // 8) % 15
        draw = self._h(51, order_id) % 1000
        for status_id, weight in STATUS_WEIGHTS:
            if draw < weight:
                return status_id
            draw -= weight
        return 10

    def order_customer_id(self, order_id: int) -> int:
        h = self._h(52, order_id)
        if h % 100 < 12 or not self.n_customers:
            return 0  # guest checkout
        return 1 + (h >> 8) % self.n_customers

    def cheap_order_field(self, order_id: int, name: str) -> Any:
        if name == "status_id":
            return self.order_status(order_id)
        if name == "customer_id":
            return self.order_customer_id(order_id)
        return NotImplemented

    def cart_id(self, order_id: int) -> str:
        """Deterministic cart UUID whose low 48 bits are the order id (so a cart can be looked up)."""
        return str(uuid.UUID(int=(self._h(53, order_id) << 64 | self._h(54, order_id)) & ~((1 << 48) - 1)
                             & ((1 << 128) - 1) | order_id))

    def base_order(self, order_id: int) -> OrderFacts:
        t = self.orders_timeline
        modified, status_id = t.modified(order_id), self.order_status(order_id)
        facts = self.order_facts(order_id, t.created(order_id), modified, status_id, self.order_customer_id(order_id))
        facts.archived = self._h(57, order_id) % 1000 < ARCHIVED_SHARE
        if status_id in (4, 14):
            # The refund that made the order (partially) refunded, made when it was last modified. Generated
            # refunds take the order's id as refund id: ids then grow with ``created`` across the history, as
            # refund ids do (orders.v3.yml getOrdersRefunds lists them by id); later refunds count on from
            # ``GeneratedStore.first_admin_refund_id``.
            total = facts.total_inc_cents
            cents = total if status_id == 4 else total * facts.refund_share // 100
            facts.refunds = (RefundFacts(order_id, modified, cents, full=status_id == 4),)
        return facts

    @property
    def first_admin_refund_id(self) -> int:
        return self.orders_timeline.first_id + self.orders_timeline.count

    def refunded_base_order_ids(self) -> list[int]:
        """Ids of the generated orders that carry a refund (computed once: a status is a hash, not a build)."""
        if self._refunded_ids is None:
            t = self.orders_timeline
            self._refunded_ids = [i for i in range(t.first_id, t.first_id + t.count) if self.order_status(i) in (4, 14)]
        return self._refunded_ids

    def order_facts(self, order_id: int, created: int, modified: int, status_id: int, customer_id: int) -> OrderFacts:
        rng = random.Random(self._h(55, order_id))
        currency = self.currency if rng.random() < 0.75 else rng.choice(list(CURRENCIES))
        lines = []
        for n in range(rng.randint(1, 4)):
            deleted = order_id % 40 == 1 and n == 0
            product = None if deleted else self.products[rng.randrange(len(self.products))]
            gone = (order_id // 40) % len(DELETED_PRODUCT_IDS)
            lines.append(LineFacts(
                line_id=order_id * 10 + n,
                product_id=DELETED_PRODUCT_IDS[gone] if deleted else product["id"],
                name=f"Discontinued item {gone + 1}" if deleted else product["name"],
                sku=f"OLD-{gone + 1}" if deleted else product["sku"],
                unit_cents=1999 if deleted else round(product["price"] * 100),
                quantity=rng.randint(1, 3)))
        coupon = COUPONS[rng.randrange(len(COUPONS))] if rng.random() < 0.2 else None
        display = currency
        if self._h(56, order_id) % 1000 < DISPLAY_CURRENCY_SHARE:
            others = [code for code in CURRENCIES if code != currency]
            display = others[self._h(58, order_id) % len(others)]
        facts = OrderFacts(order_id=order_id, created=created, modified=modified, status_id=status_id,
                           customer_id=customer_id, currency=currency, display_currency=display, lines=lines,
                           shipping_cents=0 if rng.random() < 0.3 else rng.choice([495, 990, 1490]),
                           shipping_method=rng.choice(SHIPPING_METHODS), coupon=coupon,
                           manual_discount_cents=rng.choice([0] * 9 + [500]),
                           email_opt_in=rng.random() < 0.35, country=rng.choice(COUNTRIES),
                           refund_share=rng.choice([25, 40, 50]))
        return facts

    def order_person(self, facts: OrderFacts) -> tuple[str, str, str, str]:
        """(first name, last name, email, phone) on the billing address."""
        if facts.customer_id:
            who = self._person(self._customer_person_index(facts.customer_id))
            email = self.customer_email(facts.customer_id) or who.email
        else:
            who = self._person((self.store_no + 1) * 50_000_000 + facts.order_id)
            email = who.email
        return who.first_name, who.last_name, email, who.phone


@dataclass
class LineFacts:
    line_id: int
    product_id: int
    name: str
    sku: str
    unit_cents: int
    quantity: int


@dataclass
class OrderFacts:
    """What an order is; ``render_order`` turns it into BigCommerce's payload."""

    order_id: int
    created: int
    modified: int
    status_id: int
    customer_id: int
    currency: str
    lines: list[LineFacts]
    shipping_cents: int
    shipping_method: str
    coupon: tuple[str, int, int] | None
    manual_discount_cents: int
    email_opt_in: bool
    country: tuple[str, str, str, str, str]
    refund_share: int  # per cent refunded when a generated order is partially refunded
    display_currency: str = ""  # the shopper's active currency (``currency_code``); "" = the transactional one
    refunds: tuple[RefundFacts, ...] = ()
    archived: bool = False

    @property
    def tax_per_mille(self) -> int:
        return CURRENCIES[self.currency][1]

    @property
    def subtotal_cents(self) -> int:
        return sum(line.unit_cents * line.quantity for line in self.lines)

    @property
    def coupon_cents(self) -> int:
        if self.coupon is None:
            return 0
        _, kind, value = self.coupon
        return self.subtotal_cents * value // 100 if kind == 1 else min(value * 100, self.subtotal_cents // 2)

    def tax(self, cents: int) -> int:
        return (cents * self.tax_per_mille + 500) // 1000

    @property
    def total_ex_cents(self) -> int:
        return self.subtotal_cents + self.shipping_cents - self.coupon_cents - self.manual_discount_cents

    @property
    def total_tax_cents(self) -> int:
        return self.tax(self.subtotal_cents) + self.tax(self.shipping_cents)

    @property
    def total_inc_cents(self) -> int:
        return self.total_ex_cents + self.total_tax_cents

    @property
    def refunded(self) -> int:
        """Cents given back so far (the sum of the order's refunds)."""
        return sum(refund.cents for refund in self.refunds)


@dataclass(frozen=True)
class RefundFacts:
    """One refund (orders.v3.yml ``Refund``): ``full`` refunds every line and the shipping, else an ``ORDER``
    level amount; money in the order's transactional currency."""

    refund_id: int
    created: int
    cents: int
    full: bool


# -- payloads ------------------------------------------------------------------------------------
def _resource(store_hash: str, path: str) -> dict:
    return {"url": f"https://api.bigcommerce.com/stores/{store_hash}/v2{path}", "resource": path}


def render_line_item(facts: OrderFacts, line: LineFacts, address_id: int) -> dict:
    """One ``orderProducts`` row (the spec forbids extra fields here)."""
    tax = facts.tax(line.unit_cents)
    total = line.unit_cents * line.quantity
    refunded_quantity = line.quantity if facts.status_id == 4 else 0
    return {
        "id": line.line_id, "order_id": facts.order_id, "product_id": line.product_id, "variant_id": line.product_id + 1000,
        "order_pickup_method_id": 0, "order_address_id": address_id, "name": line.name, "name_customer": line.name,
        "name_merchant": line.name, "sku": line.sku, "upc": "", "type": "physical",
        "base_price": money(line.unit_cents), "price_ex_tax": money(line.unit_cents),
        "price_inc_tax": money(line.unit_cents + tax), "price_tax": money(tax),
        "base_total": money(total), "total_ex_tax": money(total), "total_inc_tax": money(total + tax * line.quantity),
        "total_tax": money(tax * line.quantity), "quantity": line.quantity, "base_cost_price": money(0),
        "cost_price_inc_tax": money(0), "cost_price_ex_tax": money(0), "cost_price_tax": money(0),
        "weight": "1.0000", "width": "0.0000", "height": "0.0000", "depth": "0.0000",
        "is_refunded": refunded_quantity > 0, "quantity_refunded": refunded_quantity, "refund_amount": money(0),
        "return_id": 0, "wrapping_id": 0, "wrapping_name": None, "base_wrapping_cost": money(0),
        "wrapping_cost_ex_tax": money(0), "wrapping_cost_inc_tax": money(0), "wrapping_cost_tax": money(0),
        "wrapping_message": "", "quantity_shipped": line.quantity if facts.status_id in (2, 10) else 0,
        "event_name": None, "event_date": None, "fixed_shipping_cost": money(0), "ebay_item_id": "",
        "ebay_transaction_id": "", "option_set_id": None, "parent_order_product_id": None,
        "is_bundled_product": False, "bin_picking_number": "", "external_id": None, "brand": "",
        "applied_discounts": applied_discounts(facts, line), "product_options": [], "configurable_fields": [],
        "gift_certificate_id": None,
        "discounted_total_inc_tax": money(total + tax * line.quantity),
    }


def _spread(cents: int, facts: OrderFacts) -> dict[int, int]:
    """``cents`` over the lines in proportion to their price (largest remainder, so the shares add up exactly)."""
    weights = {line.line_id: line.unit_cents * line.quantity for line in facts.lines}
    total = sum(weights.values())
    if not total:
        return dict.fromkeys(weights, 0)
    shares = {line_id: cents * weight // total for line_id, weight in weights.items()}
    left = cents - sum(shares.values())
    by_remainder = sorted(weights, key=lambda line_id: (-(cents * weights[line_id] % total), line_id))
    for line_id in by_remainder[:left]:
        shares[line_id] += 1
    return shares


def applied_discounts(facts: OrderFacts, line: LineFacts) -> list[dict]:
    """A line's ``applied_discounts`` (orders.v2.oas2.yml ``orderProductAppliedDiscounts``): each order-level
    discount spread over the lines "in proportion to the products price" —
    ``(total_discount * price_ex_tax) / subtotal_ex_tax`` — so the lines' shares add up to the order's
    ``coupon_discount`` and ``discount_amount``. A coupon's ``code`` is its code and its ``id`` the coupon id;
    a manual discount has ``id`` ``manual-discount``, ``name`` ``Manual Discount`` and ``code`` null (the
    spec's example)."""
    found = []
    if facts.coupon is not None:
        code = facts.coupon[0]
        amount = _spread(facts.coupon_cents, facts)[line.line_id]
        if amount:
            found.append({"id": str(COUPONS.index(facts.coupon) + 1), "amount": money(amount),
                          "name": COUPON_NAMES[code], "code": code, "target": "order"})
    if facts.manual_discount_cents:
        amount = _spread(facts.manual_discount_cents, facts)[line.line_id]
        if amount:
            found.append({"id": "manual-discount", "amount": money(amount), "name": "Manual Discount", "code": None,
                          "target": "order"})
    return found


def _exchange_rate(from_code: str, to_code: str) -> str:
    """Units of ``to_code`` per unit of ``from_code``, with the ten decimals the currencies guide shows."""
    rate = Decimal(CURRENCIES[to_code][2]) / Decimal(CURRENCIES[from_code][2])
    return f"{rate.quantize(Decimal('0.0000000001'))}"


def render_refund(facts: OrderFacts, refund: RefundFacts) -> dict:
    """One refund as ``GET /v3/orders/payment_actions/refunds`` shows it (orders.v3.yml ``Refund``; amounts are
    2-decimal numbers, ``Amount``). A full refund lists every line (``PRODUCT``, by order product id) and the
    shipping (``SHIPPING``, by order address id); a partial one is an ``ORDER`` level amount, which does not
    change the tax (``total_tax`` 0) — the two shapes the refunds guide walks through."""
    if refund.full:
        items = [{"item_type": "PRODUCT", "item_id": line.line_id, "reason": "", "quantity": line.quantity,
                  "requested_amount": number(line.unit_cents * line.quantity + facts.tax(line.unit_cents) * line.quantity)}
                 for line in facts.lines]
        if facts.shipping_cents:
            items.append({"item_type": "SHIPPING", "item_id": facts.order_id, "reason": "",
                          "requested_amount": number(facts.shipping_cents + facts.tax(facts.shipping_cents))})
        tax = facts.total_tax_cents
    else:
        items = [{"item_type": "ORDER", "item_id": facts.order_id, "reason": "Goodwill",
                  "requested_amount": number(refund.cents)}]
        tax = 0
    return {"id": refund.refund_id, "order_id": facts.order_id, "user_id": 0, "created": iso(refund.created),
            "reason": "" if refund.full else "Goodwill", "total_amount": number(refund.cents), "total_tax": number(tax),
            "uses_merchant_override_values": False, "items": items,
            "payments": [{"id": refund.refund_id, "provider_id": "braintree", "amount": number(refund.cents),
                          "offline": False, "is_declined": False, "declined_message": "",
                          "transaction_id": str(900_000 + refund.refund_id)}]}


def _address(first: str, last: str, email: str, phone: str, country: tuple) -> dict:
    name, iso2, state, city, zip_code = country
    return {"first_name": first, "last_name": last, "company": "", "street_1": "Hauptstraße 1", "street_2": "",
            "city": city, "state": state, "zip": zip_code, "country": name, "country_iso2": iso2, "phone": phone,
            "email": email}


def render_shipping_address(store: GeneratedStore, facts: OrderFacts) -> dict:
    """A ``/v2/orders/{id}/shipping_addresses`` row (money as strings there)."""
    first, last, email, phone = store.order_person(facts)
    tax = facts.tax(facts.shipping_cents)
    return {
        "id": facts.order_id, "order_id": facts.order_id, **_address(first, last, email, phone, facts.country),
        "form_fields": [], "items_total": sum(line.quantity for line in facts.lines),
        "items_shipped": sum(line.quantity for line in facts.lines) if facts.status_id in (2, 10) else 0,
        "shipping_method": facts.shipping_method, "base_cost": money(facts.shipping_cents),
        "cost_ex_tax": money(facts.shipping_cents), "cost_inc_tax": money(facts.shipping_cents + tax),
        "cost_tax": money(tax), "cost_tax_class_id": 2, "base_handling_cost": money(0),
        "handling_cost_ex_tax": money(0), "handling_cost_inc_tax": money(0), "handling_cost_tax": money(0),
        "handling_cost_tax_class_id": 2, "shipping_zone_id": 1, "shipping_zone_name": facts.country[0],
        "shipping_quotes": _resource(store.store_hash, f"/orders/{facts.order_id}/shipping_addresses/{facts.order_id}/shipping_quotes"),
    }


def render_consignments(store: GeneratedStore, facts: OrderFacts) -> dict:
    """``include=consignments.line_items&consignment_structure=object``: shipping costs are numbers here."""
    address = render_shipping_address(store, facts)
    tax = facts.tax(facts.shipping_cents)
    shipping = {key: value for key, value in address.items() if key not in ("order_id",) and not key.startswith(("base_", "cost_", "handling_"))}
    shipping.update({
        "shipping_quotes": _resource(store.store_hash, f"/orders/{facts.order_id}/consignments/shipping/{facts.order_id}/shipping_quotes"),
        "line_items": [render_line_item(facts, line, facts.order_id) for line in facts.lines],
        "base_cost": number(facts.shipping_cents), "cost_ex_tax": number(facts.shipping_cents),
        "cost_inc_tax": number(facts.shipping_cents + tax), "cost_tax": number(tax), "cost_tax_class_id": 2,
        "base_handling_cost": 0, "handling_cost_ex_tax": 0, "handling_cost_inc_tax": 0, "handling_cost_tax": 0,
        "handling_cost_tax_class_id": 2,
    })
    return {"pickups": [], "shipping": [shipping], "downloads": [], "email": {"gift_certificates": []}}


def render_coupons(facts: OrderFacts) -> list[dict]:
    if facts.coupon is None:
        return []
    code, kind, value = facts.coupon
    coupon_id = COUPONS.index(facts.coupon) + 1
    return [{"id": facts.order_id * 10 + coupon_id, "coupon_id": coupon_id, "order_id": facts.order_id, "code": code,
             "amount": value, "type": kind, "discount": number(facts.coupon_cents)}]


def render_order(store: GeneratedStore, facts: OrderFacts, with_consignments: bool) -> dict:
    first, last, email, phone = store.order_person(facts)
    display = facts.display_currency or facts.currency
    subtotal_tax = facts.tax(facts.subtotal_cents)
    shipping_tax = facts.tax(facts.shipping_cents)
    items = sum(line.quantity for line in facts.lines)
    shipped = facts.status_id in (2, 10)
    payment_status = PAYMENT_STATUS.get(facts.status_id, "captured")
    if facts.refunds:
        payment_status = "refunded" if facts.refunded >= facts.total_inc_cents else "partially refunded"
    path = f"/orders/{facts.order_id}"
    return {
        "id": facts.order_id, "customer_id": facts.customer_id,
        "date_created": rfc2822(facts.created), "date_modified": rfc2822(facts.modified),
        "date_shipped": rfc2822(facts.modified) if shipped else "",
        "status_id": facts.status_id, "status": STATUS_NAMES[facts.status_id],
        "cart_id": store.cart_id(facts.order_id),
        "subtotal_ex_tax": money(facts.subtotal_cents), "subtotal_inc_tax": money(facts.subtotal_cents + subtotal_tax),
        "subtotal_tax": money(subtotal_tax), "base_shipping_cost": money(facts.shipping_cents),
        "shipping_cost_ex_tax": money(facts.shipping_cents), "shipping_cost_inc_tax": money(facts.shipping_cents + shipping_tax),
        "shipping_cost_tax": money(shipping_tax), "shipping_cost_tax_class_id": 2,
        "base_handling_cost": money(0), "handling_cost_ex_tax": money(0), "handling_cost_inc_tax": money(0),
        "handling_cost_tax": money(0), "handling_cost_tax_class_id": 2,
        "base_wrapping_cost": money(0), "wrapping_cost_ex_tax": money(0), "wrapping_cost_inc_tax": money(0),
        "wrapping_cost_tax": money(0), "wrapping_cost_tax_class_id": 3,
        "total_ex_tax": money(facts.total_ex_cents), "total_inc_tax": money(facts.total_inc_cents),
        "total_tax": money(facts.total_tax_cents), "items_total": items, "items_shipped": items if shipped else 0,
        "payment_method": "" if facts.status_id == 0 else "Credit Card", "payment_provider_id": "",
        "payment_status": payment_status, "refunded_amount": money(0),  # v2 spec: "always returns `0`"
        "order_is_digital": False, "store_credit_amount": money(0), "gift_certificate_amount": money(0),
        "ip_address": f"198.51.100.{facts.order_id % 250 + 1}", "ip_address_v6": "",
        "geoip_country": facts.country[0], "geoip_country_iso2": facts.country[1],
        # currencies guide, "Orders": the money is in the transactional currency ``default_currency_code``;
        # ``currency_code`` is only the currency the shopper browsed in (on a share of orders another one).
        "currency_id": CURRENCIES[display][0], "currency_code": display,
        "currency_exchange_rate": _exchange_rate(store.currency, display),
        "default_currency_id": CURRENCIES[facts.currency][0], "default_currency_code": facts.currency,
        "store_default_currency_code": store.currency,
        "store_default_to_transactional_exchange_rate": _exchange_rate(store.currency, facts.currency),
        "staff_notes": "", "customer_message": "", "discount_amount": money(facts.manual_discount_cents),
        "coupon_discount": money(facts.coupon_cents), "shipping_address_count": 1, "is_deleted": facts.archived,
        "ebay_order_id": "0", "is_tax_inclusive_pricing": False, "is_email_opt_in": facts.email_opt_in,
        "channel_id": 1, "order_source": "www", "external_source": None, "external_id": None,
        "external_merchant_id": None, "tax_provider_id": "BasicTaxProvider", "customer_locale": "en",
        "external_order_id": "",
        "billing_address": {**_address(first, last, email, phone, facts.country), "form_fields": []},
        "products": _resource(store.store_hash, f"{path}/products"),
        "shipping_addresses": _resource(store.store_hash, f"{path}/shipping_addresses"),
        "coupons": _resource(store.store_hash, f"{path}/coupons"),
        "consignments": render_consignments(store, facts) if with_consignments
        else _resource(store.store_hash, f"{path}/consignments"),
    }


def render_cart(store: GeneratedStore, facts: OrderFacts) -> dict:
    """The abandoned checkout behind an Incomplete order, as ``GET /v3/carts/{id}`` shows it."""
    _, _, email, _ = store.order_person(facts)
    items = [{
        "id": str(uuid.UUID(int=mix(store.seed, line.line_id) << 64 | line.line_id)), "variant_id": line.product_id + 1000,
        "product_id": line.product_id, "sku": line.sku, "name": line.name,
        "url": f"https://store-{store.store_hash}.mybigcommerce.com/p/{line.product_id}/", "quantity": line.quantity,
        "taxable": True, "image_url": f"https://cdn11.bigcommerce.com/s-{store.store_hash}/products/{line.product_id}/0.jpg",
        "discounts": [], "coupons": [], "discount_amount": 0, "coupon_amount": 0,
        "original_price": number(line.unit_cents), "list_price": number(line.unit_cents),
        "sale_price": number(line.unit_cents), "extended_list_price": number(line.unit_cents * line.quantity),
        "extended_sale_price": number(line.unit_cents * line.quantity), "is_require_shipping": True,
        "is_mutable": True, "added_by_promotion": False,
    } for line in facts.lines]
    return {
        "id": store.cart_id(facts.order_id), "customer_id": facts.customer_id, "channel_id": 1, "email": email,
        "currency": {"code": facts.currency}, "tax_included": False, "base_amount": number(facts.subtotal_cents),
        "discount_amount": 0, "manual_discount_amount": 0, "cart_amount": number(facts.subtotal_cents),
        "coupons": [], "discounts": [],
        "line_items": {"physical_items": items, "digital_items": [], "gift_certificates": [], "custom_items": []},
        "created_time": iso(facts.created), "updated_time": iso(facts.modified), "locale": "en",
    }
