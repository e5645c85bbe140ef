"""The webhook receiver: a small FastAPI app, mounted by the Airflow plugin on the API server.

``POST /bigcommerce`` and ``POST /square`` each: verify the delivery (401 when unsigned or wrongly
signed), parse it (400 when signed but not an event), store it once in ``raw.webhook_events`` (a
redelivery is a no-op, answered 200 so the sender stops retrying), and for a new event hand the work to
Airflow (``Backend.notify``: an Asset event naming the store or location). Nothing is extracted here, so
the answer comes within milliseconds — far inside the senders' time limits (BigCommerce counts a missing
or late answer as a failure, ``https-webhook-overview.mdx``, "Callback retry mechanism").

The backend supplies the secrets and the hand-off; ``ecomsync.webhooks.airflow_backend`` is the real one.
"""
from __future__ import annotations

import json
import logging
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ecomsync.webhooks.events import EventStore, InvalidEvent, WebhookEvent, parse_bigcommerce, parse_square
from ecomsync.webhooks.signatures import (
    BIGCOMMERCE_SECRET_HEADER,
    SQUARE_SIGNATURE_HEADER,
    bigcommerce_secret_valid,
    square_signature_valid,
)

log = logging.getLogger(__name__)


class Backend(Protocol):
    def bigcommerce_secret(self) -> str | None: ...

    def square_notification_url(self) -> str | None:
        """The URL the Square subscription was registered with (what Square signs), from configuration."""

    def square_signature_key(self, refresh: bool = False) -> str | None:
        """The subscription's signature key; ``refresh`` after a mismatch (the key may have been rotated)."""

    def event_store(self) -> EventStore: ...

    def notify(self, event: WebhookEvent) -> None:
        """Tell Airflow that ``event.connection_id`` changed. May raise: the event is already stored."""


def _answer(status: int, outcome: str, **extra: object) -> JSONResponse:
    return JSONResponse({"status": outcome, **extra}, status_code=status)


def create_app(backend: Backend) -> FastAPI:
    app = FastAPI(title="ecomsync webhooks", description=__doc__, docs_url=None, redoc_url=None, openapi_url=None)

    def accept(event_source: str, body: bytes, parse) -> JSONResponse:
        try:
            event = parse(json.loads(body))
        except (ValueError, InvalidEvent) as exc:
            log.warning("%s webhook: signed but not an event: %s", event_source, exc)
            return _answer(400, "rejected", reason=str(exc))
        if not backend.event_store().record(event):
            return _answer(200, "duplicate", event_key=event.event_key)
        try:
            backend.notify(event)
        except Exception:  # the event is stored: the next run or the schedule still takes it
            log.exception("%s webhook %s stored, but Airflow was not told", event_source, event.event_key)
        return _answer(200, "stored", event_key=event.event_key, connection_id=event.connection_id)

    def handle_bigcommerce(secret_header: str | None, body: bytes) -> JSONResponse:
        if not bigcommerce_secret_valid(secret_header, backend.bigcommerce_secret()):
            return _answer(401, "unauthorized")
        return accept("bigcommerce", body, parse_bigcommerce)

    def handle_square(signature: str | None, body: bytes) -> JSONResponse:
        url = backend.square_notification_url()
        if not signature or not url:
            return _answer(401, "unauthorized")
        if not square_signature_valid(body, signature, backend.square_signature_key(), url) \
                and not square_signature_valid(body, signature, backend.square_signature_key(refresh=True), url):
            return _answer(401, "unauthorized")
        return accept("square", body, parse_square)

    # The checks and the store are blocking I/O: off the event loop, on Starlette's thread pool.
    @app.post("/bigcommerce")
    async def bigcommerce(request: Request) -> JSONResponse:
        body = await request.body()
        return await run_in_threadpool(handle_bigcommerce, request.headers.get(BIGCOMMERCE_SECRET_HEADER), body)

    @app.post("/square")
    async def square(request: Request) -> JSONResponse:
        body = await request.body()
        return await run_in_threadpool(handle_square, request.headers.get(SQUARE_SIGNATURE_HEADER), body)

    return app
