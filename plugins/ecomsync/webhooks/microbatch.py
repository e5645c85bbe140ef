"""The event-triggered micro-batch: which stores and locations to extract, through the scheduled path's code.

A run claims every waiting event in ``raw.webhook_events`` (events that arrive while it runs stay waiting and
go to the next run), extracts each named store/location's incremental window with
``ecomsync.tasks.extract_store`` / ``extract_location`` (the same landing as the schedule), then builds only
the dbt models between the changed sources and the crm marts (``dbt_selection``); the segment tables are
rebuilt by the scheduled ``transform``. The load is the ``load_crm`` DAG, started by the ``crm_marts`` Asset
as after a scheduled transform: it runs while the next micro-batch extracts and builds (a pipeline). Loading in
this task instead was measured slower: the CRM's 5 requests/s make the load the longest stage, and in one task
the next batch waits for it (docs/benchmarks.md, "Webhooks").

A store or location that fails gives its events back (the next run retries it) and does not stop the others;
the run then fails naming it. A scheduled extract of the same store holding its lock is waited for.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ecomsync import tasks
from ecomsync.config import ConfigError, PipelineConfig
from ecomsync.extract import ExtractRequest
from ecomsync.sources import square
from ecomsync.warehouse import ConcurrentRunError
from ecomsync.webhooks.events import ALL_LOCATIONS, EventStore

log = logging.getLogger(__name__)

LOCK_WAIT_S = 600.0
LOCK_POLL_S = 2.0
MAX_PARALLEL = 4  # stores and locations extracted at once by one micro-batch


class MicroBatchError(RuntimeError):
    pass


def claim(wh_url: str, run_id: str) -> dict[str, list[str]]:
    """``{"bigcommerce": [store_hash…], "square": [location_id… or "*"]}`` of the events this run takes."""
    connection_ids = EventStore(wh_url).claim(run_id)
    targets: dict[str, list[str]] = {"bigcommerce": [], "square": []}
    for connection_id in connection_ids:
        source, external_id = connection_id.split(":", 1)
        if source in targets:
            targets[source].append(external_id)
    if ALL_LOCATIONS.split(":", 1)[1] in targets["square"]:
        targets["square"] = ["*"]
    log.info("webhook micro-batch %s: %s", run_id, targets)
    return targets


def _waiting_for_lock(extract: Callable[[], dict], what: str, wait_s: float) -> dict:
    """``extract()``, again every ``LOCK_POLL_S`` while another run holds its lock, for at most ``wait_s`` s."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return extract()
        except ConcurrentRunError:
            if time.monotonic() >= deadline:
                raise
            log.info("%s is being extracted by another run; waiting", what)
            time.sleep(LOCK_POLL_S)


@dataclass(frozen=True)
class Extract:
    """One extract of a micro-batch: ``connection_id`` (its lock, named in logs and errors), ``label`` (its key in
    the results), ``run`` (the scheduled path's task function), ``events``: the event connection ids given back
    to the next run when it fails."""
    connection_id: str
    label: str
    run: Callable[[], dict]
    events: tuple[str, ...]


def _later(task: Callable[..., dict], credentials_for: Callable[[str], tasks.Credentials], conn_id: str,
           **arguments) -> Callable[[], dict]:
    """``task(credentials=…, **arguments)`` run in the extract's own thread, its Airflow connection looked up
    there: a missing connection fails that extract only (its events are given back), not the micro-batch."""
    def run() -> dict:
        return task(credentials=credentials_for(conn_id), **arguments)
    return run


def _run_each(wh_url: str, run_id: str, items: Sequence[Extract], wait_s: float) -> dict:
    """Run each extract at the same time, one thread each (at most ``MAX_PARALLEL``: they wait on the APIs and
    the warehouse, not on this process; each has its own connections and locks, and ``Warehouse.ensure_schema``
    serialises its DDL); give back the events of those that fail; raise naming them."""
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    give_back: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(items))),
                            thread_name_prefix="microbatch") as pool:
        futures = {pool.submit(_waiting_for_lock, item.run, item.connection_id, wait_s): item for item in items}
        for future, item in futures.items():
            try:
                results[item.label] = future.result()
            except Exception as exc:
                log.error("micro-batch: %s failed", item.connection_id, exc_info=exc)
                failed[item.connection_id] = f"{type(exc).__name__}: {exc}"[:500]
                give_back.update(item.events)
    if failed:
        EventStore(wh_url).release(run_id, sorted(give_back))
        raise MicroBatchError(f"extract failed for {sorted(failed)} (their events wait for the next run): {failed}")
    return results


def extract_stores(config: PipelineConfig, store_hashes: list[str], credentials_for: Callable[[str], tasks.Credentials],
                   wh_url: str, run_id: str, wait_s: float = LOCK_WAIT_S) -> dict:
    items, skipped = [], {}
    for store_hash in store_hashes:
        try:
            store = config.store(store_hash)
        except ConfigError:
            skipped[store_hash] = "not in the configuration"
            continue
        if not store.enabled:
            skipped[store_hash] = "disabled"
            continue
        items.append(Extract(store.connection_id, store_hash, _later(
            tasks.extract_store, credentials_for, store.conn_id, config=config, store=store,
            request=ExtractRequest(mode="incremental", run_id=f"{run_id}:{store.store_hash}"), wh_url=wh_url),
            (store.connection_id,)))
    results = _run_each(wh_url, run_id, items, wait_s)
    return {"extracted": results, "skipped": skipped}


