"""``make demo`` shows progress a person can follow and is never silent for long (issue 19, P1).

A real child process writes a log the way ``airflow dags test`` does (our loggers, dbt node lines, noise,
then a long silence); ``follow`` must pass on the progress lines, drop the noise, and fill the silence with
heartbeats naming the stage and the running task.
"""
from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time

from devstack.demo import follow, heartbeat

CHILD = textwrap.dedent("""
    import sys, time
    log = open(sys.argv[1], "w", buffering=1)
    log.write("[2026-01-01T00:00:00] [info ] [DAG TEST] starting task_id=extract_store map_index=0\\n")
    log.write("debug noise nobody needs\\n")
    log.write("[warning ] Could not import graphviz. [py.warnings] category=UserWarning\\n")
    log.write("11:50:27  212 of 215 PASS not_null_segment_members_email\\n")
    log.write("[2026-01-01T00:00:01] [info ] [ecomsync.extract] bigcommerce:k3x9q2m7a1 orders: "
              "fetched 120, landed 120\\n")
    log.write("\\x1b[0m11:50:27  211 of 215 OK created sql table model segments.segment_members\\n")
    log.write("half a line without its end")
    time.sleep(float(sys.argv[2]))
    log.write(" … and its end\\n")
    log.write("[2026-01-01T00:00:09] INFO - Marking task as SUCCESS. dag_id=transform\\n")
""")


def test_follow_prints_progress_and_heartbeats_through_a_silence(tmp_path):  # issue 19: never silent > ~10 s
    log_path = tmp_path / "child.log"
    silence, beat = 2.5, 0.5
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(log_path), str(silence)])
    emitted: list[tuple[float, str]] = []
    started = time.monotonic()
    follow(log_path, lambda: child.poll() is None, lambda line: emitted.append((time.monotonic(), line)),
           "extract_bigcommerce", heartbeat_seconds=beat, poll_seconds=0.05)
    assert child.wait() == 0
    lines = [line for _, line in emitted]
    progress = [line for line in lines if "still running" not in line]
    assert any("fetched 120, landed 120" in line for line in progress)
    assert any("211 of 215 OK created sql table model segments.segment_members" in line for line in progress)
    assert any("Marking task as SUCCESS" in line for line in progress), "read to the end once the child is done"
    assert any("starting task_id=extract_store" in line for line in progress)
    noise = ("noise", "half a line", "graphviz", "PASS not_null")
    assert not any(word in line for word in noise for line in progress)
    assert all(line.startswith("    extract_bigcommerce: ") for line in lines)
    beats = [line for line in lines if "still running" in line]
    assert len(beats) >= 2 and all("task extract_store" in line for line in beats), beats
    # no gap longer than the heartbeat (plus polling and a loaded machine's slack)
    moments = [started] + [moment for moment, _ in emitted]
    assert max(b - a for a, b in itertools.pairwise(moments)) < beat + 1.5


def test_heartbeat_speaks_while_a_quiet_step_runs():  # issue 19
    emitted: list[str] = []
    with heartbeat("airflow db migrate", emitted.append, every_seconds=0.2):
        time.sleep(1.0)
    count = len(emitted)
    time.sleep(0.4)
    assert count >= 3 and len(emitted) == count, "beats while running, stops after"
    assert all(line.startswith("    airflow db migrate: still running") for line in emitted)


WARNINGS_CHILD = textwrap.dedent("""
    import sys
    log = open(sys.argv[1], "w", buffering=1)
    # what airflow writes: a Python warning whose message has line breaks is one record over three lines
    log.write("2026-11-29T12:50:27.181995Z [warning  ] Could not import graphviz. Rendering graph to the "
              "graphical format will not be possible. \\n"
              "You might need to install the graphviz package and necessary system packages.\\n"
              "Run `pip install graphviz` to attempt to install it. [py.warnings] category=UserWarning "
              "filename=/x/dag_command.py lineno=57\\n")
    log.write("2026-11-29T12:50:28.000000Z [warning  ] CRM answered 429 twice in a row\\n"
              "second line of our own warning\\n")
    log.write("2026-11-29T12:50:29.000000Z [info     ] Task instance state updated    "
              "[airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a2 "
              "loc=task_instances.py:485 new_state=success rows_affected=1 ti_id=01a2\\n")
    log.write("2026-11-29T12:50:30.000000Z [info     ] bigcommerce:k3x9q2m7a1 orders (historical): fetched 120, "
              "landed 120 [ecomsync.extract] loc=extract.py:166\\n")
    log.write("2026-11-29T12:50:31.000000Z [warning  ] our warning, last line of the log\\n")
""")


def test_follow_drops_multiline_python_warnings_and_keeps_ours(tmp_path):  # issue 19: progress, not noise
    log_path = tmp_path / "child.log"
    child = subprocess.Popen([sys.executable, "-c", WARNINGS_CHILD, str(log_path)])
    lines: list[str] = []
    follow(log_path, lambda: child.poll() is None, lines.append, "load_crm", heartbeat_seconds=30, poll_seconds=0.05)
    assert child.wait() == 0
    assert not any("graphviz" in line for line in lines), lines
    assert "    load_crm: CRM answered 429 twice in a row" in lines
    assert "    load_crm: Task instance state updated (new_state=success)" in lines
    assert "    load_crm: bigcommerce:k3x9q2m7a1 orders (historical): fetched 120, landed 120" in lines
    assert lines[-1] == "    load_crm: our warning, last line of the log", "a held warning is shown at the end"
    assert not any("correlation_id" in line or "loc=" in line for line in lines), lines
