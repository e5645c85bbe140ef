"""Run the dbt project (``dbt_project/``) in-process against a warehouse given as a URL.

The profile (``dbt_project/profiles.yml``) reads ``DBT_PG_*`` environment variables; ``run_dbt`` derives
them from the warehouse URL for the duration of one invocation, so callers only ever pass
``WAREHOUSE_URL``. Returns per-node results so callers can report "rows modelled"; raises
``DbtRunError`` naming the failing nodes when dbt does not succeed.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"

_FAILED_STATUSES = {"error", "fail", "runtime error"}
# dbt's invocation state and os.environ are process-wide: one invocation at a time per process.
_invocation_lock = threading.Lock()


@dataclass(frozen=True)
class NodeResult:
    name: str
    unique_id: str
    resource_type: str  # model, test, seed, snapshot, unit_test, …
    status: str  # success, error, fail, warn, pass, skipped, …
    rows_affected: int | None
    message: str | None
    execution_time: float

    @property
    def failed(self) -> bool:
        return self.status in _FAILED_STATUSES


@dataclass(frozen=True)
class DbtRunSummary:
    args: list[str]
    success: bool
    nodes: list[NodeResult]
    error: str | None = None

    @property
    def failed_nodes(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.failed]

    @property
    def rows_modelled(self) -> int:
        """Rows written by models this invocation (views report none)."""
        return sum(node.rows_affected or 0 for node in self.nodes if node.resource_type == "model")

    def describe(self) -> str:
        lines = [f"dbt {' '.join(self.args)}: {'success' if self.success else 'FAILED'}"]
        lines += [f"  {node.resource_type} {node.name}: {node.status}"
                  + (f" ({node.rows_affected} rows)" if node.rows_affected is not None else "")
                  + (f" — {node.message}" if node.failed and node.message else "")
                  for node in self.nodes]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


class DbtRunError(RuntimeError):
    def __init__(self, summary: DbtRunSummary):
        self.summary = summary
        failing = ", ".join(f"{node.name} ({node.status}: {node.message})" for node in summary.failed_nodes)
        reason = f"failing nodes: {failing}" if failing else (summary.error or "dbt reported failure")
        super().__init__(f"dbt {' '.join(summary.args)} failed; {reason}")


def profile_env(warehouse_url: str) -> dict[str, str]:
    """The ``DBT_PG_*`` variables profiles.yml reads, from ``postgresql://user:pw@host:port/db?sslmode=…``."""
    parts = urlsplit(warehouse_url)
    if not parts.scheme.startswith("postgres"):
        raise ValueError(f"not a Postgres URL: {parts.scheme}://…")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ValueError("the warehouse URL names no database")
    env = {
        "DBT_PG_HOST": parts.hostname or "127.0.0.1",
        "DBT_PG_PORT": str(parts.port or 5432),
        "DBT_PG_USER": unquote(parts.username or "postgres"),
        "DBT_PG_PASSWORD": unquote(parts.password or ""),
        "DBT_PG_DBNAME": database,
    }
    sslmode = parse_qs(parts.query).get("sslmode")
    if sslmode:
        env["DBT_PG_SSLMODE"] = sslmode[0]
    return env


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def target_dir(target_path: str | os.PathLike[str] | None = None) -> Path:
    """Where dbt writes its artifacts (``manifest.json``, ``run_results.json``): ``target_path``, else
    ``$DBT_TARGET_PATH`` (dbt reads it too), else ``dbt_project/target``."""
    if target_path is not None:
        return Path(target_path)
    if os.environ.get("DBT_TARGET_PATH"):
        return Path(os.environ["DBT_TARGET_PATH"])
    return PROJECT_DIR / "target"


def run_dbt(
    args: list[str],
    warehouse_url: str,
    vars: dict[str, Any] | None = None,
    *,
    target_path: str | os.PathLike[str] | None = None,
) -> DbtRunSummary:
    """Run ``dbt <args>`` on the project against ``warehouse_url``.

    ``vars`` become ``--vars`` (e.g. ``{"abandoned_cart_after_minutes": 30}``). ``target_path`` keeps
    artifacts and logs apart when several runs share a checkout (default ``dbt_project/target``).
    """
    from dbt.cli.main import dbtRunner  # heavy import, only when dbt actually runs

    if not args:
        raise ValueError("run_dbt needs a dbt command, e.g. ['build']")
    cli_args = [*args, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR)]
    if vars:
        cli_args += ["--vars", json.dumps(vars)]
    if target_path is not None:
        cli_args += ["--target-path", str(target_path), "--log-path", str(target_path)]

    with _invocation_lock, _environment({**profile_env(warehouse_url), "PGOPTIONS": _pg_options()}):
        outcome = dbtRunner().invoke(cli_args)

    summary = DbtRunSummary(
        args=list(args),
        success=bool(outcome.success),
        nodes=_node_results(outcome.result),
        error=str(outcome.exception) if outcome.exception else None,
    )
    if not summary.success:
        raise DbtRunError(summary)
    return summary


