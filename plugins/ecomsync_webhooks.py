"""Airflow plugin: the webhook receiver on Airflow's API server (issue 17).

Mounts ``ecomsync.webhooks.receiver`` at ``/ecomsync/webhooks`` through the ``fastapi_apps`` plugin hook,
so the deliveries reach ``https://<airflow>/ecomsync/webhooks/bigcommerce`` and ``…/square``. Building the
app does no I/O: secrets and the warehouse are read on the first delivery.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ecomsync.webhooks.airflow_backend import AirflowBackend
from ecomsync.webhooks.receiver import create_app

URL_PREFIX = "/ecomsync/webhooks"


class EcomsyncWebhooksPlugin(AirflowPlugin):
    name = "ecomsync_webhooks"
    fastapi_apps = [{"app": create_app(AirflowBackend()), "url_prefix": URL_PREFIX,
                     "name": "ecomsync webhook receiver"}]
