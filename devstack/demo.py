"""``make demo``: the main job end to end on the embedded defaults, then what it did.

extract_bigcommerce and extract_square → transform (dbt build) → load_crm, each a
real ``airflow dags test`` run, against the local Postgres and the sandbox APIs.
Run it twice: the second run finds no source changes and writes nothing to the CRM.
"""
from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import requests

from devstack.airflow import init_airflow, run_dag
from devstack.stack import LOCAL, up
from ecomsync.crm.automations import TRIGGERS

DAGS = ("extract_bigcommerce", "extract_square", "transform", "load_crm")
# outcomes in a run report's counts (sync.run_reports.counts) that changed the CRM
WRITE_OUTCOMES = ("created", "updated", "removed")

EXAMPLE_QUERY = """\
-- Contacts who opted in to marketing and spent at least 100.00 USD across all stores and locations:
select r.email, (r.revenue_cents / 100.0)::numeric(12, 2) as revenue_usd, r.order_count, r.last_order_at
from segments.contact_revenue_by_currency r
join segments.segment_members m
  on m.email = r.email and m.connection_id = r.connection_id and m.segment_key = 'has_opted_in_to_marketing'
where r.connection_id = 'all' and r.currency = 'USD' and r.revenue_cents >= 10000
order by r.revenue_cents desc
limit 10;"""


HEARTBEAT_SECONDS = 8.0  # never silent longer than this (issue 19: ~10 s)
# Log lines worth a person's attention while a DAG runs (the `airflow dags test` log): a task starting or
# returning, our own loggers (pages landed, CRM phases, waits for a quota, retries), dbt's models as they finish
# ("12 of 215 OK created sql table model …") and its totals, task state changes, errors and our warnings.
_PROGRESS = re.compile(
    r"\[DAG TEST\] starting task_id=|Done\. Returned value was|DagRun Finished|\[ecomsync\.|"
    r"\b\d+ of \d+ (OK created|ERROR|FAIL|WARN)\b|\bDone\. PASS=|\bFound \d+ models\b|"
    r"(Marking task as|Task finished|state[=:])\s*(success|failed|up_for_retry|SUCCESS|FAILED|UP_FOR_RETRY)|"
    r"\[(error|critical)\s*\]|\[warning\s*\](?!.*\[py\.warnings\])|Traceback|\bERROR\b", re.I)
_TASK = re.compile(r"\btask_id[=:]\s*['\"]?(?P<task>[\w.-]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STRUCTLOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z?\s+\[\w+\s*\]\s*")  # "2026-…Z [info     ] "
# A structlog record's tail after its event: "[logger] key=value key=value" (who logged it, where, ids).
_STRUCTLOG_CONTEXT = re.compile(r"\s+\[[\w.]+\](?P<pairs>(?:\s+\w+=\S*)*)\s*$")
_CONTEXT_SHOWN = ("new_state",)  # keys of that tail worth a person's attention
# A Python warning is one log record over several lines when its message has line breaks (airflow's
# "Could not import graphviz. …" has three); its "[py.warnings]" marker is on the record's last line.
_WARNING_START = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z?\s+\[warning\s*\]")
_RECORD_START = re.compile(r"^(\d{4}-\d\d-\d\dT|\d\d:\d\d:\d\d\s|\[)")
HELD_WARNING_SECONDS = 1.0  # a warning's lines arrive in one write: this long without its end, it is shown


