"""What a scheduled ``dbt build`` would read, and whether anything of it changed since the last build.

A cycle that landed nothing must not cost a build of the whole project (issue 16). Before a scheduled build
``plan_build`` compares two fingerprints with those the last complete build recorded in ``state.dbt_builds``:

- **inputs**, taken in one snapshot before the build: every ``raw.*`` table as its row count and the sum of a
  hash of each row version's ``(ctid, xmin)`` (``ecomsync.row_versions``) — any insert, update or delete by
  anyone (landing, the privacy erase, a hand fix) moves it, a no-op re-landing does not (``ON CONFLICT … WHERE``
  false writes no row version); the two ``state`` sources (``state.connections``, ``state.rejected_records``)
  as a hash of their rows without the columns that tick on every run and that no model past staging reads
  (``TICKING_COLUMNS``);
  the dbt project's files, the ``--vars`` and dbt's version.
- **relations**, taken after the build: the oid of every model's relation (from the build's
  ``manifest.json``). dbt replaces a table or view under a new oid, so another build in between (the webhook
  micro-batch's selection, a hand-run ``dbt run``) or a dropped relation forces a complete build.

Nothing changed → only the models that read the clock are rebuilt, with everything downstream of them
(``TIME_DEPENDENT_SELECTION``): ``abandoned_carts`` turns a cart abandoned by the minute
(``now() - abandoned_cart_after_minutes``), ``segment_members`` reads the clock by the day (``within_days``
windows end at midnight UTC); their children ``contact_ecommerce_profile`` and the segments follow — and
only once one of them is due: each records after its build when its rows next change with nothing landed
(``intermediate.clock_due``, ``dbt_project/macros/clock.sql``: the next open checkout's idle time running
out, the next midnight UTC). Before the earliest of those the plan is ``nothing``: the build would rebuild
the same rows, so no ``dbt`` runs at all. A snapshot can only be older than what the build then reads,
never newer, so a change committed during a build moves the next cycle's fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from ecomsync.dbt import PROJECT_DIR, target_dir
from ecomsync.row_versions import row_versions_sum

log = logging.getLogger(__name__)

# Columns of the state sources that change on every run without changing what the models build from them;
# tests/integration/test_dbt_task.py proves no model past staging reads them.
TICKING_COLUMNS: dict[str, tuple[str, ...]] = {
    "connections": ("last_success_at",),
    "rejected_records": ("last_rejected_at", "run_id"),
}
# Models whose SQL reads now()/current_date (test_dbt_task.py keeps this list complete), with their children.
TIME_DEPENDENT_MODELS = ("abandoned_carts", "segment_members")
TIME_DEPENDENT_SELECTION = [f"{model}+" for model in TIME_DEPENDENT_MODELS]

BUILDS_DDL = """
create schema if not exists state;
create table if not exists state.dbt_builds (
    build_id bigserial primary key,
    started_at timestamptz not null,
    finished_at timestamptz not null default now(),
    kind text not null,            -- 'full_refresh' | 'build' | 'time_dependent'
    inputs text not null,          -- fingerprint of what the build read, taken before it
    relations text not null        -- fingerprint of the models' relations, taken after it
)
"""
_PROJECT_SKIP = {"target", "logs", "dbt_packages", "target-docs"}


@dataclass(frozen=True)
class BuildPlan:
    """``kind``: ``build`` (everything), ``full_refresh``, ``time_dependent`` (inputs unchanged: only
    ``select``), ``nothing`` (inputs unchanged and no clock model due: no build), or ``unrecorded`` (a
    selected build or a retry: the next scheduled build is complete)."""

    kind: str
    select: list[str] | None
    inputs: str | None
    started_at: Any = None
    reason: str = ""


def project_fingerprint(dbt_vars: dict | None) -> str:
    """sha256 of the dbt project's files (models, macros, tests, YAML), the ``--vars`` and dbt's version."""
    from dbt.version import __version__ as dbt_version

    digest = hashlib.sha256(f"dbt {dbt_version}\n{json.dumps(dbt_vars or {}, sort_keys=True)}\n".encode())
    for root, dirs, files in os.walk(PROJECT_DIR):
        dirs[:] = sorted(d for d in dirs if d not in _PROJECT_SKIP and not d.startswith((".", "target")))
        for name in sorted(files):
            if name.endswith((".sql", ".yml", ".yaml", ".csv", ".md", ".py")):
                path = Path(root, name)
                digest.update(f"{path.relative_to(PROJECT_DIR)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def inputs_fingerprint(cur, dbt_vars: dict | None) -> str:
    """The fingerprint of every table the build reads, in the cursor's snapshot, plus the project's."""
    parts = [project_fingerprint(dbt_vars)]
    cur.execute("select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = 'raw' and c.relkind in ('r', 'p') order by 1")
    for (table,) in cur.fetchall():
        cur.execute(sql.SQL("select count(*), {} from raw.{} t").format(row_versions_sum("t"), sql.Identifier(table)))
        parts.append(f"raw.{table}:{':'.join(map(str, cur.fetchone()))}")
    for table, ticking in TICKING_COLUMNS.items():
        cur.execute("select to_regclass(%s) is not null", (f"state.{table}",))
        if not cur.fetchone()[0]:
            parts.append(f"state.{table}:absent")
            continue
        cur.execute(sql.SQL("select count(*), coalesce(sum(hashtext((to_jsonb(t) - %s::text[])::text)::bigint), 0) "
                            "from state.{} as t").format(sql.Identifier(table)), (list(ticking),))
        parts.append(f"state.{table}:{':'.join(map(str, cur.fetchone()))}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def relations_fingerprint(cur, target_path: str | os.PathLike[str] | None) -> str | None:
    """The oids of the relations of every model in the last invocation's ``manifest.json`` (None without one)."""
    manifest = target_dir(target_path) / "manifest.json"
    try:
        nodes = json.loads(manifest.read_text()).get("nodes", {})
    except (OSError, ValueError):
        return None
    relations = sorted(f"{node['schema']}.{node.get('alias') or node['name']}" for node in nodes.values()
                       if node.get("resource_type") == "model"
                       and node.get("config", {}).get("materialized") != "ephemeral")
    if not relations:
        return None
    cur.execute("select name, to_regclass(quote_ident(split_part(name, '.', 1)) || '.' "
                "|| quote_ident(split_part(name, '.', 2)))::oid from unnest(%s::text[]) as name order by 1",
                (relations,))
    return hashlib.sha256(repr(cur.fetchall()).encode()).hexdigest()


