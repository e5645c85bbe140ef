"""The pipeline keeps each source's webhooks pointing at the receiver: register, repair, remove.

BigCommerce (``bigcommerce/webhooks.v3.yml``): per store, one hook per scope on ``/v3/hooks``
(``GET`` lists ``{data: [webhook_Full], meta.pagination}``; ``POST`` creates from ``webhook_Base``
``{scope, destination, is_active, headers}``; ``PUT /hooks/{id}`` takes ``webhook_Put``; ``DELETE`` removes).
Our hooks carry the shared-secret header (``signatures.BIGCOMMERCE_SECRET_HEADER``); a hook that BigCommerce
deactivated after failed deliveries (``https-webhook-overview.mdx``) is set active again.

Square (``square/api.json`` ``WebhookSubscriptions``): subscriptions belong to the merchant, not to a
location, so one subscription named ``ecomsync`` serves every location; it is removed when no location is
enabled any more (events of a disabled location are ignored by the micro-batch).

Every function returns counts ``{created, repaired, removed, unchanged}``; API errors raise
``ecomsync.http.ApiError`` (an ``AuthError`` for a bad token: retrying cannot fix it).
"""
from __future__ import annotations

import uuid

from ecomsync.http import ApiSession
from ecomsync.webhooks.signatures import BIGCOMMERCE_SECRET_HEADER

# The scopes whose events change what reaches the CRM (api-specs README, "Webhooks"; webhook-events/list.txt).
BIGCOMMERCE_SCOPES = ("store/order/created", "store/order/updated", "store/order/statusUpdated",
                      "store/order/archived", "store/order/refund/created", "store/customer/created",
                      "store/customer/updated", "store/cart/abandoned")
SQUARE_EVENT_TYPES = ("payment.created", "payment.updated", "order.created", "order.updated", "refund.created",
                      "refund.updated", "customer.created", "customer.updated")
SQUARE_SUBSCRIPTION_NAME = "ecomsync"


def bigcommerce_endpoint(receiver_url: str) -> str:
    return f"{receiver_url.rstrip('/')}/bigcommerce"


def square_endpoint(receiver_url: str) -> str:
    return f"{receiver_url.rstrip('/')}/square"


def _counts() -> dict[str, int]:
    return {"created": 0, "repaired": 0, "removed": 0, "unchanged": 0}


def list_bigcommerce_hooks(session: ApiSession) -> list[dict]:
    hooks: list[dict] = []
    page = 1
    while True:
        _, body, _ = session.request_json("GET", "/v3/hooks", params={"page": page, "limit": 250})
        hooks += (body or {}).get("data") or []
        pagination = ((body or {}).get("meta") or {}).get("pagination") or {}
        if page >= int(pagination.get("total_pages") or 1):
            return hooks
        page += 1


def _ours_bigcommerce(hook: dict, destination: str) -> bool:
    return hook.get("destination") == destination or BIGCOMMERCE_SECRET_HEADER in (hook.get("headers") or {})


def ensure_bigcommerce_hooks(session: ApiSession, receiver_url: str, secret: str) -> dict[str, int]:
    """One active hook per scope at ``<receiver_url>/bigcommerce`` with the secret header; stale ones removed."""
    destination, counts = bigcommerce_endpoint(receiver_url), _counts()
    wanted_headers = {BIGCOMMERCE_SECRET_HEADER: secret}
    ours = [h for h in list_bigcommerce_hooks(session) if _ours_bigcommerce(h, destination)]
    keep: set[int] = set()
    for scope in BIGCOMMERCE_SCOPES:
        matching = [h for h in ours if h.get("scope") == scope and h.get("destination") == destination]
        if not matching:
            session.request_json("POST", "/v3/hooks", json_body={"scope": scope, "destination": destination,
                                                                 "is_active": True, "headers": wanted_headers})
            counts["created"] += 1
            continue
        hook = matching[0]
        keep.add(hook["id"])
        if not hook.get("is_active") or (hook.get("headers") or {}) != wanted_headers:
            session.request_json("PUT", f"/v3/hooks/{hook['id']}",
                                 json_body={"is_active": True, "headers": wanted_headers})
            counts["repaired"] += 1
        else:
            counts["unchanged"] += 1
    for hook in ours:
        if hook["id"] not in keep:
            session.request_json("DELETE", f"/v3/hooks/{hook['id']}", allow_statuses=frozenset({404}))
            counts["removed"] += 1
    return counts


def remove_bigcommerce_hooks(session: ApiSession, receiver_url: str | None) -> dict[str, int]:
    """Delete every hook of ours on the store (disabled store: B11 "delete stops syncing")."""
    counts = _counts()
    destination = bigcommerce_endpoint(receiver_url) if receiver_url else ""
    for hook in list_bigcommerce_hooks(session):
        if _ours_bigcommerce(hook, destination):
            session.request_json("DELETE", f"/v3/hooks/{hook['id']}", allow_statuses=frozenset({404}))
            counts["removed"] += 1
    return counts