def follow(path: Path, running: Callable[[], bool], emit: Callable[[str], None], stage: str,
           heartbeat_seconds: float = HEARTBEAT_SECONDS, poll_seconds: float = 0.2) -> None:
    """Print the progress lines a child process writes to ``path`` while ``running()`` is true, and a
    heartbeat (stage, current task, seconds so far, last line seen) whenever nothing was printed for
    ``heartbeat_seconds``. Reads what is left once the child is done."""
    started = last_emit = time.monotonic()
    position, pending, task, last_line = 0, "", "", ""
    held: list[str] = []  # the lines of a warning record not yet known to be a Python warning
    held_at = 0.0

    def show(line: str) -> None:
        nonlocal last_emit
        emit(f"    {stage}: {render(line)}")
        last_emit = time.monotonic()

    def release() -> None:
        """A held warning record is complete: shown unless it is a Python warning (library noise)."""
        if held and not any("[py.warnings]" in line for line in held):
            show(held[0])
        held.clear()

    def drain() -> None:
        nonlocal position, pending, task, last_line, held_at
        if not path.exists():
            return
        with open(path, errors="replace") as log:
            if path.stat().st_size < position:  # rewritten from the start
                position = 0
            log.seek(position)
            chunk = log.read()
            position = log.tell()
        lines = (pending + chunk).split("\n")
        pending = lines.pop()
        for line in lines:
            line = _ANSI.sub("", line).rstrip()
            if not line:
                continue
            last_line = line
            match = _TASK.search(line)
            if "DagRun Finished" in line:
                task = "none (the run finished; airflow is exiting)"
            elif match:
                task = match.group("task")
            if held:
                if not _RECORD_START.match(line):  # a continuation line of the held warning
                    held.append(line)
                    continue
                release()
            if _WARNING_START.match(line) and "[py.warnings]" not in line:
                held.append(line)
                held_at = time.monotonic()
            elif _PROGRESS.search(line):
                show(line)

    while running():
        drain()
        now = time.monotonic()
        if held and now - held_at >= HELD_WARNING_SECONDS:
            release()
        if now - last_emit >= heartbeat_seconds:
            doing = f" task {task}," if task else ""
            seen = f" — last: {_shorten(render(last_line), 100)}" if last_line else ""
            emit(f"    {stage}: still running,{doing} {now - started:.0f}s so far{seen}")
            last_emit = now
        time.sleep(poll_seconds)
    drain()
    release()


def render(line: str) -> str:
    """A log line as a person reads it: without structlog's timestamp and level in front, nor its logger and
    context (``[logger] loc=… correlation_id=…``) behind, except the keys in ``_CONTEXT_SHOWN``."""
    line = _STRUCTLOG_PREFIX.sub("", line)
    context = _STRUCTLOG_CONTEXT.search(line)
    if context and line[:context.start()].strip():
        shown = [pair for pair in context.group("pairs").split() if pair.partition("=")[0] in _CONTEXT_SHOWN]
        line = line[:context.start()] + (f" ({', '.join(shown)})" if shown else "")
    return _shorten(line)


