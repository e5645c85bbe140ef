"""What each DAG task does, as plain functions: credentials and settings come in as arguments.

The DAG files resolve Airflow connections and Params and call these; tests call
them directly. Return values are small JSON-able summaries (they go to XCom):
never a token, never a payload.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import datetime

from ecomsync.config import PipelineConfig, Store
from ecomsync.extract import ExtractRequest, run_connection
from ecomsync.sources import bigcommerce, square
from ecomsync.streams import Stream, parse_iso
from ecomsync.warehouse import Warehouse


@dataclass(frozen=True)
class Credentials:
    """An API's base URL and token, from an Airflow connection (host + password)."""

    base_url: str
    token: str

    def __repr__(self) -> str:
        return f"Credentials(base_url={self.base_url!r}, token='***')"


def warehouse_url() -> str:
    url = os.environ.get("WAREHOUSE_URL")
    if not url:
        raise RuntimeError("WAREHOUSE_URL is not set: point it at the warehouse Postgres "
                           "(the local stack sets it to the embedded cluster).")
    return url


def parse_when(value: str | datetime | None) -> datetime | None:
    """A trigger-form date or timestamp (ISO-8601); dates mean midnight UTC."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    return parse_iso(value if "T" in value else f"{value}T00:00:00Z")


def stores_to_sync(config: PipelineConfig, selected: str = "all") -> list[Store]:
    """Enabled stores, or the one the trigger form names (B1, B11: a disabled store is skipped)."""
    if selected in ("", "all", None):
        return config.enabled_stores
    store = config.store(selected)
    return [store] if store.enabled else []


def extract_store(config: PipelineConfig, store: Store, credentials: Credentials, request: ExtractRequest,
                  wh_url: str) -> dict:
    warehouse = Warehouse(wh_url)
    warehouse.ensure_schema()
    warehouse.register_connection(store.connection_id, bigcommerce.SOURCE, store.store_hash, store.name,
                                  store.link_url, store.enabled)
    session = bigcommerce.session_for(credentials.base_url, store.store_hash, credentials.token)
    streams = tuple(_with_lookback(s, config.bigcommerce_lookback_minutes) for s in bigcommerce.STREAMS)
    return run_connection(warehouse, session, store.connection_id, streams, request).as_dict()


def _with_lookback(stream: Stream, minutes: int) -> Stream:
    return replace(stream, lookback_minutes=minutes) if stream.incremental else stream


def locations_to_sync(config: PipelineConfig, credentials: Credentials, selected: str = "all") -> list[dict]:
    """Active locations that are enabled (S2, S9), each as {location_id, name}."""
    session = square.session_for(credentials.base_url, credentials.token)
    found = []
    for location in square.list_locations(session):
        location_id = location["id"]
        if location.get("status", "ACTIVE") != "ACTIVE" or not config.square.is_enabled(location_id):
            continue
        if selected not in ("", "all", None) and location_id != selected:
            continue
        found.append({"location_id": location_id, "name": location.get("name") or location_id})
    return found


def extract_location(config: PipelineConfig, location: dict, credentials: Credentials, request: ExtractRequest,
                     wh_url: str) -> dict:
    warehouse = Warehouse(wh_url)
    warehouse.ensure_schema()
    location_id = location["location_id"]
    connection_id = f"square:{location_id}"
    # The CRM connection is named after the location (S2).
    warehouse.register_connection(connection_id, square.SOURCE, location_id, location["name"],
                                  f"https://app.squareup.com/dashboard/locations/{location_id}", True)
    session = square.session_for(credentials.base_url, credentials.token)
    streams = square.streams_for(location_id, config.square.historical_start, config.square.lookback_hours)
    return run_connection(warehouse, session, connection_id, streams, request).as_dict()


def transform(config: PipelineConfig, wh_url: str, full_refresh: bool = False, select: list[str] | None = None) -> dict:
    """``dbt build``: staging → crm marts → segments, every model tested (P3); ``select``: only those nodes."""
    from ecomsync.build_lock import dbt_build_lock
    from ecomsync.dbt import run_dbt

    dbt_vars = {**config.dbt_vars, "square_customer_tag": config.crm.square_tag,
                "bigcommerce_customer_tag": config.crm.bigcommerce_tag}
    args = ["build"] + (["--full-refresh"] if full_refresh else []) + (["--select", *select] if select else [])
    with dbt_build_lock(wh_url):  # the schedule's transform and the webhook micro-batch build the same models
        result = run_dbt(args, wh_url, vars=dbt_vars)
    by_type: dict[str, int] = {}
    for node in result.nodes:
        by_type[node.resource_type] = by_type.get(node.resource_type, 0) + 1
    return {"success": result.success, "nodes": by_type, "rows_modelled": result.rows_modelled}


def enabled_connection_ids(config: PipelineConfig, wh_url: str) -> set[str]:
    """Connections the load may push: enabled stores and enabled locations (B11, S9)."""
    enabled = {store.connection_id for store in config.enabled_stores}
    warehouse = Warehouse(wh_url)
    warehouse.ensure_schema()
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("select external_id from state.connections where source = 'square'")
        enabled |= {f"square:{location_id}" for (location_id,) in cur.fetchall()
                    if config.square.is_enabled(location_id)}
    return enabled


def load_crm(config: PipelineConfig, credentials: Credentials, wh_url: str, run_id: str, mode: str = "normal",
             retry_rejected: bool = False) -> dict:
    """Push the crm marts' deltas to ActiveCampaign (P4)."""
    from ecomsync.crm.activecampaign import ActiveCampaignClient
    from ecomsync.crm.push import run_push

    client = ActiveCampaignClient(credentials.base_url, credentials.token,
                                  requests_per_second=config.crm.requests_per_second)
    report = run_push(wh_url, client, config.crm, run_id=run_id, mode=mode,
                      enabled_connections=enabled_connection_ids(config, wh_url), retry_rejected=retry_rejected)
    return report.as_dict()
