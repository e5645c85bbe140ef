"""Memory: peak RSS of the extract and load tasks at ``--scale`` and at ``--memory-factor`` × that.

One store (a task extracts one store) at each size, in its own sandbox process:
historical ``extract_store`` → ``transform`` → ``load_crm`` in ``dry_run`` mode. The
dry run reads and diffs every CRM row exactly like a real load but sends no
writes; a real push of the whole data set is rate-bound (hours at 5 requests/s),
and what it holds in memory beyond the dry run is one object at a time.
Each task runs in its own process; its peak RSS is ``ru_maxrss`` of that process.
"""
from __future__ import annotations

from bench.context import BenchContext, StageResult, bigcommerce_sandbox
from bench.processes import run_task
from bench.scale import STORES

RSS_LIMIT_MB = 300
GROWTH_LIMIT = 1.2
STORE = STORES[0]


def measure(ctx: BenchContext, factor: float) -> dict:
    scale = ctx.scale.times(factor)
    apis = ctx.start_sandboxes({
        "bigcommerce": bigcommerce_sandbox(scale, ctx.options.seed, quota=None, stores=(STORE,)),
        "activecampaign": {"enforce_rate_limit": False}})
    _, url = ctx.new_database(f"memory_{factor:g}x".replace(".", "_"))
    extract = run_task("extract_store", wh_url=url, bc_url=apis.url("bigcommerce"), store_hash=STORE,
                       mode="historical", run_id=f"bench-memory-{factor:g}")
    transform = ctx.transform(url, full_refresh=True, label=f"memory-{factor:g}")
    load = run_task("load_crm", wh_url=url, ac_url=apis.url("activecampaign"), run_id=f"bench-memory-{factor:g}",
                    mode="dry_run", requests_per_second=1000)
    fetched = sum(counts["fetched"] for counts in extract.result["streams"].values())
    return {"factor": factor, "orders": scale.orders_per_store, "customers": scale.customers_per_store,
            "records_extracted": fetched, "extract_max_rss_mb": extract.max_rss_mb, "extract_wall_s": extract.wall_s,
            "transform_max_rss_mb": transform.max_rss_mb, "transform_wall_s": transform.wall_s,
            "load_dry_run_max_rss_mb": load.max_rss_mb, "load_dry_run_wall_s": load.wall_s,
            "load_report": load.result}


def run(ctx: BenchContext, result: StageResult) -> None:
    factor = ctx.options.memory_factor
    small, large = measure(ctx, 1.0), measure(ctx, factor)
    result.metrics.update({"store": STORE, "at_1x": small, f"at_{factor:g}x": large})
    for task, key in (("extract", "extract_max_rss_mb"), ("load (dry run)", "load_dry_run_max_rss_mb")):
        for size in (small, large):
            result.check(f"{task} peak RSS at {size['factor']:g}× ({size['orders']:,} orders)", size[key],
                         f"<= {RSS_LIMIT_MB} MB", size[key] <= RSS_LIMIT_MB, "MB")
        growth = large[key] / small[key]
        result.check(f"{task} RSS {factor:g}× ÷ 1×", round(growth, 3), f"<= {GROWTH_LIMIT}", growth <= GROWTH_LIMIT)
