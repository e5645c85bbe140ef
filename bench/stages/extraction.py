"""Extraction: requests made vs the fewest the APIs allow, pacing vs the quota floor, raw speed.

1. The historical extract of every store and location (quota not enforced) gives the
   unthrottled records per second and the requests made. The fewest requests that can
   return the same records follow from the record counts and each endpoint's largest
   page (coupons come with the line items' ``applied_discounts``: no request per order).
2. A sample store, sized from the requests per order measured in (1) to span
   ``--quota-windows`` windows, is extracted with the real quota enforced; its wall
   time is compared with the quota floor requests ÷ quota × window. A full-scale
   quota run would take hours (it is the same arithmetic), so only the sample is run.
"""
from __future__ import annotations

import math
import uuid
from collections import Counter

import requests

from bench.context import BenchContext, StageResult, bigcommerce_sandbox, square_sandbox
from bench.processes import run_task
from bench.scale import STORES, Scale

# Largest page each endpoint serves, and whether the end of the list costs an extra request
# (a bare-array v2 list, and every keyset-paged list, says "no more" only with a short page or an empty one).
PAGE_LIMITS = {
    ("bigcommerce", "orders"): (250, True),
    ("bigcommerce", "order_statuses"): (250, True),
    ("bigcommerce", "customers"): (250, True),
    ("bigcommerce", "subscribers"): (250, True),
    ("bigcommerce", "products"): (250, True),
    ("bigcommerce", "refunds"): (250, True),
    ("bigcommerce", "categories"): (250, False),
    ("square", "locations"): (None, False),  # one unpaginated list
    ("square", "catalog"): (1000, False),
    ("square", "customers"): (100, False),
    ("square", "orders"): (1000, False),
    ("square", "payments"): (100, False),
}
SAMPLE_STORE = STORES[0]


def fewest_requests(source: str, stream: str, records: int) -> int:
    limit, short_page_ends = PAGE_LIMITS[(source, stream)]
    if limit is None:
        return 1
    pages = max(1, math.ceil(records / limit))
    return pages + (1 if short_page_ends and records and records % limit == 0 else 0)


def run(ctx: BenchContext, result: StageResult) -> None:
    historical = ctx.historical()
    made = floor = fetched = 0
    wall = 0.0
    per_stream: dict[str, dict] = {}
    bigcommerce_requests = bigcommerce_orders = 0
    for task in historical.runs:
        source = "bigcommerce" if task.task == "extract_store" else "square"
        wall += task.wall_s
        for stream, counts in _stream_counts(task.result):
            least = fewest_requests(source, stream, counts["fetched"])
            entry = per_stream.setdefault(f"{source}.{stream}", {"records": 0, "requests": 0, "fewest": 0})
            entry["records"] += counts["fetched"]
            entry["requests"] += counts["requests"]
            entry["fewest"] += least
            made += counts["requests"]
            floor += least
            fetched += counts["fetched"]
            if source == "bigcommerce":
                bigcommerce_requests += counts["requests"]
                bigcommerce_orders += counts["fetched"] if stream == "orders" else 0
    records_per_s = fetched / wall if wall else None
    result.metrics.update({"records_fetched": fetched, "requests_made": made, "fewest_requests": floor,
                           "unthrottled_wall_s": round(wall, 1),
                           "per_stream": per_stream,
                           "tasks": [{"task": t.task, "wall_s": t.wall_s, "max_rss_mb": t.max_rss_mb,
                                      "result": t.result} for t in historical.runs]})
    result.check("requests made ÷ fewest possible", round(made / floor, 3) if floor else None,
                 "1.0 = no wasted request", None)
    result.check("unthrottled extraction", round(records_per_s, 1) if records_per_s else None,
                 "no target (sandbox-bound)", None, "records/s")

    # issue 16: BigCommerce requests of a historical sync ÷ (orders ÷ 250), every stream, and the orders stream's own
    order_pages = bigcommerce_orders / 250
    if order_pages:
        per_page = bigcommerce_requests / order_pages
        orders_stream = per_stream.get("bigcommerce.orders", {}).get("requests", 0) / order_pages
        result.metrics["bigcommerce_requests"] = bigcommerce_requests
        result.metrics["bigcommerce_orders"] = bigcommerce_orders
        result.check("BigCommerce requests ÷ (orders ÷ 250), historical", round(per_page, 3), "<= 1.2",
                     per_page <= 1.2)
        result.check("… orders stream alone", round(orders_stream, 3), "1.0 = one request per 250 orders", None)
    requests_per_order = bigcommerce_requests / bigcommerce_orders if bigcommerce_orders else 1.0
    _quota_sample(ctx, result, requests_per_order)
    _square_no_change_cycle(ctx, result)


def _stream_counts(task_result: dict):
    """(stream, counts) of a task's result; a Square location's result carries its account's merchant streams
    under ``merchant`` when the location brought them up to date itself (``tasks.extract_location``)."""
    yield from task_result["streams"].items()
    yield from ((task_result.get("merchant") or {}).get("streams") or {}).items()


