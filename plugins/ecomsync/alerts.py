"""Telling a person when the pipeline fails: Airflow notifiers built from ``alerts`` in ``pipeline.yml`` (P6).

- ``webhook_conn_id``: an Airflow connection (``conn_type`` http) whose host is the full URL to POST to
  (e.g. a Slack/Teams incoming webhook; a token in the URL stays in the connection, never in the repo).
  The body is JSON: ``{"event", "dag_id", "task_id", "run_id", "map_index", "rendered_map_index",
  "try_number", "error", "log_url"}``.
- ``email`` + ``email_conn_id``: the smtp provider's ``SmtpNotifier`` over that SMTP connection.
- ``crm_load_deadline_hours``: an Airflow 3 ``DeadlineAlert`` on ``load_crm`` (reference: the run's queue
  time) fires the same notifiers when a load has not succeeded within that many hours.
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import requests
from airflow.sdk import BaseHook, BaseNotifier

from ecomsync.config import AlertSettings

WEBHOOK_TIMEOUT_SECONDS = 10


class WebhookNotifier(BaseNotifier):
    """POST a JSON summary of a failed task / missed deadline to the URL held in an Airflow connection."""

    template_fields = ("event",)

    def __init__(self, conn_id: str, event: str = "task_failed", **kwargs: Any):
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.event = event

    def url(self) -> str:
        conn = BaseHook.get_connection(self.conn_id)
        host = conn.host or ""
        if not host:
            raise ValueError(f"Airflow connection {self.conn_id!r} needs a host: the webhook URL")
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
        return host

    def notify(self, context: Any) -> None:
        payload = alert_payload(self.event, context)
        response = requests.post(self.url(), data=json.dumps(payload, default=str),
                                 headers={"Content-Type": "application/json"}, timeout=WEBHOOK_TIMEOUT_SECONDS)
        response.raise_for_status()

    async def async_notify(self, context: Any) -> None:
        # Deadline callbacks may run in the triggerer; a short blocking POST is acceptable there.
        self.notify(context)


def alert_payload(event: str, context: Any) -> dict[str, Any]:
    """The small JSON a webhook receives (no payloads, no secrets)."""
    context = context or {}
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    error = context.get("exception")
    return {
        "event": event,
        "dag_id": getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or context.get("dag_id"),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None),
        "map_index": getattr(ti, "map_index", None),
        "rendered_map_index": getattr(ti, "rendered_map_index", None),
        "try_number": getattr(ti, "try_number", None),
        "error": f"{type(error).__name__}: {error}" if error else None,
        "log_url": getattr(ti, "log_url", None),
    }


def failure_notifiers(alerts: AlertSettings, event: str = "task_failed") -> list[BaseNotifier]:
    """The notifiers ``pipeline.yml`` asks for (empty when nobody is configured)."""
    notifiers: list[BaseNotifier] = []
    if alerts.webhook_conn_id:
        notifiers.append(WebhookNotifier(conn_id=alerts.webhook_conn_id, event=event))
    if alerts.email:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifiers.append(SmtpNotifier(to=list(alerts.email), smtp_conn_id=alerts.email_conn_id,
                                      subject=f"[ecomsync] {event}: {{{{ ti.dag_id }}}}.{{{{ ti.task_id }}}}"))
    return notifiers


def crm_load_deadline(alerts: AlertSettings) -> list:
    """The ``DeadlineAlert`` for ``load_crm`` (empty when ``crm_load_deadline_hours`` is not set)."""
    if not alerts.crm_load_deadline_hours or not alerts.webhook_conn_id:
        return []
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    return [DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT,
                          interval=timedelta(hours=alerts.crm_load_deadline_hours),
                          callback=SyncCallback(WebhookNotifier,
                                                kwargs={"conn_id": alerts.webhook_conn_id,
                                                        "event": "crm_load_deadline_missed"}),
                          name="crm_load_not_succeeded")]
