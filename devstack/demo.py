"""``make demo``: the main job end to end on the embedded defaults, then what it did.

extract_bigcommerce and extract_square → transform (dbt build) → load_crm, each a
real ``airflow dags test`` run, against the local Postgres and the sandbox APIs.
Run it twice: the second run finds no source changes and writes nothing to the CRM.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

import psycopg2

from devstack.airflow import init_airflow, run_dag
from devstack.stack import LOCAL, up

DAGS = ("extract_bigcommerce", "extract_square", "transform", "load_crm")

EXAMPLE_QUERY = """\
-- Contacts who opted in to marketing and spent at least 100.00 across all stores and locations:
select p.email, p.currency, p.total_revenue_cents / 100.0 as revenue, p.order_count, p.last_order_at
from segments.contact_ecommerce_profile p
join segments.segment_members m
  on m.email = p.email and m.connection_id = p.connection_id and m.segment_key = 'has_opted_in_to_marketing'
where p.connection_id = 'all' and p.total_revenue_cents >= 10000
order by p.total_revenue_cents desc
limit 10;"""


def _rows(cur, query: str, params: tuple = ()) -> list[tuple]:
    try:
        cur.execute(query, params)
        return cur.fetchall()
    except psycopg2.Error as exc:
        cur.connection.rollback()
        return [(f"(not available: {exc.pgerror or exc})".strip(),)]


def summary(warehouse_url: str, since: datetime) -> str:
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
        lines.append("Modelled — rows per mart")
        for schema, table in (("crm", "connections"), ("crm", "contacts"), ("crm", "ecom_customers"),
                              ("crm", "ecom_orders"), ("crm", "abandoned_carts"), ("crm", "excluded_records"),
                              ("segments", "contact_ecommerce_profile"), ("segments", "segment_members"),
                              ("segments", "purchased_products"), ("segments", "purchased_categories")):
            count = _rows(cur, f'select count(*) from "{schema}"."{table}"')[0][0]
            lines.append(f"  {schema}.{table:<28} {count}")
        lines.append("Excluded from the CRM, and why")
        for row in _rows(cur, "select record_type, reason, count(*) from crm.excluded_records "
                              "group by 1, 2 order by 1, 2"):
            lines.append("  " + "  ".join(str(v) for v in row))
        lines.append("CRM writes (this run) — per object type: created, updated, unchanged, rejected, skipped")
        reports = _rows(cur, "select run_id, mode, counts, requests, warnings, automations from sync.run_reports "
                             "where started_at >= %s order by started_at", (since,))
        for report in reports:
            if len(report) == 1:
                lines.append(f"  {report[0]}")
                continue
            run_id, mode, counts, requests, warnings, automations = report
            writes = 0
            for object_type, c in sorted((counts or {}).items()):
                writes += int(c.get("created", 0)) + int(c.get("updated", 0))
                lines.append(f"  {object_type:<20} created {c.get('created', 0):>5}  updated {c.get('updated', 0):>5}"
                             f"  unchanged {c.get('unchanged', 0):>5}  rejected {c.get('rejected', 0):>3}"
                             f"  skipped {c.get('skipped', 0):>3}")
            lines.append(f"  total CRM writes: {writes}; requests: {requests}; mode: {mode}")
            fired = ", ".join(f"{trigger} {n}" for trigger, n in sorted((automations or {}).items())) or "none"
            lines.append(f"  writes that could start an automation, per trigger: {fired}")
            for warning in warnings or []:
                lines.append(f"  warning: {warning}")
    lines.append("Try it (psql \"" + warehouse_url + "\"):")
    lines.append(EXAMPLE_QUERY)
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    since = datetime.now(timezone.utc)
    stack = up()
    print(f"local stack: warehouse {stack.warehouse_url}; sandboxes "
          f"{'started' if stack.sandboxes_fresh else 'already running (same CRM state)'}", flush=True)
    env = stack.env()
    init_airflow(env)
    for dag_id in DAGS:
        t0 = time.monotonic()
        log = run_dag(env, dag_id, log_dir=LOCAL / "logs" / "demo")
        print(f"  airflow dags test {dag_id:<20} ok in {time.monotonic() - t0:5.1f}s  (log: {log})", flush=True)
    print()
    print(summary(stack.warehouse_url, since))
    print(f"\ndone in {time.monotonic() - started:.0f}s. Run `make demo` again: with no source changes "
          "the CRM gets zero writes. `make stop` ends the local stack.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
