"""``make bench ARGS="…"`` = ``python -m bench …``: build a sandbox at a scale, measure each stage.

Prints a table (measured figure, its ceiling or target, ok/MISS) and writes the whole
result as JSON to bench/results/. See bench/README.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import report
from bench.context import BenchContext, Options, Quota, StageResult
from bench.scale import Scale
from bench.stages import STAGES
from devstack.postgres import LocalPostgres


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies the default data set (200,000 BigCommerce orders and 50,000 customers "
                             "over 2 stores; 200,000 Square payments over 3 locations). Default 1")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of: {', '.join(STAGES)} (default: all)")
    parser.add_argument("--bc-quota", default="150/30", type=Quota.parse,
                        help="BigCommerce quota enforced in the throttled sample, REQUESTS/SECONDS (default 150/30)")
    parser.add_argument("--quota-windows", type=float, default=4.0,
                        help="how many quota windows the throttled extraction sample spans (default 4)")
    parser.add_argument("--crm-orders", type=int, default=400,
                        help="orders in the CRM-load sample, paced at the real 5 requests/s (default 400)")
    parser.add_argument("--memory-factor", type=float, default=4.0,
                        help="the memory stage compares --scale with --scale × this (default 4)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep-databases", action="store_true", help="leave the bench_* databases for inspection")
    args = parser.parse_args(argv)
    args.stages = [name.strip() for name in args.stages.split(",") if name.strip()]
    unknown = [name for name in args.stages if name not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {list(STAGES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    options = Options(scale=Scale(args.scale), quota=args.bc_quota, quota_windows=args.quota_windows,
                      crm_orders=args.crm_orders, memory_factor=args.memory_factor, seed=args.seed,
                      keep_databases=args.keep_databases)
    started = report.utc_now()
    postgres = LocalPostgres().ensure_running()
    results: list[StageResult] = []

    def document(finished: bool) -> dict:
        return {"started_at": started.isoformat(),
                "finished_at": report.utc_now().isoformat() if finished else None,
                "machine": report.machine(postgres.url("postgres")), "scale": options.scale.describe(),
                "options": {"stages": args.stages, "bc_quota": f"{options.quota.requests}/{options.quota.window_s:g}",
                            "quota_windows": options.quota_windows, "crm_orders": options.crm_orders,
                            "memory_factor": options.memory_factor, "seed": options.seed},
                "stages": {r.name: r.as_dict() for r in results}}

    with tempfile.TemporaryDirectory(prefix="ecomsync-bench-") as work_dir:
        context = BenchContext(options, postgres, Path(work_dir))
        try:
            for name in args.stages:
                result = StageResult(name)
                print(f"[bench] {name} …", flush=True)
                t0 = time.monotonic()
                try:
                    STAGES[name](context, result)
                except Exception as exc:  # one stage failing must not hide the others' figures
                    result.error = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                result.wall_s = time.monotonic() - t0
                print(f"[bench] {name} done in {result.wall_s:.0f}s", flush=True)
                results.append(result)
                # a long run's finished stages are on disk even if a later stage is stopped
                print(report.table([result]), flush=True)
                report.write_json(document(finished=False), started)
        finally:
            context.close()
    path = report.write_json(document(finished=True), started)
    print()
    print(report.table(results))
    print(f"\nJSON: {path}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
