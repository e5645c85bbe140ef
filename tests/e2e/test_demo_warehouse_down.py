"""`make demo` with the warehouse down: fails fast naming the connection, leaves no process behind (issue 18)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack import stack

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment holds ``marker``: the demo's children inherit its WAREHOUSE_URL."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_the_demo_fails_fast_when_the_warehouse_is_down(local_pg):  # P6
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sandboxes_were_up = stack.sandboxes_up()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}",
           "WAREHOUSE_URL": f"postgresql://etl@127.0.0.1:{port}/warehouse"}
    started = time.monotonic()
    demo = subprocess.Popen([sys.executable, "-m", "devstack.demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = demo.communicate(timeout=300)
    finally:
        if demo.poll() is None:
            demo.kill()
        if not sandboxes_were_up:
            stack.stop_sandboxes()
    assert demo.returncode != 0
    assert "'warehouse_default'" in output and "not reachable" in output, output[-3000:]
    assert "airflow dags test" not in output.split("not reachable")[0].split("\n")[-1]
    assert time.monotonic() - started < 300
    for _ in range(50):  # the sandboxes this test stopped take a moment to exit
        survivors = _processes_with(env["WAREHOUSE_URL"])
        if not survivors:
            break
        time.sleep(0.2)
    assert not survivors, "a child of the demo survived it"
