"""Erase one person from the warehouse on request (issue 9: security; docs/security.md).

``erase_contact`` finds, in one transaction, every record that belongs to the person with an email
(compared ``lower(trim())``): their BigCommerce customer accounts per store and Square customer
profiles, the raw records of and about them, the crm/segments mart rows naming them, the ledger and
rejection rows of every CRM object made from those records, and the mentions of them in the run
reports. It deletes the records, scrubs the mentions, and reports the CRM ids from the ledger: the
CRM is never called — the load never deletes CRM data on its own (B11, S9), the operator does.

    python -m ecomsync.privacy erase EMAIL [--dry-run]      (WAREHOUSE_URL from the environment)
"""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extras import Json

from ecomsync.crm.activecampaign import account_key
from ecomsync.crm.ledger import LoadAlreadyRunning, SyncStore
from ecomsync.crm.payloads import OBJECT_TYPES

ERASED = "[erased]"
# ActiveCampaign resource of each ledger object type (an abandoned cart is an ecomOrder there).
CRM_RESOURCES = {"contact": "contacts", "contact_tag": "contactTags", "list_membership": "contactLists",
                 "ecom_customer": "ecomCustomers", "ecom_order": "ecomOrders", "abandoned_cart": "ecomOrders"}

PRESENT_TABLES = """
select table_schema || '.' || table_name from information_schema.tables
where table_schema in ('raw', 'sync', 'state') and table_type = 'BASE TABLE'"""

BIGCOMMERCE_CUSTOMERS = """
select connection_id, payload ->> 'id' from raw.bigcommerce_customers
where lower(trim(payload ->> 'email')) = %(email)s
union
-- B3: an account the customers stream has not landed yet is known by its orders' billing address
select orders.connection_id, orders.payload ->> 'customer_id' from raw.bigcommerce_orders as orders
where lower(trim(orders.payload #>> '{billing_address,email}')) = %(email)s
  and coalesce(orders.payload ->> 'customer_id', '0') <> '0'
  and not exists (select 1 from raw.bigcommerce_customers as customers
                  where customers.connection_id = orders.connection_id
                    and customers.payload ->> 'id' = orders.payload ->> 'customer_id')"""

SQUARE_CUSTOMERS = """
select distinct payload ->> 'id' from raw.square_customers where lower(trim(payload ->> 'email_address')) = %(email)s"""

# Each raw query answers (connection_id, pk, the record's id) of the person's records …
RAW_BIGCOMMERCE_CUSTOMERS = """
select connection_id, pk, payload ->> 'id' from raw.bigcommerce_customers
where (connection_id, payload ->> 'id') in
      (select * from unnest(%(bc_connections)s::text[], %(bc_customers)s::text[]))"""

RAW_BIGCOMMERCE_SUBSCRIBERS = """
select connection_id, pk, payload ->> 'id' from raw.bigcommerce_subscribers
where lower(trim(payload ->> 'email')) = %(email)s"""

# An account's orders are the person's whatever billing email they carry; an order billed to the
# email is the person's whatever account placed it.
RAW_BIGCOMMERCE_ORDERS = """
select connection_id, pk, payload ->> 'id' from raw.bigcommerce_orders
where lower(trim(payload #>> '{billing_address,email}')) = %(email)s
   or (connection_id, payload ->> 'customer_id')
      in (select * from unnest(%(bc_connections)s::text[], %(bc_customers)s::text[]))"""

# Only in a warehouse created before the per-order /coupons call was dropped (the table is no longer created).
RAW_BIGCOMMERCE_ORDER_COUPONS = """
select connection_id, pk, payload ->> 'id' from raw.bigcommerce_order_coupons
where (connection_id, payload ->> 'order_id') in
      (select * from unnest(%(order_connections)s::text[], %(orders)s::text[]))"""

# Square customer profiles, orders and payments belong to the merchant: matched in every location.
RAW_SQUARE_CUSTOMERS = """
select connection_id, pk, payload ->> 'id' from raw.square_customers
where payload ->> 'id' = any(%(square_customers)s)"""

