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
from datetime import UTC, datetime

import psycopg2
from psycopg2 import sql

from ecomsync.build_lock import dbt_build_lock
from ecomsync.config import ConfigError, PipelineConfig, Store
from ecomsync.extract import ExtractError, ExtractRequest, describe_record, run_connection
from ecomsync.http import AuthError
from ecomsync.sources import bigcommerce, square
from ecomsync.streams import Stream, parse_iso
from ecomsync.warehouse import ConcurrentRunError, RejectedRecord, Warehouse

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
    """Enabled locations (S2, S9), each as {location_id, name, status, merchant_id}. INACTIVE ones are listed
    too: ``extract_location`` syncs or skips them by ``square.inactive_locations`` and says which (S3).

    Each location is read type-safely (``extract.describe_record`` with the merchant ``locations`` stream): one
    without an ``id``, or whose ``id`` is not text, is left out with its reason in the log, and the rest go on
    (the merchant run lands the same rejection in ``state.rejected_records``). A ``name`` that is not text
    becomes the id; a ``status`` that is not text counts as ACTIVE (extracting loses nothing); a missing or
    unreadable ``merchant_id`` (api.json ``Location.merchant_id``) becomes ``None`` (``merchant_key``).
    """
    session = square.session_for(credentials.base_url, credentials.token)
    locations_stream = next(s for s in square.merchant_streams() if s.name == "locations")
    found, known = [], set()
    now = datetime.now(UTC)
    for location in square.list_locations(session):
        described = describe_record(locations_stream, location, now)
        if isinstance(described, RejectedRecord):
            log.warning("a Square location is left out of this run: %s", described.reason)
            continue
        location_id = described.pk
        known.add(location_id)
        if not config.square.is_enabled(location_id):
            continue
        if selected not in ("", "all", None) and location_id != selected:
            continue
        status = _text(location.get("status"))
        if location.get("status") is not None and status is None:
            log.warning("Square location %s: status %r is not text; extracted as ACTIVE", location_id,
                        type(location.get("status")).__name__)
        found.append({"location_id": location_id, "name": _text(location.get("name")) or location_id,
                      "status": (status or "ACTIVE").upper(), "merchant_id": _text(location.get("merchant_id"))})
    if selected not in ("", "all", None) and selected not in known:
        raise ConfigError(f"location {selected!r} is not a location of the Square account behind connection "
                          f"{config.square.conn_id!r} (known: {', '.join(sorted(known)) or 'none'})")
    return found


def _text(value: object) -> str | None:
    """A non-empty, trimmed ``str``, else None (a number, a list, an empty string)."""
    return value.strip() or None if isinstance(value, str) else None


def merchant_key(config: PipelineConfig, location: dict) -> tuple[str, str]:
    """(Airflow connection id, merchant key) of a planned location's Square account: the key is the location's
    ``merchant_id``, or ``conn-<connection id>`` when the API did not send a readable one."""
    conn_id = config.square.location_conn_id(location["location_id"])
    return conn_id, location.get("merchant_id") or f"conn-{conn_id}"


def merchants_of(config: PipelineConfig, locations: list[dict]) -> list[tuple[str, str]]:
    """The distinct (Airflow connection id, merchant key) accounts behind the planned locations, in order."""
    return list(dict.fromkeys(merchant_key(config, location) for location in locations))


def extract_merchant(config: PipelineConfig, merchant: str, credentials: Credentials, request: ExtractRequest,
                     wh_url: str) -> dict:
    """The merchant-wide streams of one Square account (``square.merchant_streams``: locations, catalog,
    customers), once, on their own connection ``square-merchant:<merchant>`` with its own watermarks, each
    committed only with the pages it covers (S3, S4). dbt spreads these rows to the account's location
    connections in staging."""
    warehouse = Warehouse(wh_url)
    warehouse.ensure_schema()
    connection_id = square.merchant_connection_id(merchant)
    warehouse.register_connection(connection_id, square.MERCHANT_SOURCE, merchant, f"Square merchant {merchant}",
                                  "https://app.squareup.com/dashboard", True)
    session = square.session_for(credentials.base_url, credentials.token)
    return run_connection(warehouse, session, connection_id, square.merchant_streams(), request).as_dict()