def extract_locations(config: PipelineConfig, location_ids: list[str],
                      credentials_for: Callable[[str], tasks.Credentials], wh_url: str, run_id: str,
                      wait_s: float = LOCK_WAIT_S) -> dict:
    if not location_ids:
        return {"extracted": {}, "skipped": {}}
    enabled = tasks.locations_to_sync(config, credentials_for(config.square.conn_id))
    wanted = enabled if "*" in location_ids else [loc for loc in enabled if loc["location_id"] in location_ids]
    skipped = {lid: "disabled or inactive" for lid in location_ids
               if lid != "*" and lid not in {loc["location_id"] for loc in enabled}}
    # Merchant-wide streams (customers, catalog, locations) once per Square account, as the scheduled DAG does
    # (tasks.extract_merchant, issue 16), and each location's own streams (merchant=False), all at the same time
    # (their connections and locks differ); a failed account gives back the events of all its locations, a failed
    # location its own.
    accounts: dict[tuple[str, str], list[dict]] = {}
    for loc in wanted:
        accounts.setdefault(tasks.merchant_key(config, loc), []).append(loc)
    items = [Extract(square.merchant_connection_id(key), f"merchant:{key}",
                     _later(tasks.extract_merchant, credentials_for, conn_id, config=config, merchant=key,
                            request=ExtractRequest(mode="incremental", run_id=f"{run_id}:merchant:{key}"),
                            wh_url=wh_url),
                     (ALL_LOCATIONS, *(f"square:{loc['location_id']}" for loc in locations)))
             for (conn_id, key), locations in accounts.items()]
    items += [Extract(f"square:{loc['location_id']}", loc["location_id"],
                      _later(tasks.extract_location, credentials_for,
                             config.square.location_conn_id(loc["location_id"]), config=config, location=loc,
                             request=ExtractRequest(mode="incremental", run_id=f"{run_id}:{loc['location_id']}"),
                             wh_url=wh_url, merchant=False),
                      (f"square:{loc['location_id']}",))
              for loc in wanted]
    results = _run_each(wh_url, run_id, items, wait_s)
    return {"extracted": results, "skipped": skipped}


CRM_MARTS_PATH = "path:models/marts/crm"


SOURCES = ("bigcommerce", "square")
# dbt's "cautious" indirect selection: a test is built only when every model it reads is selected. The default
# ("eager") also ran the relationship tests of the segment marts, which are not rebuilt here: they failed on a
# fresh warehouse and would compare stale segments with new crm marts.
ONLY_TESTS_OF_SELECTED = "cautious"


def dbt_selection(targets: dict[str, list[str]], unbuilt: frozenset[str] = frozenset()) -> list[str]:
    """dbt ``--select`` of a micro-batch: the nodes downstream of the changed sources (and of ``state``, which
    holds the connections) that lead to the crm marts — ``source:<s>+,+path:models/marts/crm`` is dbt's
    intersection of the two graph selections. The segment marts (read by analysts, not by the load) are left to
    the scheduled ``transform``. ``unbuilt``: sources whose staging models are not in the warehouse yet (no build
    ran since it was created); the unioned models read them, so they are built too. ``[]`` when nothing changed."""
    changed = [source for source in SOURCES if targets.get(source)]
    if not changed:
        return []
    sources = [source for source in SOURCES if source in changed or source in unbuilt] + ["state"]
    return [f"source:{source}+,+{CRM_MARTS_PATH}" for source in sources]


def unbuilt_sources(wh_url: str) -> frozenset[str]:
    """Sources with no staging model in the warehouse (``stg_<source>__*``, the project's naming convention,
    in any schema): a fresh warehouse whose first event names one source only."""
    import psycopg2

    with psycopg2.connect(wh_url) as conn, conn.cursor() as cur:
        cur.execute("select distinct split_part(table_name, '__', 1) from information_schema.tables "
                    "where table_name like 'stg\\_%\\_\\_%'")
        built = {row[0].removeprefix("stg_") for row in cur.fetchall()}
    conn.close()
    return frozenset(source for source in SOURCES if source not in built)


def run(config: PipelineConfig, credentials_for: Callable[[str], tasks.Credentials], wh_url: str, run_id: str,
        wait_s: float = LOCK_WAIT_S) -> dict:
    """One micro-batch in one task: claim → extract the named stores and locations → build their models.

    One task rather than four: on a small machine every Airflow task costs seconds of start-up, and the
    latency target (purchase → CRM p95 ≤ 60 s) has no room for them; the stores and locations are extracted at
    the same time (``_run_each``). What landed is modelled even when one connection failed; the failure is raised
    afterwards (its events were given back). Any other error (e.g. the Square location list) is raised once the
    other source's extract has finished.
    Returns ``{"targets", "bigcommerce", "square", "dbt"}``.
    """
    targets = claim(wh_url, run_id)
    result: dict = {"targets": targets}
    failures = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="microbatch-source") as pool:  # both sources at once
        steps = {name: pool.submit(step, config, targets[name], credentials_for, wh_url, run_id, wait_s)
                 for name, step in (("bigcommerce", extract_stores), ("square", extract_locations))}
        for name, future in steps.items():
            try:
                result[name] = future.result()
            except MicroBatchError as exc:
                failures.append(str(exc))
    selection = dbt_selection(targets, unbuilt_sources(wh_url))
    result["dbt"] = tasks.transform(config, wh_url, select=selection,
                                                     indirect_selection=ONLY_TESTS_OF_SELECTED) if selection \
        else {"skipped": "no events"}
    if failures:
        raise MicroBatchError("; ".join(failures))
    return result