def _square_cycle(square_url: str, wh_url: str, run_id: str) -> tuple[list[dict], list[dict]]:
    """One Square cycle as the extract_square DAG runs it: plan, each account's merchant streams once, then
    every location's own streams; returns (the merchant results, the location results)."""
    from bench.task_runner import SQUARE_TOKEN
    from ecomsync import tasks
    from ecomsync.config import load_config
    from ecomsync.extract import ExtractRequest

    config, credentials = load_config(), tasks.Credentials(square_url, SQUARE_TOKEN)
    locations = tasks.locations_to_sync(config, credentials)
    merchants = [tasks.extract_merchant(config, merchant, credentials,
                                        ExtractRequest(run_id=f"{run_id}:merchant:{merchant}"), wh_url)
                 for _, merchant in tasks.merchants_of(config, locations)]
    return merchants, [tasks.extract_location(config, location, credentials,
                                              ExtractRequest(run_id=f"{run_id}:{location['location_id']}"), wh_url,
                                              merchant=False) for location in locations]


def _square_no_change_cycle(ctx: BenchContext, result: StageResult) -> None:
    """A Square cycle 30 minutes after the historical one, nothing changed. Its fewest requests: the plan's
    ListLocations, then per stream the pages of what its look-back must read again — 10 minutes for the merchant
    streams, ``lookback_hours`` (72 h: offline payments arrive late with old times, api-specs README) for each
    location's payments and orders, so at a busy location the window is several pages of payments (100 each)."""
    apis = ctx.start_sandboxes({"square": square_sandbox(ctx.scale, ctx.options.seed)})
    _, url = ctx.new_database("square_cycle")
    square_url = apis.url("square")
    tag = uuid.uuid4().hex[:6]
    _square_cycle(square_url, url, f"bench-square-first-{tag}")  # the first, historical sync
    requests.post(f"{square_url}/__admin/square/clock", json={"minutes": 30}, timeout=60).raise_for_status()
    requests.delete(f"{square_url}/__admin/requests", timeout=60).raise_for_status()
    merchants, locations = _square_cycle(square_url, url, f"bench-square-no-change-{tag}")
    log = requests.get(f"{square_url}/__admin/requests", timeout=60).json()["requests"]
    by_path = Counter(entry["path"] for entry in log)
    extracted = sum(1 for location in locations if location["sync_mode"] != "skipped")
    reread = Counter()
    for task_result in (*merchants, *locations):
        for stream, counts in task_result["streams"].items():
            reread[stream] += counts["fetched"]
    fewest = 1 + sum(fewest_requests("square", stream, counts["fetched"])
                     for task_result in (*merchants, *locations) for stream, counts in task_result["streams"].items())
    one_page_windows = 1 + 3 + 2 * extracted
    result.metrics["square_no_change_cycle"] = {
        "locations_extracted": extracted, "locations_skipped": len(locations) - extracted,
        "requests": len(log), "requests_by_path": dict(sorted(by_path.items())),
        "records_read_again_in_lookback": dict(sorted(reread.items())), "fewest_requests": fewest,
        "formula_1_plus_3_plus_2L": one_page_windows}
    result.check(f"Square requests per no-change cycle with {extracted} locations", len(log),
                 f"<= {fewest}: 1 plan + 3 merchant streams once per account + each location's look-back pages "
                 f"({reread['payments']:,} payments, {reread['orders']:,} orders read again; "
                 f"1 + 3 + 2·{extracted} = {one_page_windows} when each window fits one page)",
                 len(log) <= fewest)


def _quota_sample(ctx: BenchContext, result: StageResult, requests_per_order: float) -> None:
    quota = ctx.options.quota
    wanted_requests = quota.requests * ctx.options.quota_windows
    orders = max(1, round(wanted_requests / requests_per_order))
    scale = Scale(orders / Scale(1).orders_per_store)
    spec = {"bigcommerce": bigcommerce_sandbox(scale, ctx.options.seed, quota=quota, stores=(SAMPLE_STORE,))}
    _, url = ctx.new_database("quota_sample")
    apis = ctx.start_sandboxes(spec)
    task = run_task("extract_store", wh_url=url, bc_url=apis.url("bigcommerce"), store_hash=SAMPLE_STORE,
                    mode="historical", run_id="bench-quota-sample")
    made = sum(counts["requests"] for counts in task.result["streams"].values())
    fetched = sum(counts["fetched"] for counts in task.result["streams"].values())
    log = requests.get(f"{apis.url('bigcommerce')}/__admin/requests", timeout=60).json()["requests"]
    refused = sum(1 for entry in log if entry["status"] == 429)
    quota_floor = made / quota.requests * quota.window_s
    # A fixed window lets the first window's requests through at once: no schedule can beat this.
    fixed_window_floor = (math.ceil(made / quota.requests) - 1) * quota.window_s
    attainment = quota_floor / task.wall_s if task.wall_s else None
    result.metrics["quota_sample"] = {
        "store": SAMPLE_STORE, "orders": scale.orders_per_store, "customers": scale.customers_per_store,
        "records_fetched": fetched, "requests": made, "requests_seen_by_sandbox": len(log), "http_429": refused,
        "quota": f"{quota.requests}/{quota.window_s:g}s", "wall_s": task.wall_s,
        "quota_floor_s": round(quota_floor, 1), "fixed_window_floor_s": round(fixed_window_floor, 1),
        "wall_beyond_fixed_window_floor_s": round(task.wall_s - fixed_window_floor, 1)}
    result.check("throttled wall vs quota floor (sample)", round(attainment, 3) if attainment else None,
                 f">= 0.90 of floor ({made} requests / {quota.requests} per {quota.window_s:g}s)",
                 attainment is not None and attainment >= 0.9)
    result.check("HTTP 429 under the real quota (sample)", refused, "0 (pace, don't bounce)", refused == 0)
    if made < quota.requests:
        result.notes.append(f"the quota sample made {made} requests, fewer than one window's {quota.requests}: "
                            "the quota never bound, so its attainment says little")