def _pg_options() -> str:
    """Planner settings for dbt's sessions (libpq reads PGOPTIONS for every connection dbt opens; dbt's profile
    cannot set session options). Both answer the same fact: the jsonb laterals of the staging models (a
    payload read once, consignments, line items unnested) are expressions without statistics, so the planner
    misjudges them.

    - ``jit=off``: their cost estimates are huge, so Postgres JIT-compiled queries over a handful of rows:
      seconds of compile time per model.
    - ``enable_memoize=off``: it takes each lateral's input (a whole payload or consignment) for one of 200
      distinct values and caches the unnesting per value, but every payload is distinct: every lookup
      misses and hashes a whole document. Measured at bench scale 0.25 (``--full-refresh``, 2026-11-30):
      41.8 s with Memoize, 30.7 s without; no node slower.
    """
    return f"{os.environ.get('PGOPTIONS', '')} -c jit=off -c enable_memoize=off".strip()


def _node_results(result: Any) -> list[NodeResult]:
    # Commands that run nodes return a RunExecutionResult; others (parse, docs generate, ls) do not.
    node_runs = getattr(result, "results", None)
    if not isinstance(node_runs, list):
        return []
    nodes = []
    for run in node_runs:
        node = getattr(run, "node", None)
        if node is None:
            continue
        adapter_response = getattr(run, "adapter_response", None) or {}
        nodes.append(NodeResult(
            name=node.name,
            unique_id=node.unique_id,
            resource_type=str(node.resource_type),
            status=str(run.status),
            rows_affected=_rows(adapter_response.get("rows_affected")),
            message=run.message,
            execution_time=float(run.execution_time or 0.0),
        ))
    return nodes


def _rows(rows_affected: Any) -> int | None:
    # Postgres reports -1 for statements that write no rows (views, DDL).
    return rows_affected if isinstance(rows_affected, int) and rows_affected >= 0 else None


DOCS_DIR_ENV = "ECOMSYNC_DBT_DOCS_DIR"
DOCS_PAGE = "static_index.html"  # `dbt docs generate --static`: one page with the manifest and catalog inside


def docs_dir() -> Path:
    """Where the analysts' dbt docs site is written and served from: ``$ECOMSYNC_DBT_DOCS_DIR``, else
    ``$AIRFLOW_HOME/ecomsync/dbt-docs``, else ``dbt_project/target-docs``."""
    if os.environ.get(DOCS_DIR_ENV):
        return Path(os.environ[DOCS_DIR_ENV])
    if os.environ.get("AIRFLOW_HOME"):
        return Path(os.environ["AIRFLOW_HOME"]) / "ecomsync" / "dbt-docs"
    return PROJECT_DIR / "target-docs"


def generate_docs(warehouse_url: str, target_path: str | os.PathLike[str] | None = None) -> Path:
    """``dbt docs generate --static`` against ``warehouse_url`` (the catalog reads its tables); returns the
    page (``<target>/static_index.html``). The profile comes from the URL, like every other dbt run."""
    target = Path(target_path) if target_path is not None else docs_dir()
    target.mkdir(parents=True, exist_ok=True)
    run_dbt(["docs", "generate", "--static"], warehouse_url, target_path=target)
    page = target / DOCS_PAGE
    if not page.is_file():
        raise RuntimeError(f"dbt docs generate wrote no {DOCS_PAGE} in {target}")
    return page


def generate_docs_in_subprocess(warehouse_url: str, target_path: str | os.PathLike[str], timeout: float = 600) -> Path:
    """``generate_docs`` in a child process (``python -m ecomsync.dbt docs``): for long-lived servers such as
    the Airflow API server, where dbt's process-wide state and ``os.environ`` changes must not leak."""
    import subprocess
    import sys

    env = {**os.environ, "WAREHOUSE_URL": warehouse_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")]))}
    result = subprocess.run([sys.executable, "-m", "ecomsync.dbt", "docs", "--target-path", str(target_path)],
                            env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise RuntimeError(f"dbt docs generate failed (exit {result.returncode}):\n{tail}")
    return Path(target_path) / DOCS_PAGE


def main(argv: list[str] | None = None) -> int:
    """``python -m ecomsync.dbt docs [--target-path DIR]``: build the analysts' dbt docs from ``WAREHOUSE_URL``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ecomsync.dbt")
    sub = parser.add_subparsers(dest="command", required=True)
    docs = sub.add_parser("docs", help="dbt docs generate --static against WAREHOUSE_URL")
    docs.add_argument("--target-path", type=Path, default=None, help=f"default: {DOCS_DIR_ENV} or $AIRFLOW_HOME")
    args = parser.parse_args(argv)
    url = os.environ.get("WAREHOUSE_URL")
    if not url:
        parser.error("set WAREHOUSE_URL to the warehouse (postgresql://user:pass@host:port/db)")
    print(generate_docs(url, args.target_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