# … and the Square order each payment paid for, guest payments included.
RAW_SQUARE_PAYMENTS = """
select connection_id, pk, payload ->> 'id', payload ->> 'order_id' from raw.square_payments
where payload ->> 'customer_id' = any(%(square_customers)s)
   or lower(trim(payload ->> 'buyer_email_address')) = %(email)s
   or payload ->> 'order_id' in (select payload ->> 'id' from raw.square_orders
                                 where payload ->> 'customer_id' = any(%(square_customers)s))"""

RAW_SQUARE_ORDERS = """
select connection_id, pk, payload ->> 'id' from raw.square_orders
where payload ->> 'customer_id' = any(%(square_customers)s) or payload ->> 'id' = any(%(paid_orders)s)"""

# The CRM objects made from the person's records (natural keys as in docs/architecture.md).
PERSON_OBJECTS = """
where (object_type, natural_key) in (select * from unnest(%(object_types)s::text[], %(natural_keys)s::text[]))
   or (object_type in ('contact', 'list_membership') and natural_key = %(email)s)
   or (object_type = 'contact_tag' and starts_with(natural_key, %(email)s || '|'))
   -- a merchant-wide Square profile is one CRM customer per location that saw it
   or (object_type = 'ecom_customer' and starts_with(natural_key, 'square:')
       and split_part(natural_key, '|', 2) = any(%(square_customers)s))"""

DELETE_LEDGER = ("delete from sync.ledger" + PERSON_OBJECTS
                 + "\nreturning object_type, natural_key, connection_id, crm_id")
DELETE_REJECTIONS = ("delete from sync.rejections" + PERSON_OBJECTS
                     + "\nreturning object_type, natural_key, connection_id")

MART_TABLES_WITH_EMAIL = """
select columns.table_schema, columns.table_name
from information_schema.columns
join information_schema.tables using (table_schema, table_name)
where columns.table_schema in ('intermediate', 'crm', 'segments') and columns.column_name = 'email'
  and tables.table_type = 'BASE TABLE'
order by 1, 2"""

REPORTS_WITH_TEXT = """
select run_id, started_at, warnings, plan, error from sync.run_reports
where warnings <> '[]'::jsonb or plan is not null or error is not null
for update"""

UPDATE_REPORT = """
update sync.run_reports set warnings = %s, plan = %s, error = %s where run_id = %s and started_at = %s"""

LOAD_ACCOUNTS = "select distinct account from sync.run_reports where account is not null"

# Records the extract could not land keep their JSON text: the person's are those naming the email (confirmed
# as a whole word in Python) or sharing the key of one of her erased raw records.
REJECTED_CANDIDATES = """
select connection_id, raw_table, record_key, payload_text from state.rejected_records
where strpos(lower(payload_text), %(email)s) > 0
   or (connection_id, 'raw.' || raw_table, record_key)
      in (select * from unnest(%(raw_connections)s::text[], %(raw_tables)s::text[], %(raw_keys)s::text[]))
for update"""

DELETE_REJECTED = """
delete from state.rejected_records
where (connection_id, raw_table, record_key) in (select * from unnest(%s::text[], %s::text[], %s::text[]))"""

SYNC_RUN_ERRORS = """
select run_id, connection_id, stream, error from state.sync_runs where error is not null for update"""

UPDATE_SYNC_RUN_ERROR = "update state.sync_runs set error = %s where run_id = %s and connection_id = %s and stream = %s"


@dataclass(frozen=True)
class CrmObject:
    """A ledger row of the person: what the operator deletes in ActiveCampaign."""

    object_type: str
    natural_key: str
    connection_id: str | None
    crm_id: str | None  # null when bulk-imported: look the contact up by email in the CRM

    def describe(self) -> str:
        where = (f"DELETE /api/3/{CRM_RESOURCES[self.object_type]}/{self.crm_id}" if self.crm_id
                 else "no CRM id in the ledger (bulk import): find it by the email in ActiveCampaign")
        return f"{self.object_type} {self.natural_key}: {where}"


