"""The run's outputs: a table on stdout and a JSON file in bench/results/."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from bench.context import StageResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine(postgres_url: str) -> dict:
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("show server_version")
        server_version = cur.fetchone()[0]
        cur.execute("select name, setting from pg_settings where name in "
                    "('fsync', 'synchronous_commit', 'shared_buffers', 'work_mem') order by name")
        settings = dict(cur.fetchall())
    with open("/proc/meminfo") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(total_kib / 1024 ** 2, 1),
            "postgres": server_version, "postgres_settings": settings, "python": platform.python_version(),
            "kernel": platform.release()}


def _value(measured, unit: str) -> str:
    if measured is None:
        return "—"
    if isinstance(measured, float):
        text = f"{measured:,.3f}" if abs(measured) < 10 else f"{measured:,.1f}"
    else:
        text = f"{measured:,}"
    return f"{text} {unit}".strip()


def table(stages: list[StageResult]) -> str:
    rows = [("stage", "metric", "measured", "target / ceiling", "")]
    for stage in stages:
        if stage.error:
            rows.append((stage.name, "ERROR", stage.error.splitlines()[0][:80], "", "✗"))
            continue
        for check in stage.checks:
            verdict = {True: "ok", False: "MISS", None: ""}[check.met]
            rows.append((stage.name, check.metric, _value(check.measured, check.unit), check.target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    missed = [(s.name, c) for s in stages for c in s.checks if c.met is False and c.why_missed]
    if missed:
        lines.append("")
        lines += [f"{name} / {check.metric}: {check.why_missed}" for name, check in missed]
    return "\n".join(lines)


def write_json(document: dict, started: datetime) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}-scale{document['scale']['factor']}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def utc_now() -> datetime:
    return datetime.now(UTC)
