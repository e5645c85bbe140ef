"""The receiver's real backend inside Airflow's API server: secrets from Airflow connections, hand-off as an
Asset event.

Secrets:
- BigCommerce shared secret: the ``password`` of the Airflow connection ``ecomsync_webhooks``
  (``AIRFLOW_CONN_ECOMSYNC_WEBHOOKS``); the registration puts the same value in each hook's header.
- Square signature key: Square generates it per subscription (``WebhookSubscription.signature_key``, read-only),
  so the receiver reads it from Square with the token of the Square Airflow connection
  (``RetrieveWebhookSubscription``) and keeps it in memory; after a signature mismatch it reads it again
  (at most every ``KEY_REFRESH_S`` seconds), which follows a key rotation.

Hand-off: ``asset_manager.register_asset_change`` on the Asset ``webhook_events`` (what Airflow's own
``POST /api/v2/assets/events`` does), ``extra`` naming the source, the store/location and the event. The
``webhook_sync`` DAG is scheduled on that Asset; Airflow queues one run per Asset while a run is active,
so events arriving during a run are coalesced into the next one.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime

from ecomsync.webhooks.events import ASSET_NAME, ASSET_URI, EventStore, WebhookEvent
from ecomsync.webhooks.registration import square_endpoint, square_signature_key

log = logging.getLogger(__name__)

WEBHOOKS_CONN_ID = "ecomsync_webhooks"
KEY_REFRESH_S = 30.0
CACHE_S = 60.0


def webhook_secret() -> str:
    """The BigCommerce hooks' shared secret: the password of the Airflow connection ``ecomsync_webhooks``."""
    from airflow.sdk import BaseHook

    secret = BaseHook.get_connection(WEBHOOKS_CONN_ID).password
    if not secret:
        raise ValueError(f"the Airflow connection {WEBHOOKS_CONN_ID!r} needs a password (the hooks' shared secret)")
    return secret


class AirflowBackend:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: EventStore | None = None
        self._secret: tuple[float, str | None] = (0.0, None)
        self._square_key: tuple[float, str | None] = (0.0, None)

    # -- configuration and secrets ------------------------------------------------------------------
    @staticmethod
    def _receiver_url() -> str | None:
        from ecomsync.config import load_config

        return load_config().webhook_receiver_url

    def bigcommerce_secret(self) -> str | None:
        fetched_at, secret = self._secret
        if secret is None or time.monotonic() - fetched_at > CACHE_S:
            try:
                secret = webhook_secret()
            except Exception as exc:  # no such connection: every BigCommerce delivery is unsigned for us
                log.error("webhooks: %s", exc)
                secret = None
            self._secret = (time.monotonic(), secret)
        return secret

    def square_notification_url(self) -> str | None:
        url = self._receiver_url()
        return square_endpoint(url) if url else None

    def square_signature_key(self, refresh: bool = False) -> str | None:
        with self._lock:
            fetched_at, key = self._square_key
            stale = key is None or (refresh and time.monotonic() - fetched_at > KEY_REFRESH_S)
            if not stale:
                return key
            from ecomsync.airflow_support import credentials
            from ecomsync.config import load_config
            from ecomsync.sources import square

            config, url = load_config(), self._receiver_url()
            try:
                creds = credentials(config.square.conn_id)
                key = square_signature_key(square.session_for(creds.base_url, creds.token), url) if url else None
            except Exception as exc:
                log.error("webhooks: could not read the Square signature key: %s", exc)
            self._square_key = (time.monotonic(), key)
            return key

    def event_store(self) -> EventStore:
        if self._store is None:
            url = os.environ.get("WAREHOUSE_URL")
            if not url:
                raise RuntimeError("WAREHOUSE_URL is not set in the API server's environment")
            self._store = EventStore(url)
        return self._store

    # -- hand-off -----------------------------------------------------------------------------------
    def notify(self, event: WebhookEvent) -> None:
        from airflow.assets.manager import asset_manager
        from airflow.models.asset import AssetModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            asset = session.scalar(select(AssetModel).where(AssetModel.name == ASSET_NAME,
                                                            AssetModel.uri == ASSET_URI).limit(1))
            if asset is None:
                log.warning("webhooks: Asset %s is unknown to Airflow (is dags/webhook_sync.py parsed?); "
                            "event %s waits for the next run", ASSET_URI, event.event_key)
                return
            asset_manager.register_asset_change(
                asset=asset, timestamp=datetime.now(UTC), session=session, source_is_api=True,
                api_user_teams=set(),
                extra={"source": event.source, "connection_id": event.connection_id, "scope": event.scope,
                       "event_key": event.event_key})