@contextmanager
def heartbeat(stage: str, emit: Callable[[str], None] = lambda line: print(line, flush=True),
              every_seconds: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """A line every ``every_seconds`` while a step that logs nothing of its own runs."""
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every_seconds):
            emit(f"    {stage}: still running, {time.monotonic() - started:.0f}s so far")

    thread = threading.Thread(target=beat, name="demo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _shorten(line: str, width: int = 160) -> str:
    line = " ".join(line.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def run_dag_live(env: dict[str, str], dag_id: str, log_dir: Path,
                 emit: Callable[[str], None] = lambda line: print(line, flush=True)) -> Path:
    """``run_dag`` (one real ``airflow dags test``) while its log is followed live; raises when it fails."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["log"] = run_dag(env, dag_id, log_dir=log_dir)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"dags-test-{dag_id}", daemon=True)
    log_path = log_dir / f"{dag_id}.log"
    if log_path.exists():
        log_path.unlink()  # an earlier demo's log would be replayed as this run's progress
    worker.start()
    follow(log_path, worker.is_alive, emit, dag_id)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["log"]


def _rows(cur, query: str, params: tuple = ()) -> list[tuple]:
    try:
        cur.execute(query, params)
        return cur.fetchall()
    except psycopg2.Error as exc:
        cur.connection.rollback()
        return [(f"(not available: {exc.pgerror or exc})".strip(),)]


def crm_automation_log(crm_url: str, since_seq: int = 0) -> dict[str, int] | str:
    """``{trigger: n}``: the automations the CRM sandbox started after its entry ``since_seq`` (its own log,
    ``GET /__admin/activecampaign/automations``, sandbox/README.md), or why it cannot say."""
    try:
        answer = requests.get(f"{crm_url}/__admin/activecampaign/automations", params={"since": since_seq},
                              timeout=10)
        answer.raise_for_status()
        return {str(trigger): int(n) for trigger, n in answer.json()["counts"].items()}
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        return f"(not available: {exc})"


def crm_automation_seq(crm_url: str) -> int:
    """The last entry of the CRM sandbox's automation log (0 when empty or not answering)."""
    try:
        answer = requests.get(f"{crm_url}/__admin/activecampaign/automations", timeout=10)
        answer.raise_for_status()
        return max((int(entry["seq"]) for entry in answer.json()["automations"]), default=0)
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return 0


def per_trigger(counts: dict[str, int]) -> str:
    """Every trigger the load can touch, with its count (0 too), then any other the CRM names."""
    triggers = list(dict.fromkeys(TRIGGERS.values())) + sorted(set(counts) - set(TRIGGERS.values()))
    return ", ".join(f"{trigger} {int(counts.get(trigger, 0))}" for trigger in triggers)


def crm_writes(counts: dict[str, dict[str, int]]) -> tuple[list[str], int]:
    """One line per object type of a run report's ``counts`` (``{object_type: {outcome: n}}``,
    ``sync.run_reports.counts``) and the number of writes that changed the CRM (``WRITE_OUTCOMES``)."""
    lines, writes = [], 0
    for object_type, c in sorted(counts.items()):
        writes += sum(int(c.get(outcome, 0)) for outcome in WRITE_OUTCOMES)
        lines.append(f"  {object_type:<20} created {c.get('created', 0):>5}  updated {c.get('updated', 0):>5}"
                     f"  removed {c.get('removed', 0):>3}  unchanged {c.get('unchanged', 0):>5}"
                     f"  rejected {c.get('rejected', 0):>3}  skipped {c.get('skipped', 0):>3}")
    return lines, writes


def summary(warehouse_url: str, since: datetime, crm_url: str | None = None, crm_since_seq: int = 0) -> str:
    """What this run did, from the warehouse (``sync_runs``, the marts, ``crm.excluded_records``,
    ``sync.run_reports``) and, with ``crm_url``, the CRM sandbox's automation log after ``crm_since_seq``."""
    lines: list[str] = []
    with psycopg2.connect(warehouse_url) as conn, conn.cursor() as cur:
        lines.append("Extracted (this run) — connection / stream: fetched, landed (new or changed), flagged, requests")
        for row in _rows(cur, """
                select connection_id, stream, sync_mode, records_fetched, records_landed, records_flagged, requests
                from state.sync_runs where started_at >= %s order by connection_id, stream""", (since,)):
            if len(row) == 1:
                lines.append(f"  {row[0]}")
                continue
            connection_id, stream, mode, fetched, landed, flagged, requests = row
            lines.append(f"  {connection_id:<24} {stream:<16} {mode:<11} fetched {fetched:>6}  landed {landed:>6}"
                         f"  flagged {flagged:>4}  requests {requests:>4}")
        for row in _rows(cur, """
                select c.connection_id, c.name, c.enabled, l.payload ->> 'status', c.last_success_at
                from state.connections c
                left join raw.square_locations l on l.connection_id = c.connection_id and l.pk = c.external_id
                where not exists (select 1 from state.sync_runs r
                                  where r.connection_id = c.connection_id and r.started_at >= %s)
                order by c.connection_id""", (since,)):
            if len(row) == 1:
                lines.append(f"  {row[0]}")
                continue
            connection_id, name, enabled, location_status, last_success_at = row
            why = ("disabled" if not enabled else
                   "inactive Square location whose history is complete (square.inactive_locations: history; "
                   "a historical run reads it again)" if location_status == "INACTIVE" else "not read")
            last = last_success_at.strftime("%Y-%m-%d %H:%M UTC") if last_success_at else "never"
            lines.append(f"  {connection_id:<24} {name or ''}: skipped this run — {why}; last success {last}")
        lines.append("Modelled — rows per mart")
        for schema, table in (("crm", "connections"), ("crm", "contacts"), ("crm", "ecom_customers"),
                              ("crm", "ecom_orders"), ("crm", "abandoned_carts"), ("crm", "excluded_records"),
                              ("segments", "contact_ecommerce_profile"), ("segments", "contact_revenue_by_currency"),
                              ("segments", "segment_members"),
                              ("segments", "purchased_products"), ("segments", "purchased_categories")):
            count = _rows(cur, f'select count(*) from "{schema}"."{table}"')[0][0]
            lines.append(f"  {schema}.{table:<28} {count}")
        lines.append("Excluded from the CRM, and why (every record in the warehouse now, not only this run's) — "
                     "record type, reason: count")
        for row in _rows(cur, "select record_type, reason, count(*) from crm.excluded_records "
                              "group by 1, 2 order by 1, 2"):
            lines.append("  " + (f"{row[0]:<16} {row[1]:<20} {row[2]:>5}" if len(row) == 3 else str(row[0])))
        lines.append("CRM writes (this run) — per object type: created, updated, removed (taken out of the CRM, e.g. "
                     "an order archived since it was pushed), unchanged, rejected, skipped")
        reports = _rows(cur, "select run_id, mode, counts, requests, warnings, automations from sync.run_reports "
                             "where started_at >= %s order by started_at", (since,))
        for report in reports:
            if len(report) == 1:
                lines.append(f"  {report[0]}")
                continue
            _run_id, mode, counts, request_count, warnings, automations = report
            per_type, writes = crm_writes(counts or {})
            lines.extend(per_type)
            lines.append(f"  total CRM writes: {writes}; requests: {request_count}; mode: {mode}")
            lines.append(f"  writes that could start an automation, per trigger: {per_trigger(automations or {})}")
            for warning in warnings or []:
                lines.append(f"  warning: {warning}")
        if not reports:
            lines.append("  (no load_crm run report since this run started)")
    if crm_url:
        started = crm_automation_log(crm_url, crm_since_seq)
        lines.append("Automations the CRM (sandbox) started during this run, per trigger: "
                     + (per_trigger(started) if isinstance(started, dict) else started))
    lines.append("Try it (psql \"" + warehouse_url + "\"):")
    lines.append(EXAMPLE_QUERY)
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    since = datetime.now(UTC)
    print("starting the local stack (Postgres, sandbox APIs) …", flush=True)
    with heartbeat("local stack"):
        stack = up()
    print(f"local stack: warehouse {stack.warehouse_url}; sandboxes "
          f"{'started' if stack.sandboxes_fresh else 'already running (same CRM state)'}", flush=True)
    env = stack.env()
    crm_since_seq = crm_automation_seq(stack.endpoints.activecampaign)
    print("preparing the Airflow metadata database (airflow db migrate, pools) …", flush=True)
    with heartbeat("airflow db migrate"):
        init_airflow(env)
    for dag_id in DAGS:
        t0 = time.monotonic()
        print(f"  airflow dags test {dag_id} …", flush=True)
        log = run_dag_live(env, dag_id, LOCAL / "logs" / "demo")
        print(f"  airflow dags test {dag_id:<20} ok in {time.monotonic() - t0:5.1f}s  (log: {log})", flush=True)
    print()
    with heartbeat("summary"):
        text = summary(stack.warehouse_url, since, stack.endpoints.activecampaign, crm_since_seq)
    print(text)
    print(f"\ndone in {time.monotonic() - started:.0f}s. Run `make demo` again: with no source changes "
          "the CRM gets zero writes and no automation starts. `make stop` ends the local stack.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
