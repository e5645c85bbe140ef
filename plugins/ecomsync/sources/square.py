"""Square streams (one location = one CRM connection, S2), each declared with its scope.

``merchant_streams`` (``scope="merchant"``: locations, catalog, customers) are account-wide in the API
(``ListLocations``, ``SearchCatalogObjects``, ``SearchCustomers`` take no location): they are fetched once per
run per account on the merchant connection ``square-merchant:<merchant_id>``, and dbt staging spreads them to
the location connections (macro ``square_location_rows``). ``location_streams`` (``scope="location"``: orders,
payments) are fetched per location on ``square:<location_id>``.

Two defaults of ``GET /v2/payments`` would silently lose data: ``begin_time``
is one year ago and ``location_id`` is the main location only. Every payments
request here sets both. Offline payments can arrive 72 h late with old
timestamps, so payments and orders re-read a look-back window by ``updated_at``.

Records land exactly as Square returns them (P2): payments in every
``Payment.status`` (APPROVED, PENDING, COMPLETED, CANCELED, FAILED), orders in
every ``OrderState`` (no ``state_filter``), a refund as the payment's
``refunded_money``/``refund_ids`` (a refund moves the payment's ``updated_at``,
so the ``updated_at`` increment re-reads it), line items without ``name``.
Deciding what counts is dbt's job, not the extract's.

Inactive locations (``Location.status`` INACTIVE: closed now, its past payments
still real history, api-specs/README "Locations"): see ``inactive_location_skip``.
"""
from __future__ import annotations

from datetime import datetime
from functools import partial

from ecomsync import fields
from ecomsync.http import ApiError, ApiSession, Pacer
from ecomsync.streams import CursorPaginator, Request, Stream, Window, iso_z

SOURCE = "square"
SQUARE_VERSION = "2025-08-20"  # >= 2024-12-18 for sort_field=UPDATED_AT on payments
CATALOG_TYPES = ["ITEM", "ITEM_VARIATION", "CATEGORY", "IMAGE"]


# What to do with a location whose Location.status is INACTIVE (setting square.inactive_locations).
INACTIVE_POLICIES = ("history", "include", "skip")


def inactive_location_skip(policy: str, *, history_complete: bool, mode: str, is_backfill: bool) -> str | None:
    """Why an INACTIVE location is not extracted by this run, or None to extract it.

    ``history`` (the default): S3 asks for all historical payments on first connect, and a closed location's
    payments are history too; so it is extracted until its history is complete (``history_complete``: a
    historical sync finished and a later run landed its INACTIVE status, i.e. nothing paid before it closed
    is missing), then skipped by incremental and catch-up runs (a closed location takes no new payments).
    A historical run (restart, S5) or a date-range run reads it again. ``include``: extracted by every run,
    like an active location. ``skip``: never extracted; every run reports it.
    """
    if policy not in INACTIVE_POLICIES:
        raise ValueError(f"square.inactive_locations must be one of {INACTIVE_POLICIES}, not {policy!r}")
    if policy == "include":
        return None
    if policy == "skip":
        return "inactive location; square.inactive_locations is 'skip' (set 'history' to sync its history once)"
    if mode == "historical" or is_backfill or not history_complete:
        return None
    return "inactive location, history complete; a historical run (restart) reads it again"


def session_for(base_url: str, token: str, *, verify: bool = True) -> ApiSession:
    # Square publishes no rate numbers: the default pacer backs off with jitter on 429.
    return ApiSession(base_url, {"Authorization": f"Bearer {token}", "Square-Version": SQUARE_VERSION},
                      pacer=Pacer(), verify=verify)


def list_locations(session: ApiSession) -> list:
    """``GET /v2/locations`` (api.json ``ListLocationsResponse.locations``; absent when the account has none).
    The items are returned as sent, to be read with ``extract.describe_record``; an answer that is not
    ``{locations: [...]}`` is an ``ApiError``."""
    _, body, _ = session.request_json("GET", "/v2/locations")
    locations = (body.get("locations") if isinstance(body, dict) else body) or []
    if not isinstance(locations, list):
        raise ApiError(f"GET /v2/locations: expected {{locations: [...]}}, got {type(locations).__name__}")
    return locations


def _id(record: dict):
    """The record's ``id`` as sent: ``extract.describe_record`` rejects it unless it is non-empty text
    (api.json: every Square object id is a string), so a number or a missing id is a rejection with its
    reason, never a key made up by ``str()``."""
    return record["id"]


def _updated_at(record: dict) -> datetime | None:
    """``updated_at`` (api.json: RFC 3339 text); another type or unreadable text is a ``FieldError`` naming the
    field, which landing turns into a rejection with its reason."""
    return fields.iso_time(record, "updated_at")


