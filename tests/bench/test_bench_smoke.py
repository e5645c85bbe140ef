"""The benchmark harness at a tiny scale, end to end, so it cannot rot (issue 8).

No timing assertions: performance targets are the benchmark's business, not the test
suite's. This proves every stage runs against the real sandboxes and Postgres and
reports sane, non-zero counts in its JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stages import STAGES

pytestmark = pytest.mark.bench

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESULTS = PROJECT_ROOT / "bench" / "results"


@pytest.fixture(scope="module")
def bench_run(local_pg) -> dict:
    before = set(RESULTS.glob("*.json"))
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--scale", "0.0005", "--bc-quota", "10/1", "--quota-windows", "1.5",
         "--crm-orders", "12", "--memory-factor", "2"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}{os.pathsep}{PROJECT_ROOT}"})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    written = sorted(set(RESULTS.glob("*.json")) - before)
    assert len(written) == 1, completed.stdout[-2000:]
    document = json.loads(written[0].read_text())
    written[0].unlink()  # a smoke run's figures are not benchmark results
    document["stdout"] = completed.stdout
    return document


def checks(document: dict, stage: str) -> dict[str, dict]:
    return {check["metric"]: check for check in document["stages"][stage]["checks"]}


def test_every_stage_ran_without_error(bench_run):
    assert list(bench_run["stages"]) == list(STAGES)
    errors = {name: stage["error"] for name, stage in bench_run["stages"].items() if "error" in stage}
    assert not errors
    for name, stage in bench_run["stages"].items():
        assert stage["checks"], f"{name} measured nothing"
    assert "target / ceiling" in bench_run["stdout"]
    assert bench_run["machine"]["nproc"] >= 1 and bench_run["machine"]["postgres"]


def test_extraction_counts_are_sane(bench_run):
    metrics = bench_run["stages"]["extraction"]["metrics"]
    scale = bench_run["scale"]
    assert metrics["per_stream"]["bigcommerce.orders"]["records"] == scale["orders_total"]
    # The Square merchant also has an inactive location, whose payments are (rightly) not extracted.
    assert 0 < metrics["per_stream"]["square.payments"]["records"] <= scale["payments_total"]
    assert 0 < metrics["fewest_requests"] <= metrics["requests_made"]
    sample = metrics["quota_sample"]
    assert sample["requests"] > 0 and sample["records_fetched"] > 0
    assert sample["requests_seen_by_sandbox"] >= sample["requests"]


def test_landing_lands_every_row(bench_run):
    metrics = bench_run["stages"]["landing"]["metrics"]
    assert metrics["rows"] == bench_run["scale"]["orders_total"]
    assert metrics["rows_landed"] == metrics["rows"]
    assert metrics["land_rows_per_s"] > 0 and metrics["plain_copy_rows_per_s"] > 0


def test_dbt_rebuilds_after_a_change(bench_run):
    metrics = bench_run["stages"]["dbt"]["metrics"]
    assert metrics["orders_changed"] > 0
    assert metrics["full_refresh_result"]["success"] and metrics["incremental_result"]["success"]
    assert metrics["full_refresh_by_kind_s"]["model"] > 0


def test_crm_load_is_counted_and_a_rerun_writes_nothing(bench_run):  # P4
    metrics = bench_run["stages"]["crm"]["metrics"]
    assert metrics["requests"] > 0 and metrics["changed_by_group"].get("orders", 0) > 0
    assert checks(bench_run, "crm")["writes on a rerun with no changes"]["measured"] == 0


def test_memory_is_measured_at_both_sizes(bench_run):
    metrics = bench_run["stages"]["memory"]["metrics"]
    small, large = metrics["at_1x"], metrics["at_2x"]
    assert 0 < small["orders"] < large["orders"]
    for size in (small, large):
        assert size["extract_max_rss_mb"] > 0 and size["load_dry_run_max_rss_mb"] > 0


def test_a_cycle_without_changes_writes_nothing(bench_run):  # P2 P4
    metrics = bench_run["stages"]["end_to_end"]["metrics"]
    assert metrics["no_changes"]["records_landed"] == 0 and metrics["no_changes"]["crm_writes"] == 0
    assert metrics["changes"]["orders_changed"] + metrics["changes"]["payments_refunded"] > 0
    assert metrics["one_percent"]["records_landed"] > 0


def test_a_cycle_without_changes_builds_only_the_clock_models(bench_run):  # P3, issue 16
    metrics = bench_run["stages"]["end_to_end"]["metrics"]
    # No dbt at all while no model that reads the clock is due: the bench's checkouts were all abandoned long
    # ago, and the segments' day windows move at midnight UTC — a midnight between the full refresh and the
    # no-change cycle (both after the run started) makes the clock models due, and they alone are rebuilt.
    build, reason = metrics["no_changes"]["transform_build"], metrics["no_changes"]["transform_reason"]
    if bench_run["started_at"][:10] == metrics["no_changes"]["load_report"]["started_at"][:10]:
        assert build == "nothing", reason
    else:
        assert build in ("nothing", "time_dependent"), reason
    assert metrics["one_percent"]["transform_build"] == "build"
    assert metrics["full_refresh_transform_s"] > 0
    assert "no-change cycle ÷ dbt full refresh" in checks(bench_run, "end_to_end")


def test_bigcommerce_requests_are_reported_per_page_of_orders(bench_run):  # issue 16
    metrics = bench_run["stages"]["extraction"]["metrics"]
    assert metrics["bigcommerce_orders"] == bench_run["scale"]["orders_total"]
    assert metrics["bigcommerce_requests"] >= metrics["per_stream"]["bigcommerce.orders"]["requests"] > 0
    assert "BigCommerce requests ÷ (orders ÷ 250), historical" in checks(bench_run, "extraction")
