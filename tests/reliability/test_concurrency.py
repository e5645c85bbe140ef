"""Concurrency (issue 9, item 3): two runs for the same store, location or CRM account cannot interleave.
The second is refused with a clear message while the first finishes untouched; other connections run on.
(The DAGs' max_active_runs=1 is asserted in tests/unit/test_dag_integrity.py.)"""
from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from pipeline_harness import Sandboxes, duplicates, settings_for

from ecomsync.crm.ledger import LoadAlreadyRunning
from ecomsync.extract import ExtractRequest
from ecomsync.tasks import extract_location, extract_store, load_crm, locations_to_sync, transform
from ecomsync.warehouse import ConcurrentRunError


@pytest.fixture(scope="module")
def stack(local_pg, tmp_path_factory):
    sandboxes = Sandboxes()
    name = f"test_rel_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    try:
        yield sandboxes, settings_for(sandboxes.urls, tmp_path_factory.mktemp("concurrency")), url
    finally:
        sandboxes.close()
        local_pg.drop_database(name)


def once_started(sandboxes: Sandboxes, api: str, task) -> tuple[ThreadPoolExecutor, object]:
    """Run ``task`` in a thread and return when its first request has reached ``api``."""
    before = sandboxes.request_count(api)
    pool = ThreadPoolExecutor(1)
    future = pool.submit(task)
    deadline = time.monotonic() + 30
    while sandboxes.request_count(api) == before and not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not future.done(), "the first run finished before the second could overlap it"
    return pool, future


def test_a_second_extract_of_the_same_connection_is_refused(stack):  # B10, S6, P2
    sandboxes, settings, url = stack
    store, other = settings.config.enabled_stores
    sandboxes.set_faults("bigcommerce", slow_ms=60)
    sandboxes.set_faults("square", slow_ms=60)
    try:
        def extract(target):
            return extract_store(settings.config, target, settings.bigcommerce[target.store_hash],
                                 ExtractRequest(), url)

        pool, first = once_started(sandboxes, "bigcommerce", lambda: extract(store))
        with pytest.raises(ConcurrentRunError, match=f"another extract of {store.connection_id} is running"):
            extract(store)
        assert extract(other)["connection_id"] == other.connection_id  # another store is not held up

        [location] = locations_to_sync(settings.config, settings.square)[:1]
        run_location = lambda: extract_location(settings.config, location, settings.square, ExtractRequest(), url)
        square_pool, square_first = once_started(sandboxes, "square", run_location)
        with pytest.raises(ConcurrentRunError, match=f"square:{location['location_id']}"):
            run_location()
        assert first.result(timeout=120)["sync_mode"] == "historical"  # the first run was not disturbed
        assert square_first.result(timeout=120)["connection_id"] == f"square:{location['location_id']}"
        pool.shutdown()
        square_pool.shutdown()
    finally:
        sandboxes.set_faults("bigcommerce", slow_ms=0)
        sandboxes.set_faults("square", slow_ms=0)


def test_a_second_load_of_the_same_crm_account_is_refused(stack):  # S6, P4
    sandboxes, settings, url = stack
    transform(settings.config, url)
    sandboxes.set_faults("activecampaign", slow_ms=20)
    try:
        def load(run_id):
            return load_crm(settings.config, settings.crm, url, run_id=run_id)

        pool, first = once_started(sandboxes, "activecampaign", lambda: load("first"))
        with pytest.raises(LoadAlreadyRunning, match="another CRM load .* is running"):
            load("second")
        assert first.result(timeout=120)["status"] == "success"
        pool.shutdown()
    finally:
        sandboxes.set_faults("activecampaign", slow_ms=0)
    assert all(count == 0 for count in duplicates(sandboxes).values())
    assert load("after")["counts"]["ecom_order"]["created"] == 0  # the refused run left nothing half-done
