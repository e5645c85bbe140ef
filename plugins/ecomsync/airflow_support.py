"""The few things every DAG file shares: Assets, default args, trigger-form Params, credentials.

Imported at DAG-parse time, so it does no I/O at import.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, BaseHook, Param

from ecomsync.extract import MODES, ExtractRequest
from ecomsync.http import clean_token
from ecomsync.tasks import Credentials, parse_when

RAW_BIGCOMMERCE = Asset(name="raw_bigcommerce", uri="warehouse://raw/bigcommerce")
RAW_SQUARE = Asset(name="raw_square", uri="warehouse://raw/square")
CRM_MARTS = Asset(name="crm_marts", uri="warehouse://crm")

POOLS = {
    # Concurrency caps per API; the pacers inside each task keep to the request quotas.
    "bigcommerce_api": (4, "BigCommerce: concurrent store extracts (each paced by its store's quota headers)"),
    "square_api": (3, "Square: concurrent location extracts"),
    "activecampaign_api": (1, "ActiveCampaign: 5 requests/s per account, shared by every task"),
}

START_DATE = pendulum.datetime(2024, 1, 1, tz="UTC")
DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


def extract_params(target: str, target_help: str) -> dict[str, Param]:
    """The manual-trigger form of the extract DAGs (P1)."""
    return {
        "mode": Param("incremental", enum=list(MODES), title="Sync mode",
                      description="incremental: since the watermark (scheduled runs); catch_up: everything "
                                  "changed since the last successful sync; historical: from the beginning."),
        "start_date": Param(None, type=["null", "string"], title="From (optional)",
                            description="ISO date or timestamp; with a range the watermark stays where it is."),
        "end_date": Param(None, type=["null", "string"], title="Until (optional)"),
        target: Param("all", type="string", title=target_help),
    }


def extract_request(params: dict, run_id: str, target: str) -> ExtractRequest:
    return ExtractRequest(mode=params["mode"], start=parse_when(params.get("start_date")),
                          end=parse_when(params.get("end_date")), run_id=f"{run_id}:{target}")


def credentials(conn_id: str) -> Credentials:
    """Base URL and token from an Airflow connection (host = base URL, password = token)."""
    conn = BaseHook.get_connection(conn_id)
    if not conn.host or not conn.password:
        raise ValueError(f"Airflow connection {conn_id!r} needs a host (the API base URL) and a password (the token)")
    host = conn.host if "://" in conn.host else f"https://{conn.host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return Credentials(base_url=host, token=clean_token(conn.password, f"Airflow connection {conn_id!r}"))