@dataclass
class ErasureReport:
    email: str
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)  # "schema.table" → rows
    scrubbed_run_reports: int = 0
    scrubbed_sync_runs: int = 0  # state.sync_runs rows whose error named the person
    crm_objects: list[CrmObject] = field(default_factory=list)  # children first: the order to delete them in
    bigcommerce_customers: dict[str, list[str]] = field(default_factory=dict)  # connection_id → customer ids
    square_customers: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)

    def as_text(self) -> str:
        verb = "would be" if self.dry_run else "were"
        lines = [f"Erasure of {self.email}" + (" — DRY RUN, nothing changed" if self.dry_run else ""),
                 f"Rows that {verb} deleted:"]
        lines += [f"  {table:<36} {count}" for table, count in self.deleted.items()]
        lines.append(f"  {'sync.run_reports (scrubbed)':<36} {self.scrubbed_run_reports}")
        lines.append(f"  {'state.sync_runs (errors scrubbed)':<36} {self.scrubbed_sync_runs}")
        lines.append("Involved: " + ("; ".join(
            [f"{connection} customers {', '.join(ids)}" for connection, ids in self.bigcommerce_customers.items()]
            + ([f"Square customers {', '.join(self.square_customers)}"] if self.square_customers else []))
            or "no customer account"))
        lines.append(f"Connections: {', '.join(self.connections) or 'none'}")
        if self.crm_objects:
            lines.append("Delete in ActiveCampaign (the load never deletes CRM data, B11/S9):")
            lines += [f"  {crm_object.describe()}" for crm_object in self.crm_objects]
        else:
            lines.append("No CRM object of this person in the ledger.")
        if not self.dry_run:
            lines.append("Next: run transform (dbt build) to rebuild crm.* and segments.* without them.")
        return "\n".join(lines)


def erase_contact(wh_url: str, email: str, *, dry_run: bool = False) -> ErasureReport:
    """Delete (or with ``dry_run`` only count) everything of the person with ``email``, in one transaction.

    Every CRM account's load lock is held meanwhile, so no load re-pushes the person half way through.
    """
    normalized = email.strip().lower()
    if not normalized:
        raise ValueError("an email address is required")
    conn = psycopg2.connect(wh_url)
    load_locks: list[SyncStore] = []
    try:
        with conn.cursor() as cur:
            present = _present_tables(cur)
            if "sync.run_reports" in present:
                cur.execute(LOAD_ACCOUNTS)
                locked: set[str] = set()
                for (account,) in cur.fetchall():
                    if account_key(account) in locked:  # another spelling of an account already locked
                        continue
                    locked.add(account_key(account))
                    store = SyncStore(wh_url)
                    load_locks.append(store)
                    try:
                        store.acquire_account_lock(account)
                    except LoadAlreadyRunning:
                        raise LoadAlreadyRunning(f"a CRM load of {account} is running: erase when it has finished "
                                                 "(pause the DAGs), or it may push the person again") from None
            report = _erase(cur, normalized, present, dry_run)
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
        return report
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
        for store in load_locks:
            store.close()  # releases its lock


def _present_tables(cur) -> set[str]:
    cur.execute(PRESENT_TABLES)
    return {name for (name,) in cur.fetchall()}


