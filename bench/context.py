"""What the stages share: the scale, Postgres databases, the sandboxes, results.

The expensive things are built once per run and only when a stage asks:
the source sandboxes at the chosen scale, and a warehouse holding a full
historical extract of them (``historical()``). A stage that changes data works on
a copy of that warehouse (``CREATE DATABASE … TEMPLATE``), never on the original.
"""
from __future__ import annotations

import shutil
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from bench.processes import Sandboxes, TaskRun, run_task, sandboxes
from bench.scale import SQUARE_LOCATIONS, STORES, Scale
from devstack.postgres import LocalPostgres


@dataclass(frozen=True)
class Quota:
    """BigCommerce's per-store quota: ``requests`` per ``window_s`` seconds."""

    requests: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> Quota:
        try:
            requests, window = text.split("/")
            return cls(int(requests), float(window))
        except ValueError as exc:
            raise ValueError(f"a quota is REQUESTS/SECONDS, e.g. 150/30, not {text!r}") from exc


@dataclass(frozen=True)
class Options:
    scale: Scale
    quota: Quota
    quota_windows: float  # how many quota windows the throttled extraction sample should span
    crm_orders: int  # orders (and half as many customers) in the CRM-load sample
    memory_factor: float
    seed: int = 42
    keep_databases: bool = False


@dataclass
class Check:
    """One measured figure against its ceiling or target."""

    metric: str
    measured: float | int | None
    target: str
    met: bool | None  # None: informational, no target
    unit: str = ""
    why_missed: str = ""

    def as_dict(self) -> dict:
        return {"metric": self.metric, "measured": self.measured, "unit": self.unit, "target": self.target,
                "met": self.met, **({"why_missed": self.why_missed} if self.why_missed else {})}


@dataclass
class StageResult:
    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    error: str | None = None

    def check(self, metric: str, measured, target: str, met: bool | None, unit: str = "",
              why_missed: str = "") -> None:
        self.checks.append(Check(metric, measured, target, met, unit, why_missed if met is False else ""))

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 1), "metrics": self.metrics,
                "checks": [c.as_dict() for c in self.checks], "notes": self.notes,
                **({"error": self.error} if self.error else {})}


@dataclass
class HistoricalExtract:
    """A warehouse holding one historical extract of every source connection."""

    database: str
    url: str
    runs: list[TaskRun]
    run_id: str


def bigcommerce_sandbox(scale: Scale, seed: int, quota: Quota | None, stores=STORES) -> dict:
    """create_app options for sandbox.bigcommerce; ``quota=None`` leaves the quota unenforced."""
    options = {"seed": seed, "stores": list(stores), "orders": scale.orders_per_store,
               "customers": scale.customers_per_store, "enforce_rate_limit": quota is not None}
    if quota is not None:
        options.update(quota=quota.requests, window_ms=int(quota.window_s * 1000))
    return options


def square_sandbox(scale: Scale, seed: int) -> dict:
    """create_app options for sandbox.square: one merchant whose payments spread over its locations."""
    return {"seed": seed, "payments": scale.payments_per_location * SQUARE_LOCATIONS,
            "customers": scale.customers_per_store}


class BenchContext:
    def __init__(self, options: Options, postgres: LocalPostgres, work_dir: Path):
        self.options = options
        self.postgres = postgres
        self.work_dir = work_dir
        self.run_tag = uuid.uuid4().hex[:6]
        self._databases: list[str] = []
        self._resources = ExitStack()
        self._sources: Sandboxes | None = None
        self._historical: HistoricalExtract | None = None

    @property
    def scale(self) -> Scale:
        return self.options.scale

    # -- databases -------------------------------------------------------------
    def new_database(self, label: str, template: str | None = None) -> tuple[str, str]:
        """A new database (a copy of ``template`` when given); returns (name, url)."""
        name = f"bench_{self.run_tag}_{label}"
        conn = psycopg2.connect(self.postgres.url("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                statement = sql.SQL("create database {}").format(sql.Identifier(name))
                if template:
                    statement += sql.SQL(" template {}").format(sql.Identifier(template))
                cur.execute(statement)
        finally:
            conn.close()
        self._databases.append(name)
        return name, self.postgres.url(name)

    # -- sandboxes --------------------------------------------------------------
    def start_sandboxes(self, spec: dict) -> Sandboxes:
        """Sandboxes that live until the run ends."""
        return self._resources.enter_context(sandboxes(spec))

    def sources(self) -> Sandboxes:
        """BigCommerce and Square at the chosen scale (quota not enforced) plus an unthrottled CRM."""
        if self._sources is None:
            self._sources = self.start_sandboxes({
                "bigcommerce": bigcommerce_sandbox(self.scale, self.options.seed, quota=None),
                "square": square_sandbox(self.scale, self.options.seed),
                "activecampaign": {"enforce_rate_limit": False},
            })
        return self._sources

    def historical(self) -> HistoricalExtract:
        if self._historical is None:
            database, url = self.new_database("raw")
            run_id = f"bench-historical-{self.run_tag}"
            runs = extract_everything(self.sources(), url, "historical", run_id)
            self._historical = HistoricalExtract(database, url, runs, run_id)
        return self._historical

    def transform(self, url: str, full_refresh: bool, label: str) -> TaskRun:
        """``ecomsync.tasks.transform`` in its own process; its run_results.json is kept as ``dbt_results(label)``.

        One target folder for the whole run, so dbt's partial parse is reused (a full parse costs seconds)."""
        target = self.work_dir / "dbt-target"
        run = run_task("transform", env={"DBT_TARGET_PATH": str(target), "DBT_LOG_PATH": str(target)},
                       wh_url=url, full_refresh=full_refresh)
        shutil.copyfile(target / "run_results.json", self.dbt_results(label))
        return run

    def dbt_results(self, label: str) -> Path:
        return self.work_dir / f"dbt-run-results-{label}.json"

    def close(self) -> None:
        self._resources.close()
        if not self.options.keep_databases:
            for name in self._databases:
                self.postgres.drop_database(name)


def square_locations(square_url: str) -> list[dict]:
    from bench.task_runner import SQUARE_TOKEN
    from ecomsync import tasks
    from ecomsync.config import load_config

    return tasks.locations_to_sync(load_config(), tasks.Credentials(square_url, SQUARE_TOKEN))


def extract_everything(apis: Sandboxes, wh_url: str, mode: str, run_id: str) -> list[TaskRun]:
    """Every store and location, one task process each, one after the other."""
    runs = [run_task("extract_store", wh_url=wh_url, bc_url=apis.url("bigcommerce"), store_hash=store_hash,
                     mode=mode, run_id=run_id) for store_hash in STORES]
    runs += [run_task("extract_location", wh_url=wh_url, square_url=apis.url("square"), location=location,
                      mode=mode, run_id=run_id) for location in square_locations(apis.url("square"))]
    return runs
