"""A deterministic Square merchant: locations, catalog, customers, payments and their orders.

Records are computed from ``(seed, index)`` on demand, so a merchant with
200,000+ payments costs no memory. Timestamps grow with the index: payment
``i`` is created at ``t0 + i * step + jitter`` with ``jitter < step / 4`` and
updated less than half a step later, so ``created_at`` and ``updated_at`` are
both strictly increasing in ``i``. Any time range is therefore an index range
found by bisection, and any page is served in time independent of the size.

Changes made later (time travel, fixtures) live in ``explicit`` dictionaries
keyed by id that override the generated record of the same id; ``SquareStore``
in ``sandbox/square.py`` merges both.

What the data contains (all deterministic by seed): 3 active locations (the
first is the main one, USD; then EUR and GBP) and 1 inactive location (CAD,
closed after the first 60 % of the history, so it holds payments both older
and younger than the API's one-year default); names with non-ASCII characters;
payments over the last two years (so the API's one-year default loses some)
at every location; payments in every ``Payment.status`` (api.json, Payment:
"APPROVED, PENDING, COMPLETED, CANCELED, or FAILED"): a declined card
(``FAILED``) followed by a ``COMPLETED`` retry on the same order and customer,
lone declines whose order stays ``OPEN``, voided authorizations (``CANCELED``,
their order ``CANCELED``), and at the end of the history one ``PENDING`` bank
transfer and one ``APPROVED`` (authorized, not captured) card payment; ~12 % of
the completed payments refunded, half of them partially; offline payments;
customers without email (~15 %), with ``preferences.email_unsubscribed``, and
customers who never buy; orders with ORDER- and LINE_ITEM-scoped discounts,
taxes, tenders and a few ``CUSTOM_AMOUNT`` line items without a catalog object,
half of them without a ``name`` (OrderLineItem: only ``quantity`` is required);
a catalog of categories, images, items and variations (one item deleted).
"""
from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.people import person

MS = 1000  # microseconds per millisecond: every time here is integer microseconds since the epoch
SECOND = 1000 * MS
DAY = 86400 * SECOND
HISTORY = 730 * DAY
MERCHANT_ID = "MLSANDBOX7QK2P"

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_INDEX_DIGITS = 7


def to_us(value: datetime) -> int:
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * SECOND + delta.microseconds


