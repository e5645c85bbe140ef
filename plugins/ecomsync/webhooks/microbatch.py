"""The event-triggered micro-batch: which stores and locations to extract, through the scheduled path's code.

A run claims every waiting event in ``raw.webhook_events`` (events that arrive while it runs stay waiting and
go to the next run), extracts each named store/location's incremental window with
``ecomsync.tasks.extract_store`` / ``extract_location`` (the same landing as the schedule), then builds only
the dbt models downstream of the changed sources. The load is the ``load_crm`` DAG, started by the
``crm_marts`` Asset as after a scheduled transform.

A store or location that fails gives its events back (the next run retries it) and does not stop the others;
the run then fails naming it. A scheduled extract of the same store holding its lock is waited for.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ecomsync import tasks
from ecomsync.config import ConfigError, PipelineConfig
from ecomsync.extract import ExtractRequest
from ecomsync.warehouse import ConcurrentRunError
from ecomsync.webhooks.events import ALL_LOCATIONS, EventStore

log = logging.getLogger(__name__)

LOCK_WAIT_S = 600.0
LOCK_POLL_S = 2.0


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
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return extract()
        except ConcurrentRunError:
            if time.monotonic() >= deadline:
                raise
            log.info("%s is being extracted by another run; waiting", what)
            time.sleep(LOCK_POLL_S)


def _run_each(wh_url: str, run_id: str, items: Sequence[tuple[str, str, Callable[..., dict]]], wait_s: float) -> dict:
    """Run each (connection_id, label, extract); release the events of those that fail; raise naming them."""
    results, failed = {}, {}
    for connection_id, label, extract in items:
        try:
            results[label] = _waiting_for_lock(extract, connection_id, wait_s)
        except Exception as exc:
            log.exception("micro-batch: %s failed", connection_id)
            failed[connection_id] = f"{type(exc).__name__}: {exc}"[:500]
    if failed:
        EventStore(wh_url).release(run_id, list(failed))
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
        items.append((store.connection_id, store_hash, lambda store=store: tasks.extract_store(
            config, store, credentials_for(store.conn_id),
            ExtractRequest(mode="incremental", run_id=f"{run_id}:{store.store_hash}"), wh_url)))
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
    items = [(f"square:{loc['location_id']}", loc["location_id"], lambda loc=loc: tasks.extract_location(
        config, loc, credentials_for(config.square.location_conn_id(loc["location_id"])),
        ExtractRequest(mode="incremental", run_id=f"{run_id}:{loc['location_id']}"), wh_url))
        for loc in wanted]
    results = _run_each(wh_url, run_id, items, wait_s)
    return {"extracted": results, "skipped": skipped}


def dbt_selection(targets: dict[str, list[str]]) -> list[str]:
    """The models downstream of the changed sources (and of ``state``, which holds the connections)."""
    sources = [source for source in ("bigcommerce", "square") if targets.get(source)]
    return [f"source:{source}+" for source in sources] + (["source:state+"] if sources else [])


def run(config: PipelineConfig, credentials_for: Callable[[str], tasks.Credentials], wh_url: str, run_id: str,
        wait_s: float = LOCK_WAIT_S) -> dict:
    """One micro-batch in one task: claim → extract the named stores and locations → build their models.

    One task rather than four: on a small machine every Airflow task costs seconds of start-up, and the
    latency target (purchase → CRM p95 ≤ 60 s) has no room for them. What landed is modelled even when one
    connection failed; the failure is raised afterwards (its events were given back).
    """
    targets = claim(wh_url, run_id)
    result: dict = {"targets": targets}
    failures = []
    for name, step in (("bigcommerce", extract_stores), ("square", extract_locations)):
        try:
            result[name] = step(config, targets[name], credentials_for, wh_url, run_id, wait_s)
        except MicroBatchError as exc:
            failures.append(str(exc))
    selection = dbt_selection(targets)
    result["dbt"] = tasks.transform(config, wh_url, select=selection) if selection else {"skipped": "no events"}
    if failures:
        raise MicroBatchError("; ".join(failures))
    return result