def _erase(cur, email: str, present: set[str], dry_run: bool) -> ErasureReport:
    report = ErasureReport(email=email, dry_run=dry_run)
    bigcommerce_customers = sorted(_rows(cur, BIGCOMMERCE_CUSTOMERS, {"email": email},
                                         {"raw.bigcommerce_customers", "raw.bigcommerce_orders"} <= present))
    square_customers = sorted(row[0] for row in _rows(cur, SQUARE_CUSTOMERS, {"email": email},
                                                      "raw.square_customers" in present))
    params: dict[str, Any] = {"email": email, "square_customers": square_customers,
                              "bc_connections": [c for c, _ in bigcommerce_customers],
                              "bc_customers": [i for _, i in bigcommerce_customers]}
    records = {table: _rows(cur, query, params, table in present) for table, query in (
        ("raw.bigcommerce_customers", RAW_BIGCOMMERCE_CUSTOMERS),
        ("raw.bigcommerce_subscribers", RAW_BIGCOMMERCE_SUBSCRIBERS),
        ("raw.bigcommerce_orders", RAW_BIGCOMMERCE_ORDERS))}
    orders = records["raw.bigcommerce_orders"]
    params |= {"order_connections": [row[0] for row in orders], "orders": [row[2] for row in orders]}
    records["raw.bigcommerce_order_coupons"] = _rows(cur, RAW_BIGCOMMERCE_ORDER_COUPONS, params,
                                                     "raw.bigcommerce_order_coupons" in present)
    records["raw.square_customers"] = _rows(cur, RAW_SQUARE_CUSTOMERS, params, "raw.square_customers" in present)
    records["raw.square_payments"] = _rows(cur, RAW_SQUARE_PAYMENTS, params,
                                           {"raw.square_payments", "raw.square_orders"} <= present)
    params["paid_orders"] = sorted({row[3] for row in records["raw.square_payments"] if row[3]})
    records["raw.square_orders"] = _rows(cur, RAW_SQUARE_ORDERS, params, "raw.square_orders" in present)

    # A Square "order" in the CRM is a payment (S12); a BigCommerce incomplete order is an abandoned cart.
    order_keys = [_key(row) for row in orders + records["raw.square_payments"]]
    object_keys = ([("ecom_customer", f"{c}|{i}") for c, i in bigcommerce_customers]
                   + [("ecom_order", key) for key in order_keys] + [("abandoned_cart", key) for key in order_keys])
    params |= {"object_types": [t for t, _ in object_keys], "natural_keys": [k for _, k in object_keys]}

    naming = _naming(email, {key for _, key in object_keys})
    if "state.rejected_records" in present:
        report.deleted["state.rejected_records"] = _delete_rejected_records(cur, email, records, naming)
    for table, rows in records.items():
        report.deleted[table] = _delete_raw(cur, table, rows)
    ledger = _rows(cur, DELETE_LEDGER, params, "sync.ledger" in present)
    rejections = _rows(cur, DELETE_REJECTIONS, params, "sync.rejections" in present)
    report.deleted["sync.ledger"], report.deleted["sync.rejections"] = len(ledger), len(rejections)
    report.deleted |= _delete_mart_rows(cur, email)
    erased_keys = {key for _, key in object_keys} | {row[1] for row in ledger + rejections}
    if "sync.run_reports" in present:
        report.scrubbed_run_reports = _scrub_run_reports(cur, _naming(email, erased_keys))
    if "state.sync_runs" in present:
        report.scrubbed_sync_runs = _scrub_sync_run_errors(cur, _naming(email, erased_keys))

    report.crm_objects = sorted((CrmObject(*row) for row in ledger),
                                key=lambda o: (-OBJECT_TYPES.index(o.object_type), o.natural_key))
    for connection_id, customer_id in bigcommerce_customers:
        report.bigcommerce_customers.setdefault(connection_id, []).append(customer_id)
    report.square_customers = square_customers
    report.connections = sorted({row[0] for rows in records.values() for row in rows}
                                | {row[2] for row in ledger + rejections if row[2]})
    return report


def _rows(cur, query: str, params: dict[str, Any], tables_present: bool) -> list[tuple]:
    """The query's rows; none when a table it reads was never created (no extract or load yet)."""
    if not tables_present:
        return []
    cur.execute(query, params)
    return [tuple(row) for row in cur.fetchall()]


def _key(row: tuple) -> str:
    """``connection_id|external_id``: the natural key of a CRM object made from a raw record."""
    return f"{row[0]}|{row[2]}"


def _delete_raw(cur, table: str, rows: list[tuple]) -> int:
    if not rows:
        return 0
    schema, name = table.split(".")
    cur.execute(sql.SQL("delete from {}.{} where (connection_id, pk) in (select * from unnest(%s::text[], %s::text[]))")
                .format(sql.Identifier(schema), sql.Identifier(name)),
                ([row[0] for row in rows], [row[1] for row in rows]))
    return cur.rowcount


def _delete_rejected_records(cur, email: str, records: dict[str, list[tuple]], naming: re.Pattern) -> int:
    """The person's records that the extract rejected (``state.rejected_records`` keeps their JSON text)."""
    raw = [(row[0], table, row[1]) for table, rows in records.items() for row in rows]
    cur.execute(REJECTED_CANDIDATES, {"email": email, "raw_connections": [r[0] for r in raw],
                                      "raw_tables": [r[1] for r in raw], "raw_keys": [r[2] for r in raw]})
    erased_raw = set(raw)
    doomed = [(connection_id, table, key) for connection_id, table, key, text in cur.fetchall()
              if naming.search(text) or (connection_id, f"raw.{table}", key) in erased_raw]
    if not doomed:
        return 0
    cur.execute(DELETE_REJECTED, ([d[0] for d in doomed], [d[1] for d in doomed], [d[2] for d in doomed]))
    return cur.rowcount