def rfc3339(us: int) -> str:
    """Square's own format: UTC, millisecond precision, ``Z``."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(value: str) -> int:
    """Microseconds since the epoch; raises ValueError for anything that is not RFC 3339 with an offset."""
    if not isinstance(value, str) or "T" not in value:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone offset")
    return to_us(parsed)


def money(amount: int, currency: str) -> dict:
    return {"amount": amount, "currency": currency}


def make_id(seed: int, kind: str, index: int, length: int) -> str:
    """An uppercase id that encodes ``index`` in its last characters (decoded by ``id_index``)."""
    digest = hashlib.blake2b(f"{seed}:{kind}:{index}".encode(), digest_size=32).digest()
    prefix = "".join(_ID_ALPHABET[b % 36] for b in digest)[: length - _INDEX_DIGITS]
    tail = ""
    rest = index
    for _ in range(_INDEX_DIGITS):
        rest, digit = divmod(rest, 36)
        tail = _ID_ALPHABET[digit] + tail
    return prefix + tail


def id_index(seed: int, kind: str, record_id: str, length: int) -> int | None:
    """The index ``make_id`` encoded, or None when ``record_id`` is not one of ours."""
    if len(record_id) != length:
        return None
    try:
        index = int(record_id[-_INDEX_DIGITS:], 36)
    except ValueError:
        return None
    return index if make_id(seed, kind, index, length) == record_id else None


@dataclass(frozen=True)
class LocationTemplate:
    name: str
    business_name: str
    currency: str
    country: str
    timezone: str
    language: str
    address: dict
    tax_basis_points: int


LOCATIONS = (
    LocationTemplate("Hauptstraße Café", "Café Größenwahn", "USD", "US", "America/New_York", "en-US",
                     {"address_line_1": "100 Main St", "locality": "New York", "administrative_district_level_1": "NY",
                      "postal_code": "10001", "country": "US"}, 875),
    LocationTemplate("Kreuzberg Kiosk", "Café Größenwahn", "EUR", "DE", "Europe/Berlin", "de-DE",
                     {"address_line_1": "Oranienstraße 25", "locality": "Berlin", "postal_code": "10999",
                      "country": "DE"}, 1900),
    LocationTemplate("Café Søndergård", "Café Größenwahn", "GBP", "GB", "Europe/London", "en-GB",
                     {"address_line_1": "12 Brick Ln", "locality": "London", "postal_code": "E1 6PU",
                      "country": "GB"}, 2000),
    LocationTemplate("Pop-up Montréal", "Café Größenwahn", "CAD", "CA", "America/Toronto", "fr-CA",
                     {"address_line_1": "1 Rue Sainte-Catherine", "locality": "Montréal",
                      "administrative_district_level_1": "QC", "postal_code": "H2X 1K4", "country": "CA"}, 1498),
)
# How often each location appears in the repeating pattern of payments (main location first).
LOCATION_WEIGHTS = (5, 3, 2, 1)
INACTIVE_LOCATION = 3  # closed after INACTIVE_AFTER of the history; its later slots go to the main location
INACTIVE_AFTER = 0.6  # closed ~292 days ago: part of its history is older than a year, part younger

# Payment.status values (api.json, Payment.status; CardPaymentDetails.status for the card's side).
PAYMENT_STATUSES = ("APPROVED", "PENDING", "COMPLETED", "CANCELED", "FAILED")
# Which generated payments are not plain completed sales (by index; see SquareData.payment_status).
DECLINED_THEN_RETRIED = (23, 5)  # i % 23 == 5: a FAILED card, then payment i + 1 COMPLETES the same order
VOIDED = (31, 17)  # i % 31 == 17: an authorization voided (CANCELED; its order CANCELED)
DECLINED_ALONE = (41, 29)  # i % 41 == 29: a FAILED card never retried (its order stays OPEN)
# Card-present authorizations are cancelled automatically after this (Payment.delay_duration default "PT36H").
DELAY_DURATION = 36 * 3600 * 1000 * 1000

CATEGORIES = ("Kaffee & Tee", "Pâtisserie", "Säfte & Limonaden", "Merch")
ITEMS = (  # name, category, image or None, variations (name, price in cents)
    ("Flat White", 0, 0, (("Regular", 420), ("Large", 510))),
    ("Matcha Latte", 0, 1, (("Regular", 480),)),
    ("Croissant au beurre", 1, 2, (("Single", 325),)),
    ("Zimtschnecke", 1, None, (("Single", 375), ("Box of 4", 1350))),
    ("Rhabarberschorle", 2, 3, (("0,33 l", 390),)),
    ("Cold Brew Ça Va", 2, None, (("Bottle", 550),)),
    ("Tote Bag „Größenwahn“", 3, 4, (("One size", 1800),)),
    ("Ceramic Mug", 3, None, (("White", 1400), ("Black", 1400))),
    ("Seasonal Strudel", 1, None, (("Slice", 450),)),  # discontinued: deleted from the catalog
)
DELETED_ITEM = 8
IMAGE_COUNT = 5
DISCOUNTS = (("Stammkunden 10 %", "FIXED_PERCENTAGE", 10), ("Happy Hour", "FIXED_PERCENTAGE", 20),
             ("Coupon 2,00", "FIXED_AMOUNT", 200))


@dataclass(frozen=True)
class PaymentPlan:
    created: int
    updated: int
    refund: str | None  # None, "full" or "partial"
    status: str = "COMPLETED"  # Payment.status


class SquareData:
    """The generated part of the merchant; see the module docstring."""

    def __init__(self, seed: int, anchor: datetime, payments: int, customers: int):
        if payments < 0 or customers < 0:
            raise ValueError("sizes must not be negative")
        if payments > HISTORY // (8 * MS) or customers > HISTORY // (8 * MS):
            raise ValueError("too many records for two years of millisecond timestamps")
        self.seed = seed
        self.anchor = to_us(anchor) // MS * MS
        self.t0 = self.anchor - HISTORY
        self.payment_count = payments
        self.customer_count = customers
        self.payment_step = HISTORY // max(payments, 1) // MS * MS
        self.customer_step = HISTORY // max(customers, 1) // MS * MS
        self.locations = [self._location(k) for k in range(len(LOCATIONS))]
        self.main_location_id = self.locations[0]["id"]
        pattern = [k for k, weight in enumerate(LOCATION_WEIGHTS) for _ in range(weight)]
        random.Random(f"{seed}:location-pattern").shuffle(pattern)
        self.location_pattern = pattern
        self.inactive_cutoff = int(payments * INACTIVE_AFTER)
        self.catalog = self._catalog()
        self.variations = [o for o in self.catalog if o["type"] == "ITEM_VARIATION" and not o.get("is_deleted")]
        self.item_names = {v["id"]: obj["item_data"]["name"] for obj in self.catalog if obj["type"] == "ITEM"
                           for v in obj["item_data"]["variations"]}

    def rng(self, kind: str, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{kind}:{index}")

    # -- locations ----------------------------------------------------------------
    def _location(self, k: int) -> dict:
        template = LOCATIONS[k]
        location_id = make_id(self.seed, "location", k, 13)
        return {
            "id": location_id, "name": template.name, "business_name": template.business_name,
            "address": template.address, "timezone": template.timezone,
            "capabilities": ["CREDIT_CARD_PROCESSING"],
            "status": "INACTIVE" if k == INACTIVE_LOCATION else "ACTIVE",
            "created_at": rfc3339(self.anchor - HISTORY - (len(LOCATIONS) - k) * DAY),
            "merchant_id": MERCHANT_ID, "country": template.country, "language_code": template.language,
            "currency": template.currency, "type": "PHYSICAL", "mcc": "5814",
            "website_url": f"https://cafe-groessenwahn.example.com/{location_id.lower()}",
            "logo_url": f"https://images.example.com/locations/{location_id}/logo.png",
        }

    def location_slot(self, payment_index: int) -> int:
        if payment_index > 0 and self.declined_first(payment_index - 1):
            payment_index -= 1  # a retry is paid where the declined card was
        slot = self.location_pattern[payment_index % len(self.location_pattern)]
        if slot == INACTIVE_LOCATION and payment_index >= self.inactive_cutoff:
            return 0
        return slot

    def slots_index_end(self, slots: set[int]) -> int | None:
        """No payment at or past this index is at one of ``slots`` (None: no such bound)."""
        if not slots:
            return 0
        return self.inactive_cutoff if slots == {INACTIVE_LOCATION} else None

    # -- catalog ------------------------------------------------------------------------
    def _catalog(self) -> list[dict]:
        def stamp(kind: str, index: int) -> tuple[str, int]:
            updated = self.t0 - DAY + int(self.rng(f"catalog-{kind}", index).random() * (HISTORY // 2))
            return rfc3339(updated // MS * MS), updated // MS

        def base(kind: str, object_type: str, index: int, length: int = 24) -> dict:
            updated_at, version = stamp(kind, index)
            return {"type": object_type, "id": make_id(self.seed, f"catalog-{kind}", index, length),
                    "updated_at": updated_at, "version": version, "is_deleted": False,
                    "present_at_all_locations": True}

        objects = []
        images = []
        for k in range(IMAGE_COUNT):
            image = base("image", "IMAGE", k)
            image["image_data"] = {"name": f"photo-{k}.jpg", "caption": f"Produktfoto {k + 1}",
                                   "url": f"https://items-images.example.com/files/{image['id']}/original.jpeg"}
            images.append(image)
        categories = []
        for k, name in enumerate(CATEGORIES):
            category = base("category", "CATEGORY", k)
            category["category_data"] = {"name": name, "category_type": "REGULAR_CATEGORY", "is_top_level": True}
            categories.append(category)
        for k, (name, category_k, image_k, variations) in enumerate(ITEMS):
            item = base("item", "ITEM", k)
            category_id = categories[category_k]["id"]
            variation_objects = []
            for v, (variation_name, price) in enumerate(variations):
                variation = base("variation", "ITEM_VARIATION", k * 10 + v)
                variation["item_variation_data"] = {
                    "item_id": item["id"], "name": variation_name, "sku": f"SKU-{k:02d}{v}",
                    "ordinal": v, "pricing_type": "FIXED_PRICING", "price_money": money(price, "USD"),
                    "sellable": True, "stockable": True}
                variation_objects.append(variation)
            item["item_data"] = {
                "name": name, "description": f"{name} — frisch aus der Hauptstraße.",
                "description_plaintext": f"{name} — frisch aus der Hauptstraße.",
                "categories": [{"id": category_id, "ordinal": 0}], "reporting_category": {"id": category_id},
                "image_ids": [images[image_k]["id"]] if image_k is not None else [],
                "variations": variation_objects, "product_type": "REGULAR", "is_taxable": True,
                "ecom_uri": f"https://cafe-groessenwahn.example.com/product/{item['id'].lower()}"}
            if k == DELETED_ITEM:
                for obj in [item, *variation_objects]:
                    obj["is_deleted"] = True
            objects.append(item)
            objects.extend(variation_objects)
        return images + categories + objects

    def catalog_object(self, object_id: str) -> dict | None:
        for obj in self.catalog:
            if obj["id"] == object_id:
                return obj
        return None

    # -- customers ----------------------------------------------------------------------
    def customer_id(self, j: int) -> str:
        return make_id(self.seed, "customer", j, 26)

    def customer_index(self, customer_id: str) -> int | None:
        j = id_index(self.seed, "customer", customer_id, 26)
        return j if j is not None and j < self.customer_count else None

    def customer_times(self, j: int) -> tuple[int, int]:
        rng = self.rng("customer-time", j)
        created = self.t0 + j * self.customer_step + int(rng.random() * self.customer_step / 4) // MS * MS
        updated = created + max(MS, int(rng.random() * self.customer_step / 2) // MS * MS)
        return created, updated

    def customer_buys(self, j: int) -> bool:
        """About one customer in five never pays (S3: customers without payments)."""
        return self.rng("customer-buys", j).random() >= 0.2

    def customer(self, j: int) -> dict:
        created, updated = self.customer_times(j)
        rng = self.rng("customer", j)
        who = person(self.seed, j)
        record = {"id": self.customer_id(j), "created_at": rfc3339(created), "updated_at": rfc3339(updated),
                  "given_name": who.first_name, "family_name": who.last_name,
                  "phone_number": who.phone,
                  "preferences": {"email_unsubscribed": rng.random() < 0.25},
                  "creation_source": rng.choice(["DIRECTORY", "THIRD_PARTY", "INSTANT_PROFILE", "LOYALTY"]),
                  "version": 1 + rng.randrange(5)}
        if rng.random() >= 0.15:  # the rest have no email (S1)
            record["email_address"] = who.email
        if rng.random() < 0.1:
            record["reference_id"] = f"LOYALTY-{j:06d}"
        return record

    # -- payments and their orders ---------------------------------------------------------
    def payment_id(self, i: int) -> str:
        return make_id(self.seed, "payment", i, 29)

    def order_id(self, i: int) -> str:
        return make_id(self.seed, "order", i, 29)

    def payment_index(self, payment_id: str) -> int | None:
        i = id_index(self.seed, "payment", payment_id, 29)
        return i if i is not None and i < self.payment_count else None

    def order_index(self, order_id: str) -> int | None:
        i = id_index(self.seed, "order", order_id, 29)
        if i is None or i >= self.payment_count or (i > 0 and self.declined_first(i - 1)):
            return None  # a retry's index holds no order of its own
        return i

    def declined_first(self, i: int) -> bool:
        """Payment ``i`` is a declined card whose retry, payment ``i + 1``, completes the same order."""
        modulus, rest = DECLINED_THEN_RETRIED
        return (i % modulus == rest and i + 1 < self.payment_count - 2
                and (i + 1 < self.inactive_cutoff) == (i < self.inactive_cutoff))

    def payment_status(self, i: int) -> str:
        """Payment.status of generated payment ``i`` (api.json, Payment.status)."""
        if self.declined_first(i):
            return "FAILED"
        if i > 0 and self.declined_first(i - 1):
            return "COMPLETED"  # the retry
        if i == self.payment_count - 1 and i >= 2:
            return "APPROVED"  # authorized a moment ago, not captured yet (delay_action CANCEL)
        if i == self.payment_count - 2 and i >= 2:
            return "PENDING"  # a bank transfer still clearing
        if i % VOIDED[0] == VOIDED[1]:
            return "CANCELED"
        if i % DECLINED_ALONE[0] == DECLINED_ALONE[1]:
            return "FAILED"
        return "COMPLETED"

    def payment_plan(self, i: int) -> PaymentPlan:
        rng = self.rng("payment-time", i)
        step = self.payment_step
        created = self.t0 + int(i * step + rng.random() * step / 4) // MS * MS
        roll = rng.random()
        status = self.payment_status(i)
        if status in ("APPROVED", "PENDING") and i >= self.payment_count - 2:
            # Still in flight at the anchor: authorized an hour ago (its delay_action is still ahead), a
            # transfer two hours ago. Later than the regular time only, so times still grow with the index.
            created = max(created, self.anchor - (SECOND * 3600 * (self.payment_count - i)))
        refund = ("full" if roll < 0.06 else "partial" if roll < 0.12 else None) if status == "COMPLETED" else None
        # A refund or a voided authorization comes up to half a step later; otherwise seconds.
        late = step / 2 if refund or status == "CANCELED" else min(step / 4, 5 * SECOND)
        updated = created + max(MS, int(rng.random() * late) // MS * MS)
        return PaymentPlan(created, updated, refund, status)

    def order_created(self, i: int) -> int:
        """The order is opened shortly before its payment (a constant offset keeps the order)."""
        return self.payment_plan(i).created - min(60 * SECOND, self.payment_step // 8 // MS * MS)

    def order_times(self, i: int) -> dict[str, int]:
        """``created_at``, ``updated_at`` and ``closed_at`` (the sort keys) of the order at index ``i``.

        Each is non-decreasing in ``i`` and distinct, so ranges are index ranges. The order of a declined
        card lives at the declined payment's index and closes with the retry; the retry's index holds no
        order (``sale`` gives None) and keys just above the shared order's."""
        if i > 0 and self.declined_first(i - 1):
            retry = self.payment_plan(i)
            return {"created_at": self.order_created(i), "updated_at": retry.updated + 1,
                    "closed_at": retry.created + 1}
        plan = self.payment_plan(i + 1) if self.declined_first(i) else self.payment_plan(i)
        closed = plan.updated if plan.status == "CANCELED" else plan.created
        return {"created_at": self.order_created(i), "updated_at": plan.updated, "closed_at": closed}

    def sale(self, i: int) -> tuple[dict, dict | None]:
        """Payment ``i`` and its order (None for the retry of a declined card: its order is at ``i - 1``)."""
        if i > 0 and self.declined_first(i - 1):
            return self._build(i - 1, i, self.payment_id(i))[0], None
        if self.declined_first(i):
            declined, _ = self._build(i, i, self.payment_id(i))
            _, order = self._build(i, i + 1, self.payment_id(i + 1))
            return declined, order
        return self._build(i, i, self.payment_id(i))

    def _build(self, sale_index: int, payment_index: int, payment_id: str) -> tuple[dict, dict]:
        """The sale ``sale_index`` (lines, customer, location, order) paid by payment ``payment_index``."""
        plan = self.payment_plan(payment_index)
        rng = self.rng("sale", sale_index)
        slot = self.location_slot(sale_index)
        customer_id = None
        if self.customer_count:
            j = rng.randrange(0, min(self.customer_count - 1,
                                     sale_index * self.customer_count // max(self.payment_count, 1)) + 1)
            customer_id = self.customer_id(j) if self.customer_buys(j) else None
        customer = self.customer(self.customer_index(customer_id)) if customer_id else None
        custom = None
        if sale_index % 61 == 7:
            custom = "nameless" if (sale_index // 61) % 2 == 0 else "Custom Amount"
        times = self.order_times(sale_index)
        return build_sale(
            rng=rng, payment_id=payment_id, order_id=self.order_id(sale_index), location=self.locations[slot],
            tax_basis_points=LOCATIONS[slot].tax_basis_points, variations=self.variations,
            item_names=self.item_names, customer=customer, created=plan.created, order_created=times["created_at"],
            updated=plan.updated, refund=plan.refund, custom_amount=custom, offline=rng.random() < 0.05,
            receipt_number=payment_id[:4], status=plan.status,
            order_updated=times["updated_at"], order_closed=times["closed_at"])


def build_sale(*, rng: random.Random, payment_id: str, order_id: str, location: dict, tax_basis_points: int,
               variations: list[dict], item_names: dict[str, str], customer: dict | None, created: int, order_created: int, updated: int,
               refund: str | None, custom_amount: str | None, offline: bool, receipt_number: str,
               offline_client_created: int | None = None, status: str = "COMPLETED",
               order_updated: int | None = None, order_closed: int | None = None,
               amount: int | None = None) -> tuple[dict, dict]:
    """A payment and its order, with totals that add up in integer cents.

    ``status`` is the payment's Payment.status; the order follows it (OrderState, api.json): COMPLETED
    when paid, CANCELED when the payment was cancelled, otherwise OPEN (nothing taken yet, no tender).
    ``custom_amount``: None, ``"nameless"`` (a CUSTOM_AMOUNT line without ``name``) or the line's name.
    ``amount``: one CUSTOM_AMOUNT line of exactly this many minor units, untaxed and undiscounted."""
    if status not in PAYMENT_STATUSES:
        raise ValueError(f"status must be one of {PAYMENT_STATUSES}, not {status!r}")
    currency = location["currency"]
    location_id = location["id"]
    lines: list[dict[str, Any]] = []
    if amount is not None:
        if not isinstance(amount, int) or amount <= 0:
            raise ValueError("amount must be a positive integer (minor units)")
        lines.append({"uid": "li-0", "name": custom_amount, "quantity": "1", "item_type": "CUSTOM_AMOUNT",
                      "price": amount, "variation": None})
        tax_basis_points = 0
    for n in range(0 if amount is not None else 1 + rng.randrange(3)):
        quantity = 1 + rng.randrange(3)
        if (custom_amount and n == 0) or not variations:
            lines.append({"uid": f"li-{n}", "name": custom_amount or "Custom Amount", "quantity": str(quantity),
                          "item_type": "CUSTOM_AMOUNT", "price": 100 * (1 + rng.randrange(30)), "variation": None})
            continue
        variation = rng.choice(variations)
        lines.append({"uid": f"li-{n}", "quantity": str(quantity), "item_type": "ITEM", "variation": variation,
                      "price": variation["item_variation_data"]["price_money"]["amount"]})
    discount = DISCOUNTS[rng.randrange(len(DISCOUNTS))] if rng.random() < 0.3 and amount is None else None
    order_discounts = []
    line_items = []
    totals = {"gross": 0, "discount": 0, "tax": 0}
    for n, line in enumerate(lines):
        gross = line["price"] * int(line["quantity"])
        line_discount = 0
        applied = []
        if discount is not None:
            name, kind, value = discount
            if kind == "FIXED_PERCENTAGE":
                line_discount = gross * value // 100
                applied = [{"uid": f"ad-{n}", "discount_uid": "disc-0", "applied_money": money(line_discount, currency)}]
            elif n == 0:  # a fixed amount applies to the first line only
                line_discount = min(value, gross)
                applied = [{"uid": f"ad-{n}", "discount_uid": "disc-0", "applied_money": money(line_discount, currency)}]
        tax = (gross - line_discount) * tax_basis_points // 10000
        item: dict[str, Any] = {"uid": line["uid"], "quantity": line["quantity"], "item_type": line["item_type"],
                "base_price_money": money(line["price"], currency),
                "variation_total_price_money": money(gross, currency), "gross_sales_money": money(gross, currency),
                "total_discount_money": money(line_discount, currency), "total_tax_money": money(tax, currency),
                "total_money": money(gross - line_discount + tax, currency),
                "total_service_charge_money": money(0, currency)}
        if line["variation"] is not None:
            variation = line["variation"]
            item["catalog_object_id"] = variation["id"]
            item["catalog_version"] = variation["version"]
            item["variation_name"] = variation["item_variation_data"]["name"]
            item["name"] = item_names[variation["id"]]
        elif line["name"] not in (None, "nameless"):
            item["name"] = line["name"]
        if applied:
            item["applied_discounts"] = applied
        line_items.append(item)
        totals["gross"] += gross
        totals["discount"] += line_discount
        totals["tax"] += tax
    if discount is not None:
        name, kind, value = discount
        order_discount = {"uid": "disc-0", "name": name, "type": kind,
                          "applied_money": money(totals["discount"], currency),
                          "scope": "ORDER" if kind == "FIXED_PERCENTAGE" else "LINE_ITEM"}
        if kind == "FIXED_PERCENTAGE":
            order_discount["percentage"] = str(value)
        else:
            order_discount["amount_money"] = money(value, currency)
        order_discounts.append(order_discount)
    total = totals["gross"] - totals["discount"] + totals["tax"]
    # Only a COMPLETED payment took money; a bank transfer is PENDING while it clears; APPROVED, CANCELED
    # and FAILED are card states (CardPaymentDetails.status AUTHORIZED, VOIDED, FAILED).
    by_card = rng.random() < 0.8 or status in ("APPROVED", "CANCELED", "FAILED")
    by_bank = status == "PENDING"
    refunded = total if refund == "full" else max(1, total * (10 + rng.randrange(60)) // 100) if refund else 0
    refund_id = f"{payment_id}_R{order_id[:20]}"
    approved = total if status in ("APPROVED", "PENDING", "COMPLETED") else 0

    payment = {
        "id": payment_id, "created_at": rfc3339(created), "updated_at": rfc3339(updated),
        "amount_money": money(total, currency), "total_money": money(total, currency),
        "approved_money": money(approved, currency), "status": status,
        "source_type": "BANK_ACCOUNT" if by_bank else "CARD" if by_card else "CASH", "location_id": location_id,
        "order_id": order_id,
        "capabilities": ["EDIT_AMOUNT_UP", "EDIT_AMOUNT_DOWN"] if not refund and status == "COMPLETED" else [],
        "receipt_number": receipt_number, "receipt_url": f"https://squareup.com/receipt/preview/{payment_id}",
        "application_details": {"square_product": "SQUARE_POS", "application_id": "sq0idp-sandbox"},
        "version_token": f"v{updated // MS}",
    }
    if by_bank:
        payment["bank_account_details"] = {
            "bank_name": "Sandbox Community Bank", "transfer_type": "ACH", "account_ownership_type": "INDIVIDUAL",
            "fingerprint": f"sq-1-{payment_id[:20]}", "country": "US",
            "statement_description": "SQ *CAFE GROESSENWAHN",
            "ach_details": {"routing_number": "011000015", "account_number_suffix": f"{rng.randrange(1000):03d}",
                            "account_type": "CHECKING"}}
    elif by_card:
        brand = rng.choice(["VISA", "MASTERCARD", "AMERICAN_EXPRESS"])
        last_4 = f"{rng.randrange(10000):04d}"
        card_status = {"APPROVED": "AUTHORIZED", "CANCELED": "VOIDED", "FAILED": "FAILED"}.get(status, "CAPTURED")
        payment["card_details"] = {"status": card_status, "entry_method": rng.choice(["CONTACTLESS", "EMV"]),
                                   "card": {"card_brand": brand, "last_4": last_4, "card_type": "CREDIT",
                                            "exp_month": 1 + rng.randrange(12), "exp_year": 2027 + rng.randrange(4)},
                                   "cvv_status": "CVV_NOT_CHECKED", "avs_status": "AVS_NOT_CHECKED"}
        if status == "FAILED":
            payment["card_details"]["errors"] = [{"category": "PAYMENT_METHOD_ERROR", "code": "GENERIC_DECLINE",
                                                  "detail": "Authorization error: 'GENERIC_DECLINE'"}]
        if status in ("APPROVED", "CANCELED"):
            # Payment.delay_duration / delay_action / delayed_until: an authorization not captured in time
            # is cancelled by Square (card-present default PT36H).
            payment.update(delay_duration="PT36H", delay_action="CANCEL",
                           delayed_until=rfc3339(created + DELAY_DURATION))
        if status == "COMPLETED":
            payment["processing_fee"] = [{"effective_at": rfc3339(created), "type": "INITIAL",
                                          "amount_money": money(total * 26 // 1000 + 10, currency)}]
    else:
        tendered = -(-total // 500) * 500
        payment["cash_details"] = {"buyer_supplied_money": money(tendered, currency),
                                   "change_back_money": money(tendered - total, currency)}
    if customer is not None:
        payment["customer_id"] = customer["id"]
        if by_card and customer.get("email_address"):
            payment["buyer_email_address"] = customer["email_address"]
    if refund:
        payment["refunded_money"] = money(refunded, currency)
        payment["refund_ids"] = [refund_id]
    if offline or offline_client_created is not None:
        payment["is_offline_payment"] = True
        payment["offline_payment_details"] = {"client_created_at": rfc3339(
            offline_client_created if offline_client_created is not None else created)}

    tender = tender_for(payment)
    # OrderState: COMPLETED = fully paid, CANCELED = not paid (terminal, closed_at set), OPEN = not paid yet.
    state = {"COMPLETED": "COMPLETED", "CANCELED": "CANCELED"}.get(status, "OPEN")
    order = {
        "id": order_id, "location_id": location_id, "source": {"name": "Square Point of Sale"},
        "line_items": line_items,
        "created_at": rfc3339(order_created), "updated_at": rfc3339(updated if order_updated is None else order_updated),
        "state": state, "version": 3 if refund or state == "CANCELED" else 2 if state == "COMPLETED" else 1,
        "total_money": money(total, currency), "total_tax_money": money(totals["tax"], currency),
        "total_discount_money": money(totals["discount"], currency), "total_tip_money": money(0, currency),
        "total_service_charge_money": money(0, currency),
        "net_amount_due_money": money(0 if state == "COMPLETED" else total, currency),
    }
    if state == "COMPLETED":
        order["tenders"] = [tender]
    if state != "OPEN":
        closed = order_closed if order_closed is not None else created if state == "COMPLETED" else updated
        order["closed_at"] = rfc3339(closed)
    if order_discounts:
        order["discounts"] = order_discounts
    if customer is not None:
        order["customer_id"] = customer["id"]
    if rng.random() < 0.2:
        order["fulfillments"] = [{"uid": "ful-0", "type": "PICKUP",
                                  "state": {"OPEN": "PROPOSED"}.get(state, state)}]
    if refund:
        order["refunds"] = [refund_record(refund_id, location_id, order_id, tender["id"], updated, refunded, currency)]
    return payment, order


def tender_for(payment: dict) -> dict:
    """The order's Tender for a completed payment (api.json, Tender: type, card_details / cash_details)."""
    tender = {"id": f"T{payment['id'][1:]}", "location_id": payment["location_id"],
              "transaction_id": payment["order_id"], "created_at": payment["created_at"],
              "amount_money": dict(payment["amount_money"]), "payment_id": payment["id"]}
    if "card_details" in payment:
        card = payment["card_details"]
        tender.update(type="CARD", card_details={"status": "CAPTURED", "entry_method": card["entry_method"],
                                                 "card": {"card_brand": card["card"]["card_brand"],
                                                          "last_4": card["card"]["last_4"]}})
    elif "cash_details" in payment:
        cash = payment["cash_details"]
        tender.update(type="CASH", cash_details={"buyer_tendered_money": dict(cash["buyer_supplied_money"]),
                                                 "change_back_money": dict(cash["change_back_money"])})
    else:
        tender["type"] = "BANK_ACCOUNT"
    if payment.get("customer_id"):
        tender["customer_id"] = payment["customer_id"]
    return tender


def refund_record(refund_id: str, location_id: str, order_id: str, tender_id: str, at: int, amount: int,
                  currency: str) -> dict:
    return {"id": refund_id, "location_id": location_id, "transaction_id": order_id, "tender_id": tender_id,
            "created_at": rfc3339(at), "reason": "Returned goods", "amount_money": money(amount, currency),
            "status": "APPROVED"}


def bisect_index(count: int, key_of, target, right: bool = False) -> int:
    """The first index whose key is >= ``target`` (> with ``right``); keys strictly increase with the index."""
    class _Keys:
        def __len__(self) -> int:
            return count

        def __getitem__(self, index: int) -> int:
            return key_of(index)

    return (bisect.bisect_right if right else bisect.bisect_left)(_Keys(), target)