def clock_due(cur, now: Any) -> str | None:
    """When the first of the ``TIME_DEPENDENT_MODELS`` would rebuild different rows with nothing landed (the
    earliest ``intermediate.clock_due.due_at``, as text; ``infinity``: never), if that is after ``now``; None
    when it is not, or when one of them has no record (a warehouse built before the table, a model never
    built): a build is due now."""
    cur.execute("select to_regclass('intermediate.clock_due') is not null")
    if not cur.fetchone()[0]:
        return None
    cur.execute("select count(*), min(due_at) > %s, min(due_at)::text from intermediate.clock_due "
                "where model = any(%s)", (now, list(TIME_DEPENDENT_MODELS)))
    recorded, later, due = cur.fetchone()
    return due if recorded == len(TIME_DEPENDENT_MODELS) and later else None


def _snapshot(wh_url: str):
    conn = psycopg2.connect(wh_url)
    conn.set_session(isolation_level="REPEATABLE READ")
    return conn


def plan_build(wh_url: str, dbt_vars: dict | None, *, full_refresh: bool = False, select: list[str] | None = None,
               retry: bool = False, target_path: str | os.PathLike[str] | None = None) -> BuildPlan:
    """What this ``transform`` must build. Only a scheduled build (no ``select``, no retry) is ever narrowed."""
    if retry or select:
        return BuildPlan("unrecorded", select, None, reason="a retry or a selected build")
    conn = _snapshot(wh_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(BUILDS_DDL)
        with conn, conn.cursor() as cur:
            cur.execute("select now()")
            started_at = cur.fetchone()[0]
            inputs = inputs_fingerprint(cur, dbt_vars)
            if full_refresh:
                return BuildPlan("full_refresh", None, inputs, started_at, "full refresh")
            cur.execute("select inputs, relations from state.dbt_builds order by build_id desc limit 1")
            last = cur.fetchone()
            if last is None:
                return BuildPlan("build", None, inputs, started_at, "no build recorded")
            if last[0] != inputs:
                return BuildPlan("build", None, inputs, started_at, "inputs changed since the last build")
            if relations_fingerprint(cur, target_path) != last[1]:
                return BuildPlan("build", None, inputs, started_at, "the models' relations changed since then")
            due = clock_due(cur, started_at)
            if due is not None:
                return BuildPlan("nothing", [], inputs, started_at,
                                 f"nothing landed since the last build and no model that reads the clock is due "
                                 f"before {due}")
            return BuildPlan("time_dependent", list(TIME_DEPENDENT_SELECTION), inputs, started_at,
                             "nothing landed since the last build: only the models that read the clock")
    finally:
        conn.close()


def record_build(wh_url: str, plan: BuildPlan, target_path: str | os.PathLike[str] | None = None) -> None:
    """After a successful build of ``plan``: its inputs and the relations it left (nothing for ``unrecorded``)."""
    if plan.kind == "unrecorded" or plan.inputs is None:
        return
    conn = _snapshot(wh_url)
    try:
        with conn, conn.cursor() as cur:
            relations = relations_fingerprint(cur, target_path)
            if relations is None:
                log.warning("no manifest.json in %s: this build is not recorded, the next one builds everything",
                            target_dir(target_path))
                return
            cur.execute("insert into state.dbt_builds (started_at, kind, inputs, relations) values (%s, %s, %s, %s)",
                        (plan.started_at, plan.kind, plan.inputs, relations))
            cur.execute("delete from state.dbt_builds where build_id < (select max(build_id) - 1000 "
                        "from state.dbt_builds)")  # a bounded history
    finally:
        conn.close()


def forget_builds(wh_url: str) -> None:
    """The next scheduled build is complete whatever the fingerprints say (used when a build failed)."""
    conn = psycopg2.connect(wh_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select to_regclass('state.dbt_builds') is not null")
            if cur.fetchone()[0]:
                cur.execute("delete from state.dbt_builds")
    finally:
        conn.close()