def list_square_subscriptions(session: ApiSession) -> list[dict]:
    subscriptions: list[dict] = []
    cursor = None
    while True:
        params = {"include_disabled": "true", **({"cursor": cursor} if cursor else {})}
        _, body, _ = session.request_json("GET", "/v2/webhooks/subscriptions", params=params)
        subscriptions += (body or {}).get("subscriptions") or []
        cursor = (body or {}).get("cursor")
        if not cursor:
            return subscriptions


def _ours_square(subscription: dict, url: str) -> bool:
    return subscription.get("name") == SQUARE_SUBSCRIPTION_NAME or subscription.get("notification_url") == url


def ensure_square_subscription(session: ApiSession, receiver_url: str) -> dict[str, int]:
    """One enabled ``ecomsync`` subscription to every event type we use, at ``<receiver_url>/square``."""
    url, counts = square_endpoint(receiver_url), _counts()
    ours = [s for s in list_square_subscriptions(session) if _ours_square(s, url)]
    if not ours:
        session.request_json("POST", "/v2/webhooks/subscriptions", json_body={
            "idempotency_key": str(uuid.uuid4()),
            "subscription": {"name": SQUARE_SUBSCRIPTION_NAME, "event_types": list(SQUARE_EVENT_TYPES),
                             "notification_url": url, "enabled": True}})
        counts["created"] += 1
    else:
        keep = ours[0]
        if not keep.get("enabled") or keep.get("notification_url") != url \
                or sorted(keep.get("event_types") or []) != sorted(SQUARE_EVENT_TYPES):
            session.request_json("PUT", f"/v2/webhooks/subscriptions/{keep['id']}", json_body={"subscription": {
                "enabled": True, "notification_url": url, "event_types": list(SQUARE_EVENT_TYPES)}})
            counts["repaired"] += 1
        else:
            counts["unchanged"] += 1
        for extra in ours[1:]:
            session.request_json("DELETE", f"/v2/webhooks/subscriptions/{extra['id']}", allow_statuses=frozenset({404}))
            counts["removed"] += 1
    return counts


def remove_square_subscription(session: ApiSession, receiver_url: str | None) -> dict[str, int]:
    counts = _counts()
    url = square_endpoint(receiver_url) if receiver_url else ""
    for subscription in list_square_subscriptions(session):
        if _ours_square(subscription, url):
            session.request_json("DELETE", f"/v2/webhooks/subscriptions/{subscription['id']}",
                                 allow_statuses=frozenset({404}))
            counts["removed"] += 1
    return counts


def square_signature_key(session: ApiSession, receiver_url: str) -> str | None:
    """The signature key of our subscription (``RetrieveWebhookSubscription`` returns it; the list does not)."""
    url = square_endpoint(receiver_url)
    for subscription in list_square_subscriptions(session):
        if _ours_square(subscription, url) and subscription.get("notification_url") == url:
            _, body, _ = session.request_json("GET", f"/v2/webhooks/subscriptions/{subscription['id']}")
            return ((body or {}).get("subscription") or {}).get("signature_key")
    return None


def sync_registrations(config, credentials_for, secret: str | None) -> dict:
    """Bring every configured store's hooks and the Square subscription in line with the configuration.

    ``credentials_for(conn_id) -> Credentials``. Enabled stores get their hooks (created or repaired),
    disabled ones lose them; Square keeps one subscription while any location is enabled. Without
    ``webhooks.receiver_url`` nothing is registered and existing hooks are left alone. A store whose
    registration fails does not stop the others; the errors are returned under ``errors``.
    """
    from ecomsync.sources import bigcommerce, square
    from ecomsync.tasks import locations_to_sync

    url = config.webhook_receiver_url
    report: dict = {"receiver_url": url, "stores": {}, "square": None, "errors": {}}
    if not url:
        report["skipped"] = "webhooks.receiver_url is not configured"
        return report
    if not secret:
        raise ValueError("the Airflow connection ecomsync_webhooks needs a password (the BigCommerce hook secret)")
    for store in config.stores:
        try:
            creds = credentials_for(store.conn_id)
            session = bigcommerce.session_for(creds.base_url, store.store_hash, creds.token)
            report["stores"][store.store_hash] = ensure_bigcommerce_hooks(session, url, secret) if store.enabled \
                else remove_bigcommerce_hooks(session, url)
        except Exception as exc:
            report["errors"][store.connection_id] = f"{type(exc).__name__}: {exc}"[:500]
    try:
        creds = credentials_for(config.square.conn_id)
        session = square.session_for(creds.base_url, creds.token)
        any_enabled = bool(locations_to_sync(config, creds))
        report["square"] = ensure_square_subscription(session, url) if any_enabled \
            else remove_square_subscription(session, url)
    except Exception as exc:
        report["errors"]["square"] = f"{type(exc).__name__}: {exc}"[:500]
    return report
