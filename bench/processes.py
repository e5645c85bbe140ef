"""Child processes of the benchmark: the sandbox APIs, and each measured pipeline task.

Both run apart from the harness so that (a) the sandbox's CPU and memory are not
charged to the task under test — a real API runs on someone else's machine — and
(b) a task's peak RSS is its own (``resource.getrusage(RUSAGE_SELF)`` read in the
child, reported back on its last stdout line).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH-RESULT "


def child_env() -> dict[str, str]:
    paths = [str(PROJECT_ROOT / "plugins"), str(PROJECT_ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@dataclass
class Sandboxes:
    """A running ``python -m bench.serve`` process and the base URL of each API it serves."""

    process: subprocess.Popen
    urls: dict[str, str]

    def url(self, api: str) -> str:
        return self.urls[api]


@contextmanager
def sandboxes(spec: dict[str, Any]) -> Iterator[Sandboxes]:
    """Serve the APIs ``spec`` names (see bench.serve) until the block ends."""
    process = subprocess.Popen([sys.executable, "-m", "bench.serve", json.dumps(spec)], cwd=PROJECT_ROOT,
                               env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the sandbox process exited before serving (code {process.wait()})")
        yield Sandboxes(process, json.loads(line))
    finally:
        process.stdin.close()  # the child serves until its stdin closes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class TaskRun:
    task: str
    wall_s: float  # the task function itself, without interpreter start-up and imports
    process_s: float
    max_rss_mb: float
    result: Any


class TaskFailed(RuntimeError):
    pass


def run_task(task: str, *, env: dict[str, str] | None = None, **arguments: Any) -> TaskRun:
    """Run ``bench.task_runner <task>`` in a fresh interpreter (``env`` added to its environment);
    raises with its stderr when it fails."""
    started = time.monotonic()
    completed = subprocess.run([sys.executable, "-m", "bench.task_runner", task, json.dumps(arguments)],
                               cwd=PROJECT_ROOT, env={**child_env(), **(env or {})}, capture_output=True,
                               text=True)
    process_wall = time.monotonic() - started
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        raise TaskFailed(f"task {task} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    report = json.loads(lines[-1][len(RESULT_PREFIX):])
    return TaskRun(task, report["wall_s"], round(process_wall, 3), report["max_rss_mb"], report["result"])