def _scrub_sync_run_errors(cur, naming: re.Pattern) -> int:
    """Extract run errors written before error texts were redacted (``ecomsync.redact``) could quote a record."""
    cur.execute(SYNC_RUN_ERRORS)
    scrubbed = 0
    for run_id, connection_id, stream, error in cur.fetchall():
        cleaned = naming.sub(ERASED, error)
        if cleaned != error:
            cur.execute(UPDATE_SYNC_RUN_ERROR, (cleaned, run_id, connection_id, stream))
            scrubbed += 1
    return scrubbed


def _delete_mart_rows(cur, email: str) -> dict[str, int]:
    """The person's rows in every intermediate, crm and segments table: a load before the next transform must
    not re-push them, and the incremental models (intermediate tables, segment bridges) only rebuild what
    landed since their last build, so a row left there would come back in the rebuilt marts."""
    cur.execute(MART_TABLES_WITH_EMAIL)
    deleted = {}
    for schema, table in cur.fetchall():
        cur.execute(sql.SQL("delete from {}.{} where lower(trim(email)) = %s")
                    .format(sql.Identifier(schema), sql.Identifier(table)), (email,))
        deleted[f"{schema}.{table}"] = cur.rowcount
    return deleted


def _naming(email: str, keys: Iterable[str]) -> re.Pattern:
    """Matches the email or an erased object's key as a whole word (``nada@…`` is someone else, ``…|10011`` too)."""
    names = sorted({email, *keys}, key=len, reverse=True)
    return re.compile(r"(?<![\w.%+-])(?:" + "|".join(map(re.escape, names)) + r")(?![\w@-]|\.\w)", re.IGNORECASE)


def _scrub_run_reports(cur, naming: re.Pattern) -> int:
    """Warnings and errors lose the mentions; a dry run's plan loses the person's sample payloads."""
    cur.execute(REPORTS_WITH_TEXT)
    scrubbed = 0
    for run_id, started_at, warnings, plan, error in cur.fetchall():
        new_warnings, new_plan = _scrubbed(warnings, naming), _scrubbed(_without_samples_naming(plan, naming), naming)
        new_error = _scrubbed(error, naming)
        if (new_warnings, new_plan, new_error) != (warnings, plan, error):
            cur.execute(UPDATE_REPORT, (Json(new_warnings), None if new_plan is None else Json(new_plan), new_error,
                                        run_id, started_at))
            scrubbed += 1
    return scrubbed


def _without_samples_naming(plan: dict[str, Any] | None, naming: re.Pattern) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {object_type: entry | {"samples": [sample for sample in entry.get("samples", [])
                                              if not naming.search(json.dumps(sample, default=str))]}
            if isinstance(entry, dict) and "samples" in entry else entry
            for object_type, entry in plan.items()}


def _scrubbed(value: Any, naming: re.Pattern) -> Any:
    if isinstance(value, dict):
        return {key: _scrubbed(inner, naming) for key, inner in value.items()}
    if isinstance(value, list):
        return [_scrubbed(inner, naming) for inner in value]
    if isinstance(value, str):
        return naming.sub(ERASED, value)
    return value


def main(argv: list[str] | None = None) -> int:
    from ecomsync.tasks import warehouse_url

    parser = argparse.ArgumentParser(prog="python -m ecomsync.privacy",
                                     description="Erase a person from the warehouse (docs/security.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    erase = commands.add_parser("erase", help="delete every warehouse record of EMAIL, print the CRM ids to delete")
    erase.add_argument("email")
    erase.add_argument("--dry-run", action="store_true", help="report what would be deleted; change nothing")
    args = parser.parse_args(argv)
    print(erase_contact(warehouse_url(), args.email, dry_run=args.dry_run).as_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