def extract_location(config: PipelineConfig, location: dict, credentials: Credentials, request: ExtractRequest,
                     wh_url: str, merchant: bool = True) -> dict:
    """One location's own streams (orders, payments) on ``square:<location_id>``.

    ``merchant``: then bring its account's merchant streams up to date (``extract_merchant``), for a caller
    that extracts one location on its own (the webhook micro-batch, a script). The scheduled DAG runs
    ``extract_merchant`` once per account before its locations and passes False. The location's own streams
    come first, so a second extract of the same location is refused by the location's lock before it reads
    anything. A location's historical restart does not restart its account's merchant streams (they are read
    incrementally here, historically only until their first historical sync completed; the DAG's historical
    mode restarts them). When another run holds the merchant connection (a second location of the same
    account extracted at the same time), that run is fetching it: this one leaves it (``merchant_skipped``).
    """
    warehouse = Warehouse(wh_url)
    warehouse.ensure_schema()
    result = _extract_location_streams(config, warehouse, location, credentials, request)
    if merchant:
        _, key = merchant_key(config, location)
        merchant_request = replace(request, mode="incremental") if request.mode == "historical" else request
        try:
            result["merchant"] = extract_merchant(config, key, credentials, merchant_request, wh_url)
        except ConcurrentRunError as exc:
            log.info("%s: merchant streams left to the run that holds them: %s", location["location_id"], exc)
            result["merchant"] = {"connection_id": square.merchant_connection_id(key), "merchant_skipped": str(exc)}
    return result


def _extract_location_streams(config: PipelineConfig, warehouse: Warehouse, location: dict,
                              credentials: Credentials, request: ExtractRequest) -> dict:
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
    streams = square.location_streams(location_id, config.square.historical_start, config.square.lookback_hours)
    return run_connection(warehouse, session, connection_id, streams, request).as_dict()


def _skip_inactive(config: PipelineConfig, warehouse: Warehouse, connection_id: str, location_id: str, status: str,
                   request: ExtractRequest) -> dict | None:
    """The report of an INACTIVE location this run does not extract, or None to extract it (S3).

    Its history is complete when the newest landed copy of the location (the merchant's ``locations`` stream,
    or one landed under the location by an earlier version) has this status, the location finished a
    historical sync, and a run of the location's own streams succeeded that started after that copy landed
    (so nothing paid before it closed is missing).
    """
    landed = {}
    with warehouse.transaction() as conn, conn.cursor() as cur:
        cur.execute("select payload ->> 'status', loaded_at, connection_id = %s from raw.square_locations "
                    "where pk = %s and (connection_id = %s or connection_id like 'square-merchant:%%') "
                    "order by loaded_at desc limit 1", (connection_id, location_id, connection_id))
        row = cur.fetchone()
        for stream, table in (("payments", "square_payments"), ("orders", "square_orders")):
            cur.execute(sql.SQL("select count(*) from raw.{} where connection_id = %s").format(sql.Identifier(table)),
                        (connection_id,))
            landed[stream] = cur.fetchone()[0]
    last_success = warehouse.last_success_at(connection_id)
    history_complete = (row is not None and row[0] == status and warehouse.has_completed_historical(connection_id)
                        and (row[2] or (last_success is not None and last_success >= row[1])))
    reason = square.inactive_location_skip(config.square.inactive_locations, history_complete=history_complete,
                                           mode=request.mode, is_backfill=request.is_backfill)
    if reason is None:
        return None
    log.warning("%s (%s) not extracted: %s; the warehouse holds %s", connection_id, status, reason,
                ", ".join(f"{n} {stream}" for stream, n in landed.items()))
    return {"connection_id": connection_id, "sync_mode": "skipped", "location_status": status, "skipped": reason,
            "landed": landed, "streams": {}}


