"""The ActiveCampaign API v3 calls the load needs: look-ups, creates, updates, bulk import.

ActiveCampaign has no idempotency key, so every create is sent once (``retry_unsafe=False``):
when its answer is lost the caller looks the object up before sending it again
(``ActiveCampaignClient.create_once``). Updates, look-ups and ``contact/sync`` (an upsert by
email) are safe to repeat and use ApiSession's ordinary retries.

All clients of one account in a process share one ``TokenBucketPacer`` (5 requests/s,
no burst); across processes the Airflow pool ``activecampaign_api`` serialises the loads.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from urllib3.util import parse_url

from ecomsync.http import ApiError, ApiSession, RequestStats, TokenBucketPacer

log = logging.getLogger(__name__)

PAGE_LIMIT = 100
_pacers: dict[str, TokenBucketPacer] = {}
_pacers_lock = threading.Lock()


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "0:0:0:0:0:0:0:1"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def account_key(base_url: str) -> str:
    """The CRM account behind an API URL, spelt one way: what the advisory lock and the token bucket key on.

    ``urllib3.util.parse_url`` lower-cases scheme and host; on top of it: no default port, no trailing slash
    or dot, no user info, query or fragment, and every loopback name (``127.0.0.1``, ``::1``) is ``localhost``
    — so ``HTTPS://Acct.API-us1.com:443/`` and ``https://acct.api-us1.com`` are one account (issue 15).
    ValueError for a URL without a host.
    """
    url = parse_url(base_url.strip())
    if not url.host:
        raise ValueError(f"CRM account URL {base_url!r} has no host")
    scheme = (url.scheme or "https").lower()
    host = url.host.lower().rstrip(".")
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        host = "localhost"
    port = f":{url.port}" if url.port and url.port != DEFAULT_PORTS.get(scheme) else ""
    path = (url.path or "").rstrip("/")
    return f"{scheme}://{host}{port}{path}"


def account_pacer(base_url: str, requests_per_second: float) -> TokenBucketPacer:
    """The one token bucket of a CRM account in this process (however its URL is spelt)."""
    key = account_key(base_url)
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None or pacer.rate != requests_per_second:
            pacer = _pacers[key] = TokenBucketPacer(requests_per_second)
        return pacer


class LostAnswer(ApiError):
    """A create whose outcome is unknown (timeout, dropped connection, 5xx): look it up before resending."""


class BulkImportFailed(ApiError):
    pass


class ActiveCampaignClient:
    def __init__(self, base_url: str, token: str, *, requests_per_second: float, timeout: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.account = base_url.rstrip("/")
        self.account_key = account_key(base_url)
        self.pacer = account_pacer(self.account, requests_per_second)
        self.sleep = sleep
        # One session for the push threads: its counters are thread-safe, its token bucket is the account's.
        self.session = ApiSession(f"{self.account}/api/3", {"Api-Token": token}, pacer=self.pacer, timeout=timeout,
                                  sleep=sleep)

    def __repr__(self) -> str:
        return f"ActiveCampaignClient({self.account!r})"

    def stats(self) -> RequestStats:
        """Requests, retries and 429s so far."""
        return self.session.stats

    @property
    def requests_made(self) -> int:
        return self.session.stats.requests

    # -- generic ------------------------------------------------------------------------
    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.session.request_json("GET", path, params=params)[1]

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.session.request_json("PUT", path, json_body=body)[1]

    def post_upsert(self, path: str, body: dict[str, Any]) -> Any:
        """A POST the API treats as an upsert or a status change: safe to repeat."""
        return self.session.request_json("POST", path, json_body=body)[1]

    def post_create(self, path: str, body: dict[str, Any]) -> Any:
        """A POST that creates: sent once; an unknown outcome raises LostAnswer."""
        try:
            return self.session.request_json("POST", path, json_body=body, retry_unsafe=False)[1]
        except ApiError as exc:
            if exc.status is None or exc.status >= 500:
                raise LostAnswer(str(exc), exc.status, exc.body) from None
            raise

    def create_once(self, create: Callable[[], str], look_up: Callable[[], str | None], what: str,
                    attempts: int = 4) -> str:
        """Create an object that has no idempotency key without ever creating it twice.

        After a lost answer the object may exist: look it up, and only if absent send it again.
        """
        for attempt in range(1, attempts + 1):
            try:
                return create()
            except LostAnswer as exc:
                log.warning("%s: %s — looking it up before trying again", what, exc)
                self.sleep(min(8.0, 0.25 * 2 ** attempt))
                found = look_up()
                if found is not None:
                    return found
        raise ApiError(f"{what}: the create's answer was lost {attempts} times and the object is not there")

    def find_one(self, path: str, collection: str, params: dict[str, Any],
                 match: Callable[[dict[str, Any]], bool] = lambda item: True) -> dict[str, Any] | None:
        """The first item of a filtered listing that ``match`` accepts (the filters narrow, ``match`` decides)."""
        for item in self.iterate(path, collection, params):
            if match(item):
                return item
        return None

    def iterate(self, path: str, collection: str, params: dict[str, Any] | None = None):
        offset = 0
        while True:
            body = self.get(path, {**(params or {}), "limit": PAGE_LIMIT, "offset": offset}) or {}
            items = body.get(collection) or []
            yield from items
            total = int((body.get("meta") or {}).get("total") or 0)
            offset += len(items)
            if not items or offset >= total:
                return

    # -- connections ----------------------------------------------------------------------
    def find_connection(self, service: str, externalid: str) -> str | None:
        found = self.find_one("/connections", "connections",
                              {"filters[service]": service, "filters[externalid]": externalid},
                              lambda c: c.get("service") == service and c.get("externalid") == externalid)
        return _id(found)

    def create_connection(self, payload: dict[str, Any]) -> str:
        return self.create_once(lambda: self.post_create("/connections", {"connection": payload})["connection"]["id"],
                                lambda: self.find_connection(payload["service"], payload["externalid"]),
                                f"connection {payload['service']}:{payload['externalid']}")

    def update_connection(self, crm_id: str, payload: dict[str, Any]) -> None:
        self.put(f"/connections/{crm_id}", {"connection": payload})

    # -- contacts, tags, lists ------------------------------------------------------------
    def sync_contact(self, payload: dict[str, Any]) -> str:
        """``contact/sync`` upserts by email: repeating it is harmless."""
        return str(self.post_upsert("/contact/sync", {"contact": payload})["contact"]["id"])

    def find_contact(self, email: str) -> str | None:
        return _id(self.find_one("/contacts", "contacts", {"email": email},
                                 lambda c: (c.get("email") or "").strip().lower() == email))

    def find_tag(self, name: str) -> str | None:
        # Tag names are unique regardless of case in the CRM.
        return _id(self.find_one("/tags", "tags", {"search": name},
                                 lambda t: str(t.get("tag", "")).lower() == name.lower()))

    def create_tag(self, name: str) -> str:
        return self.create_once(
            lambda: self.post_create("/tags", {"tag": {"tag": name, "tagType": "contact",
                                                       "description": "added by the ecomsync load"}})["tag"]["id"],
            lambda: self.find_tag(name), f"tag {name!r}")

    def add_contact_tag(self, contact_id: str, tag_id: str) -> str:
        """Adding a tag the contact already has answers with the existing link: safe to repeat."""
        body = self.post_upsert("/contactTags", {"contactTag": {"contact": contact_id, "tag": tag_id}})
        return str(body["contactTag"]["id"])

    def find_list(self, name: str) -> str | None:
        return _id(self.find_one("/lists", "lists", {"filters[name]": name}, lambda item: item.get("name") == name))

    def subscribe(self, contact_id: str, list_id: str) -> str | None:
        """``contactLists`` sets a status: subscribing twice leaves one subscription."""
        body = self.post_upsert("/contactLists", {"contactList": {"list": list_id, "contact": contact_id,
                                                                  "status": 1}}) or {}
        return _id(body.get("contactList"))

    def bulk_import(self, contacts: list[dict[str, Any]], max_wait: float = 600.0) -> dict[str, Any]:
        """Queue ≤ 250 contacts (an upsert by email, safe to repeat) and wait for ``import/info``."""
        body = self.post_upsert("/import/bulk_import", {"contacts": contacts}) or {}
        batch_id = body.get("batchId")
        if not batch_id:
            raise BulkImportFailed(f"import/bulk_import queued nothing: {body!r:.300}", None, body)
        deadline = time.monotonic() + max_wait
        poll_interval = 0.25
        while True:
            info = self.get("/import/info", {"batchId": batch_id}) or {}
            if str(info.get("status", "")).lower() == "completed":
                return info
            if time.monotonic() > deadline:
                raise BulkImportFailed(f"import batch {batch_id} not completed after {max_wait:.0f}s "
                                       f"(status {info.get('status')!r})")
            self.sleep(poll_interval)
            poll_interval = min(5.0, poll_interval * 2)

    # -- e-commerce ----------------------------------------------------------------------
    def find_ecom_customer(self, connection_crm_id: str, externalid: str) -> str | None:
        return _id(self.find_one("/ecomCustomers", "ecomCustomers",
                                 {"filters[connectionid]": connection_crm_id, "filters[externalid]": externalid},
                                 lambda c: _same(c.get("connectionid"), connection_crm_id)
                                 and str(c.get("externalid")) == externalid))

    def create_ecom_customer(self, payload: dict[str, Any]) -> str:
        return self.create_once(
            lambda: self.post_create("/ecomCustomers", {"ecomCustomer": payload})["ecomCustomer"]["id"],
            lambda: self.find_ecom_customer(str(payload["connectionid"]), payload["externalid"]),
            f"ecomCustomer {payload['externalid']}")

    def update_ecom_customer(self, crm_id: str, payload: dict[str, Any]) -> None:
        self.put(f"/ecomCustomers/{crm_id}", {"ecomCustomer": payload})

    def find_ecom_order(self, connection_crm_id: str, *, externalid: str | None = None,
                        externalcheckoutid: str | None = None) -> str | None:
        field, value = ("externalid", externalid) if externalid is not None else ("externalcheckoutid",
                                                                                 externalcheckoutid)
        return _id(self.find_one("/ecomOrders", "ecomOrders",
                                 {"filters[connectionid]": connection_crm_id, f"filters[{field}]": value},
                                 lambda o: _same(o.get("connectionid"), connection_crm_id)
                                 and str(o.get(field)) == value))

    def create_ecom_order(self, payload: dict[str, Any]) -> str:
        connection = str(payload["connectionid"])
        if payload.get("externalid"):
            look_up = lambda: self.find_ecom_order(connection, externalid=payload["externalid"])  # noqa: E731
        else:
            look_up = lambda: self.find_ecom_order(connection,  # noqa: E731
                                                   externalcheckoutid=payload["externalcheckoutid"])
        return self.create_once(lambda: self.post_create("/ecomOrders", {"ecomOrder": payload})["ecomOrder"]["id"],
                                look_up, f"ecomOrder {payload.get('externalid') or payload.get('externalcheckoutid')}")

    def update_ecom_order(self, crm_id: str, payload: dict[str, Any]) -> None:
        self.put(f"/ecomOrders/{crm_id}", {"ecomOrder": payload})

    def delete_ecom_order(self, crm_id: str) -> bool:
        """``DELETE /api/3/ecomOrders/{id}`` (spec: delete-order, answers ``{}``); False when the CRM no longer
        had it (404). Safe to repeat."""
        status, _, _ = self.session.request_json("DELETE", f"/ecomOrders/{crm_id}", allow_statuses=frozenset({404}))
        return status != 404


def _id(item: dict[str, Any] | None) -> str | None:
    return None if not item or item.get("id") is None else str(item["id"])


def _same(a: Any, b: Any) -> bool:
    return str(a) == str(b)