def _time_range(window: Window) -> dict[str, str]:
    time_range = {}
    if window.start is not None:
        time_range["start_at"] = iso_z(window.start)
    if window.end is not None:
        time_range["end_at"] = iso_z(window.end)
    return time_range


def _payments_request(location_id: str, historical_start: datetime, window: Window) -> Request:
    params = {"location_id": location_id, "begin_time": iso_z(historical_start), "sort_field": "UPDATED_AT",
              "sort_order": "ASC", "limit": 100}
    if window.start is not None:
        params["updated_at_begin_time"] = iso_z(window.start)
    if window.end is not None:
        params["updated_at_end_time"] = iso_z(window.end)
    return Request(params)


def _orders_request(location_id: str, window: Window) -> Request:
    query: dict = {"sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}}
    time_range = _time_range(window)
    if time_range:
        query["filter"] = {"date_time_filter": {"updated_at": time_range}}
    # 1000 is the API's maximum (500 its default): half the requests for the same orders (bench/).
    return Request(body={"location_ids": [location_id], "limit": 1000, "return_entries": False, "query": query})


def _customers_request(window: Window) -> Request:
    body: dict = {"limit": 100, "query": {"sort": {"field": "CREATED_AT", "order": "ASC"}}}
    time_range = _time_range(window)
    if time_range:
        body["query"]["filter"] = {"updated_at": time_range}
    return Request(body=body)


def _catalog_request(window: Window) -> Request:
    body: dict = {"object_types": CATALOG_TYPES, "include_deleted_objects": True, "limit": 1000}
    if window.start is not None:
        body["begin_time"] = iso_z(window.start)  # exclusive
    return Request(body=body)


MERCHANT = "merchant"
LOCATION = "location"
MERCHANT_SOURCE = "square_merchant"  # state.connections.source of a merchant connection (not a CRM connection)


def merchant_connection_id(merchant_key: str) -> str:
    """The connection of a Square account's merchant-wide streams: ``square-merchant:<merchant_id>``
    (api.json ``Location.merchant_id``). Never a CRM connection: dbt spreads its rows to the account's
    location connections (``square:<location_id>``) in staging."""
    return f"square-merchant:{merchant_key}"


def _customer_flag(customer: dict) -> str | None:
    email = customer.get("email_address")
    if email is None:
        return "missing_email"
    return None if email.strip() else "missing_email"  # not text: describe_record flags it unreadable_field


def merchant_streams() -> tuple[Stream, ...]:
    """The account-wide streams, fetched once per run per Square account (one connection per merchant,
    ``merchant_connection_id``): ``SearchCatalogObjects``, ``SearchCustomers`` and ``ListLocations`` take no
    location and answer for the whole merchant (api.json; api-specs/README "Locations")."""
    return (
        # Every location of the account, each landed once; a location's INACTIVE status is weighed against its
        # own connection's last complete run (``tasks.inactive_history_complete``).
        Stream(name="locations", table="square_locations", path="/v2/locations",
               paginator=CursorPaginator("locations"), primary_key=_id, build_request=lambda window: Request(),
               scope=MERCHANT),
        Stream(name="catalog", table="square_catalog_objects", path="/v2/catalog/search", method="POST",
               paginator=CursorPaginator("objects"), primary_key=_id, build_request=_catalog_request,
               replication_key=_updated_at, lookback_minutes=10, scope=MERCHANT),
        Stream(name="customers", table="square_customers", path="/v2/customers/search", method="POST",
               paginator=CursorPaginator("customers"), primary_key=_id, build_request=_customers_request,
               replication_key=_updated_at, lookback_minutes=10, flag=_customer_flag, scope=MERCHANT),
    )


def location_streams(location_id: str, historical_start: datetime, lookback_hours: int) -> tuple[Stream, ...]:
    """The streams of one location's connection (``square:<location_id>``, S2): its orders and payments."""
    late_lookback = lookback_hours * 60
    return (
        Stream(name="orders", table="square_orders", path="/v2/orders/search", method="POST",
               paginator=CursorPaginator("orders"), primary_key=_id,
               build_request=partial(_orders_request, location_id), replication_key=_updated_at,
               sorted_by_replication_key=True, lookback_minutes=late_lookback, scope=LOCATION),
        Stream(name="payments", table="square_payments", path="/v2/payments",
               paginator=CursorPaginator("payments"), primary_key=_id,
               build_request=partial(_payments_request, location_id, historical_start),
               replication_key=_updated_at, sorted_by_replication_key=True, lookback_minutes=late_lookback,
               scope=LOCATION),
    )


def streams_for(location_id: str, historical_start: datetime, lookback_hours: int) -> tuple[Stream, ...]:
    """Every stream that holds data of one location: its account's merchant streams, then its own."""
    return merchant_streams() + location_streams(location_id, historical_start, lookback_hours)
