"""What each DAG task does, as plain functions: credentials and settings come in as arguments.

The DAG files resolve Airflow connections and Params and call these; tests call
them directly. Return values are small JSON-able summaries (they go to XCom):
never a token, never a payload.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg2
from psycopg2 import sql

from ecomsync.build_lock import dbt_build_lock
from ecomsync.config import ConfigError, PipelineConfig, Store
from ecomsync.extract import ExtractError, ExtractRequest, run_connection
from ecomsync.http import AuthError
from ecomsync.sources import bigcommerce, square
from ecomsync.streams import Stream, parse_iso
from ecomsync.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """An API's base URL and token, from an Airflow connection (host + password)."""

    base_url: str
    token: str

    def __repr__(self) -> str:
        return f"Credentials(base_url={self.base_url!r}, token='***')"


WAREHOUSE_CONN_ID = "warehouse_default"
WAREHOUSE_CONNECT_TIMEOUT_SECONDS = 10


class Unrecoverable(RuntimeError):
    """An error no retry can fix: the message says what to change (connection id, config key, file).

    The DAG files turn it into ``AirflowFailException`` (see ``fail_fast``): the task fails at once.
    """


@contextmanager
def fail_fast(conn_id: str | None = None) -> Iterator[None]:
    """Turn errors that retrying cannot fix into ``AirflowFailException`` naming what to change (P6).

    - ``AuthError`` (HTTP 401/403: revoked or wrong token) → the Airflow connection ``conn_id``.
    - ``ConfigError`` (invalid ``pipeline.yml``, unknown store) → the file and key.
    - ``ExtractError`` (a trigger form's empty date range, unknown mode) → the Param.
    - ``Unrecoverable`` (missing connection, warehouse unreachable) → its own message.
    Everything else propagates unchanged and is retried per ``retries``.
    """
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except AuthError as exc:
        where = f"Airflow connection {conn_id!r}" if conn_id else "the API token"
        raise AirflowFailException(
            f"the API refused the credentials of {where} (HTTP {exc.status}): the token is revoked, expired or "
            f"lacks a scope; put a valid token in the password of {where}. Not retried. ({exc})") from exc
    except ConfigError as exc:
        raise AirflowFailException(f"configuration error, not retried: {exc}") from exc
    except ExtractError as exc:
        raise AirflowFailException(f"invalid trigger-form values, not retried: {exc}") from exc
    except Unrecoverable as exc:
        raise AirflowFailException(str(exc)) from exc


def warehouse_url(conn_id: str = WAREHOUSE_CONN_ID) -> str:
    """The warehouse as a ``postgresql://`` URL: the Airflow connection ``conn_id`` if it exists, else
    ``WAREHOUSE_URL`` (the local default). Parsed by the Postgres provider's hook, checked reachable.

    Raises ``Unrecoverable`` naming the connection when neither is set or the server does not answer
    within ``WAREHOUSE_CONNECT_TIMEOUT_SECONDS``.
    """
    url, source = _warehouse_from_connection(conn_id), f"Airflow connection {conn_id!r}"
    if url is None:
        url, source = os.environ.get("WAREHOUSE_URL"), "WAREHOUSE_URL"
    if not url:
        raise Unrecoverable(f"no warehouse: define the Airflow connection {conn_id!r} (Postgres, e.g. "
                            f"AIRFLOW_CONN_{conn_id.upper()}=postgresql://user:pass@host:5432/db) or WAREHOUSE_URL")
    check_warehouse(url, source)
    return url


def _warehouse_from_connection(conn_id: str) -> str | None:
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    hook = PostgresHook(postgres_conn_id=conn_id)
    try:
        connection = hook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    # The hook builds the SQLAlchemy URI (quoting, port, database); our code speaks libpq URLs.
    url = hook.get_uri().split("://", 1)[1]
    sslmode = (connection.extra_dejson or {}).get("sslmode")
    return f"postgresql://{url}" + (f"?sslmode={sslmode}" if sslmode else "")


def check_warehouse(url: str, source: str = "WAREHOUSE_URL") -> None:
    """Fail within seconds, naming where the URL came from, when the warehouse does not answer."""
    try:
        psycopg2.connect(url, connect_timeout=WAREHOUSE_CONNECT_TIMEOUT_SECONDS).close()
    except psycopg2.OperationalError as exc:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unrecoverable(
            f"the warehouse ({source}, host {parts.hostname}:{parts.port or 5432}, database "
            f"{parts.path.lstrip('/')}) is not reachable: {first_line}. Start it or fix {source}.") from None


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
    store = config.store(selected)  # ConfigError when the form names a store the configuration lacks
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
    """Enabled locations (S2, S9), each as {location_id, name, status}. INACTIVE ones are listed too:
    ``extract_location`` syncs or skips them by ``square.inactive_locations`` and says which (S3)."""
    session = square.session_for(credentials.base_url, credentials.token)
    found, known = [], set()
    for location in square.list_locations(session):
        location_id = location["id"]
        known.add(location_id)
        if not config.square.is_enabled(location_id):
            continue
        if selected not in ("", "all", None) and location_id != selected:
            continue
        found.append({"location_id": location_id, "name": location.get("name") or location_id,
                      "status": location.get("status", "ACTIVE")})
    if selected not in ("", "all", None) and selected not in known:
        raise ConfigError(f"location {selected!r} is not a location of the Square account behind connection "
                          f"{config.square.conn_id!r} (known: {', '.join(sorted(known)) or 'none'})")
    return found


