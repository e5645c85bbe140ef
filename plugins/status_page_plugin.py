"""Airflow plugin: the ecomsync sync status page and the analysts' dbt docs, inside the Airflow UI (issue 19).

Airflow 3 loads this module from ``plugins/`` (``plugins/.airflowignore`` keeps it from importing the
``ecomsync`` package's files as plugins). It mounts one FastAPI app on the API server at ``/ecomsync``
(``AirflowPlugin.fastapi_apps``) and adds two entries to the UI's navigation (``external_views`` with a
``url_route``: the UI shows them in its own frame at ``/plugin/<url_route>``). Every route needs a signed-in
Airflow user (the UI's session cookie). The logic lives in ``plugins/ecomsync/status``.
"""
from __future__ import annotations

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin

from ecomsync.dbt import DOCS_PAGE, docs_dir, generate_docs_in_subprocess
from ecomsync.status.app import create_app
from ecomsync.tasks import warehouse_url

URL_PREFIX = "/ecomsync"


def _build_docs():
    return generate_docs_in_subprocess(warehouse_url(), docs_dir())


class EcomsyncStatusPlugin(AirflowPlugin):
    name = "ecomsync_status"
    fastapi_apps = [{"app": create_app(warehouse_url, docs_page=lambda: docs_dir() / DOCS_PAGE,
                                      build_docs=_build_docs, dependencies=[get_user]),
                     "url_prefix": URL_PREFIX, "name": "ecomsync status"}]
    external_views = [
        {"name": "Sync status", "href": f"{URL_PREFIX}/status/", "destination": "nav", "category": "browse",
         "url_route": "ecomsync-status"},
        {"name": "dbt docs (analysts)", "href": f"{URL_PREFIX}/dbt-docs/", "destination": "nav",
         "category": "docs", "url_route": "ecomsync-dbt-docs"},
    ]