def transform(config: PipelineConfig, wh_url: str, full_refresh: bool = False, retry: bool = False,
              select: list[str] | None = None, indirect_selection: str | None = None, **dbt_options) -> dict:
    """``dbt build``: staging → crm marts → segments, every model tested (P3); ``select``: only those nodes
    (the webhook micro-batch builds one source's models); ``indirect_selection``: dbt's ``--indirect-selection``
(``eager``, ``cautious``, ``buildable``, ``empty``) for the tests of a selection. One build at a time per
warehouse (``dbt_build_lock``).

    A scheduled build (no ``select``, not a retry) whose inputs did not change since the last complete build
    (``ecomsync.build_inputs``: nothing landed in raw, no state change, same project and vars, the models'
    relations as that build left them) rebuilds only the models that read the clock and their children
    (``abandoned_carts+``, ``segment_members+``), and runs no dbt at all before one of those is due (build
    ``nothing``: a cart's idle time running out, the next midnight UTC). Builds other than ``--full-refresh``
    leave out dbt's unit tests (they test the SQL, not the data, and the SQL is the same as in CI and at the
    last full refresh).

    ``retry`` (the task's second or later try): ``dbt retry`` reruns only the nodes that failed or were
    skipped in the previous invocation (from ``target/run_results.json``), not the whole project. A
    failure raises ``DbtRunError`` whose message names every failed model and test; they are also
    logged one per line. When the previous invocation recorded no failed node (it died before writing
    its results), a retry builds everything again: ``dbt retry`` would otherwise succeed doing nothing.

    Returns ``{"success", "command", "nodes": {resource type: count}, "rows_modelled", "build": kind,
    "reason"}``; ``build`` is ``full_refresh``, ``build``, ``time_dependent``, ``nothing`` (no dbt invocation:
    ``command`` None, no nodes) or ``unrecorded`` (selected/retry).
    """
    from ecomsync.build_inputs import forget_builds, plan_build, record_build
    from ecomsync.dbt import DbtRunError

    dbt_vars = {**config.dbt_vars, "square_customer_tag": config.crm.square_tag,
                "bigcommerce_customer_tag": config.crm.bigcommerce_tag}
    retry = retry and previous_invocation_failed(dbt_options.get("target_path"))
    target_path = dbt_options.get("target_path")
    with dbt_build_lock(wh_url):  # the schedule's transform and the webhook micro-batch build the same models
        plan = plan_build(wh_url, dbt_vars, full_refresh=full_refresh, select=select, retry=retry,
                          target_path=target_path)
        if plan.kind == "nothing":
            log.info("no dbt build: %s", plan.reason)
            return {"success": True, "command": None, "nodes": {}, "rows_modelled": 0, "build": plan.kind,
                    "reason": plan.reason}
        selection = plan.select
        args = ["retry"] if retry else (["build"] + (["--full-refresh"] if full_refresh else
                                                     ["--exclude-resource-type", "unit_test"])
                                        + (["--select", *selection] if selection else [])
                                        + (["--indirect-selection", indirect_selection] if indirect_selection
                                           else []))
        log.info("dbt %s (%s)", " ".join(args), plan.reason)
        try:
            result = run_dbt_task(args, wh_url, dbt_vars, **dbt_options)
        except DbtRunError:
            forget_builds(wh_url)  # whatever it left, the next scheduled build is complete
            raise
        record_build(wh_url, plan, target_path)
    by_type: dict[str, int] = {}
    for node in result.nodes:
        by_type[node.resource_type] = by_type.get(node.resource_type, 0) + 1
    return {"success": result.success, "command": args[0], "nodes": by_type, "rows_modelled": result.rows_modelled,
            "build": plan.kind, "reason": plan.reason}


def previous_invocation_failed(target_path: str | os.PathLike | None = None) -> bool:
    """Whether ``run_results.json`` of the last dbt invocation lists a failed or skipped node."""
    import json

    from ecomsync.dbt import target_dir

    results = target_dir(target_path) / "run_results.json"
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