def extract_location(config: PipelineConfig, location: dict, credentials: Credentials, request: ExtractRequest,
                     wh_url: str) -> dict:
    warehouse = Warehouse(wh_url)
    warehouse.ensure_schema()
    location_id = location["location_id"]
    connection_id = f"square:{location_id}"
    status = location.get("status", "ACTIVE")
    if status != "ACTIVE":
        skipped = _skip_inactive(config, warehouse, connection_id, location_id, status, request)
        if skipped is not None:
            return skipped
    # The CRM connection is named after the location (S2).
    warehouse.register_connection(connection_id, square.SOURCE, location_id, location["name"],
                                  f"https://app.squareup.com/dashboard/locations/{location_id}", True)
    session = square.session_for(credentials.base_url, credentials.token)
    streams = square.streams_for(location_id, config.square.historical_start, config.square.lookback_hours)
    return run_connection(warehouse, session, connection_id, streams, request).as_dict()


def _skip_inactive(config: PipelineConfig, warehouse: Warehouse, connection_id: str, location_id: str, status: str,
                   request: ExtractRequest) -> dict | None:
    """The report of an INACTIVE location this run does not extract, or None to extract it (S3)."""
    landed = {}
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("select payload ->> 'status' from raw.square_locations where connection_id = %s and pk = %s",
                    (connection_id, location_id))
        row = cur.fetchone()
        for stream, table in (("payments", "square_payments"), ("orders", "square_orders")):
            cur.execute(sql.SQL("select count(*) from raw.{} where connection_id = %s").format(sql.Identifier(table)),
                        (connection_id,))
            landed[stream] = cur.fetchone()[0]
    history_complete = (row is not None and row[0] == status) and warehouse.has_completed_historical(connection_id)
    reason = square.inactive_location_skip(config.square.inactive_locations, history_complete=history_complete,
                                           mode=request.mode, is_backfill=request.is_backfill)
    if reason is None:
        return None
    log.warning("%s (%s) not extracted: %s; the warehouse holds %s", connection_id, status, reason,
                ", ".join(f"{n} {stream}" for stream, n in landed.items()))
    return {"connection_id": connection_id, "sync_mode": "skipped", "location_status": status, "skipped": reason,
            "landed": landed, "streams": {}}


def transform(config: PipelineConfig, wh_url: str, full_refresh: bool = False, retry: bool = False,
              select: list[str] | None = None, **dbt_options) -> dict:
    """``dbt build``: staging → crm marts → segments, every model tested (P3); ``select``: only those nodes
    (the webhook micro-batch builds one source's models). One build at a time per warehouse (``dbt_build_lock``).

    ``retry`` (the task's second or later try): ``dbt retry`` reruns only the nodes that failed or were
    skipped in the previous invocation (from ``target/run_results.json``), not the whole project. A
    failure raises ``DbtRunError`` whose message names every failed model and test; they are also
    logged one per line. When the previous invocation recorded no failed node (it died before writing
    its results), a retry builds everything again: ``dbt retry`` would otherwise succeed doing nothing.
    """
    dbt_vars = {**config.dbt_vars, "square_customer_tag": config.crm.square_tag,
                "bigcommerce_customer_tag": config.crm.bigcommerce_tag}
    retry = retry and previous_invocation_failed(dbt_options.get("target_path"))
    args = ["retry"] if retry else (["build"] + (["--full-refresh"] if full_refresh else [])
                                    + (["--select", *select] if select else []))
    with dbt_build_lock(wh_url):  # the schedule's transform and the webhook micro-batch build the same models
        result = run_dbt_task(args, wh_url, dbt_vars, **dbt_options)
    by_type: dict[str, int] = {}
    for node in result.nodes:
        by_type[node.resource_type] = by_type.get(node.resource_type, 0) + 1
    return {"success": result.success, "command": args[0], "nodes": by_type, "rows_modelled": result.rows_modelled}


def previous_invocation_failed(target_path: str | os.PathLike | None = None) -> bool:
    """Whether ``run_results.json`` of the last dbt invocation lists a failed or skipped node."""
    import json
    from pathlib import Path

    from ecomsync.dbt import PROJECT_DIR

    results = Path(target_path or PROJECT_DIR / "target") / "run_results.json"
    try:
        nodes = json.loads(results.read_text()).get("results", [])
    except (OSError, ValueError):
        return False
    return any(node.get("status") in ("error", "fail", "runtime error", "skipped") for node in nodes)


def run_dbt_task(args: list[str], wh_url: str, dbt_vars: dict | None = None, **options):
    """``run_dbt`` for a task process: failed nodes named in the log, dbt's semaphores released.

    dbt creates ``multiprocessing`` (spawn) locks for its adapter and manifest. An Airflow task process
    ends with ``os._exit``, so their finalizers never run and Python's resource tracker printed
    "There appear to be N leaked semaphore objects" as ERROR lines in every transform log. Dropping
    dbt's adapters and collecting garbage unlinks them while the process is still alive.
    """
    import gc

    from ecomsync.dbt import DbtRunError, run_dbt

    try:
        return run_dbt(args, wh_url, vars=dbt_vars, **options)
    except DbtRunError as exc:
        for node in exc.summary.failed_nodes:
            log.error("dbt %s %s: %s — %s", node.resource_type, node.name, node.status, node.message)
        log.error("a retry of this task runs `dbt retry`: only the failed and skipped nodes")
        raise
    finally:
        from dbt.adapters.factory import reset_adapters

        reset_adapters()
        gc.collect()


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
