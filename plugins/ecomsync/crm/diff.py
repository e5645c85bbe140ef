"""The load's diff, computed in the warehouse: which crm mart rows may need a CRM write (P4, issue 16).

A mart row is *unchanged* — left in the warehouse, only counted — when ``sync.ledger`` holds its object,
accepted by the CRM (``synced`` or ``recovered``, with a CRM id or written by a bulk import), with the same
**row hash**, its connection is enabled, and (contacts) each of its tags and its master-list subscription is in
the ledger too. Every other row is streamed to the planner through a server-side (named) cursor, ``batch_size``
rows at a time, so the load holds one batch, never the marts.

The row hash is computed in SQL only, so Python never has to reproduce it: ``md5`` of the canonical text of
the row's ``jsonb`` (``to_jsonb(row)`` without ``payloads.NON_PAYLOAD_COLUMNS``; ``jsonb`` text has sorted
keys and one spelling per value; the session's ``TimeZone`` is set to UTC so times are spelt the same),
prefixed by ``payloads.PAYLOAD_VERSION`` (bump it when a payload function changes, and every row is compared
by payload hash again) and, for contacts, the master list's name (it is part of their list payload). The
ledger stores it next to the payload hash (``sync.ledger.row_hash``) whenever an object is pushed, and for a
streamed row found unchanged by payload hash (a ledger from before ``row_hash``: the first load after the
upgrade reads every row once, sends nothing, and fills the column in).

A full resync streams every row. The planner still decides every streamed row against the ledger and
``sync.rejections`` by payload hash (``plan.decide``): the SQL only leaves out rows it is sure of.

This diff still reads every row of a mart; a mart whose inputs did not move since its last settled load is not
read at all (``crm/skip.py``, with the fingerprints of ``Reader.mart_fingerprint`` and ``sync_fingerprint``).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ
from psycopg2.extras import RealDictCursor

from ecomsync.crm import automations as a
from ecomsync.crm import payloads as p
from ecomsync.row_versions import row_versions_sum

ACCEPTED = "l.status in ('synced', 'recovered') and (l.crm_id is not null or l.status = 'synced')"


@dataclass(frozen=True)
class Mart:
    """One crm mart as the load reads it.

    ``object_types``: the ledger and rejection types of the objects its rows become (``sync.ledger``);
    ``parent_types``: the types whose CRM ids its objects wait for (the executor's parents, from the ledger);
    ``also_reads``: other crm relations its phase reads (the removable orders). The mart skip (``crm/skip.py``)
    fingerprints all of them."""

    table: str
    object_type: str
    key_column: str
    has_connection: bool = True
    object_types: tuple[str, ...] = ()
    parent_types: tuple[str, ...] = ()
    also_reads: tuple[str, ...] = ()

    @property
    def ledger_types(self) -> tuple[str, ...]:
        return tuple(sorted({self.object_type, *self.object_types, *self.parent_types}))

    @property
    def own_types(self) -> tuple[str, ...]:
        return (self.object_type, *self.object_types)


# Dependency order of the push: each mart's objects only refer to objects of the marts before it.
MARTS = (Mart("connections", "connection", "connection_id"),
         Mart("contacts", "contact", "email", False, object_types=("contact_tag", "list_membership")),
         Mart("ecom_customers", "ecom_customer", "ecom_customer_key", parent_types=("connection",)),
         Mart("ecom_orders", "ecom_order", "order_key", parent_types=("connection", "ecom_customer"),
              also_reads=("excluded_records",)),
         Mart("abandoned_carts", "abandoned_cart", "cart_key", parent_types=("connection", "ecom_customer")))
ROW_HASH = "_row_hash"  # the column the streamed rows carry their row hash in


@dataclass(frozen=True)
class DiffOptions:
    enabled_connections: tuple[str, ...]
    full_resync: bool
    master_list: str | None  # the master list's name when the list rule applies, else None
    master_list_found: bool


def row_hash_sql(mart: Mart) -> str:
    """SQL for the row hash of mart row ``m`` (parameters ``version``, ``master_list``)."""
    skipped = ", ".join(f"'{column}'" for column in sorted(p.NON_PAYLOAD_COLUMNS))
    extra = "coalesce(%(master_list)s, '') || " if mart.table == "contacts" else ""
    return f"md5(%(version)s || {extra}(to_jsonb(m) - array[{skipped}]::text[])::text)"


def unchanged_sql(mart: Mart) -> str:
    """SQL predicate over mart row ``m``: the ledger holds it as the CRM has it (see the module docstring)."""
    clauses = [f"""exists (select 1 from sync.ledger l
                          where l.object_type = '{mart.object_type}' and l.natural_key = m.{mart.key_column}
                            and l.row_hash = {row_hash_sql(mart)} and {ACCEPTED})"""]
    if mart.has_connection:
        clauses.append("m.connection_id = any(%(enabled)s::text[])")
    if mart.table == "contacts":
        clauses.append(f"""not exists (select 1 from unnest(coalesce(m.tags, '{{}}'::text[])) as t(tag)
                                      where not exists (select 1 from sync.ledger l
                                                        where l.object_type = 'contact_tag'
                                                          and l.natural_key = m.email || '|' || t.tag
                                                          and {ACCEPTED}))""")
        clauses.append(f"""(%(master_list)s is null or not coalesce(m.accepts_marketing, false)
                           or (%(master_list_found)s and exists (select 1 from sync.ledger l
                                                                 where l.object_type = 'list_membership'
                                                                   and l.natural_key = m.email and {ACCEPTED})))""")
    return "(" + " and ".join(clauses) + ")"


def params(options: DiffOptions) -> dict[str, Any]:
    return {"version": p.PAYLOAD_VERSION, "master_list": options.master_list,
            "master_list_found": options.master_list_found, "enabled": list(options.enabled_connections)}


class Reader:
    """Reads the diff over its own connection: one transaction (a snapshot) per streamed query."""

    def __init__(self, wh_url: str, options: DiffOptions, batch_size: int):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.conn = psycopg2.connect(wh_url)
        # One snapshot per mart: its unchanged count and its streamed rows see the same data.
        self.conn.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        self.options, self.batch_size = options, batch_size
        self.batches_read = 0  # batches streamed (every query)
        self.rows_read = 0  # mart rows streamed by ``changed``: what the diff could not leave in the warehouse
        self.max_rows_held = 0  # the largest batch

    def close(self) -> None:
        self.conn.close()

    def end(self) -> None:
        """End the current snapshot (e.g. after ``mart_fingerprint`` when the mart is skipped)."""
        self.conn.rollback()

    def mart_fingerprint(self, mart: Mart) -> tuple[str, int] | None:
        """The content of ``crm.<mart>`` (and the relations its phase also reads) in the current snapshot — the
        first query of a mart's snapshot, before ``unchanged_counts``: per relation its oid (dbt replaces a table
        under a new one), row count and ``ecomsync.row_versions.row_versions_sum`` (a 64-bit hash of each row
        version's ``(ctid, xmin)``), so any insert, update or delete moves it.
        Returns (fingerprint, the mart's row count); None when a relation is not a table (a view has no row
        versions): such a mart is always read."""
        parts, rows = [], 0
        with self.conn.cursor() as cur:
            for table in (mart.table, *mart.also_reads):
                found = self._relation(cur, f"crm.{table}")
                if found is None:
                    return None
                # the relation names come from MARTS, never from data
                cur.execute(sql.SQL("select count(*), {} from crm.{} m").format(
                    row_versions_sum("m"), sql.Identifier(table)))
                count, total = cur.fetchone()
                if table == mart.table:
                    rows = int(count)
                parts.append(f"crm.{table}:{found}:{count}:{total}")
        return "|".join(parts), rows

    def sync_fingerprint(self, object_types: tuple[str, ...]) -> str:
        """``sync.ledger`` and ``sync.rejections`` rows of ``object_types`` in the current snapshot, per type
        as in ``mart_fingerprint``: a push, a status change, an erased or hand-fixed row, a new or cleared
        rejection moves it."""
        parts = []
        with self.conn.cursor() as cur:
            for table in ("ledger", "rejections"):
                parts.append(f"sync.{table}:{self._relation(cur, f'sync.{table}')}")
                cur.execute(sql.SQL("select t.object_type, count(*), {} from sync.{} t where t.object_type = any(%s) "
                                    "group by 1 order by 1").format(row_versions_sum("t"), sql.Identifier(table)),
                            (list(object_types),))
                parts += [f"sync.{table}:{t}:{n}:{total}" for t, n, total in cur.fetchall()]
        return "|".join(parts)

    def unchanged_counts(self, mart: Mart) -> dict[str, int]:
        """{object_type: rows the diff leaves out as unchanged} (contacts: with their tags and subscriptions).

        Call it right before ``changed(mart)``: both run in one transaction (one snapshot), ended by ``changed``.
        """
        if self.options.full_resync:
            return {}
        columns = "count(*) as n"
        if mart.table == "contacts":
            columns += (", coalesce(sum(cardinality(m.tags)), 0) as tags, count(*) filter (where %(master_list)s "
                        "is not null and coalesce(m.accepts_marketing, false)) as lists")
        with self.conn.cursor(cursor_factory=RealDictCursor) as cur:
            self._utc(cur)
            # the mart and the conditions come from this module's constants (MARTS, unchanged_sql), never from data
            cur.execute(sql.SQL("select {} from crm.{} m where {}").format(
                sql.SQL(columns), sql.Identifier(mart.table), sql.SQL(unchanged_sql(mart))), params(self.options))
            row = cur.fetchone()
        counts = {mart.object_type: int(row["n"])}
        if mart.table == "contacts":
            counts |= {"contact_tag": int(row["tags"]), "list_membership": int(row["lists"])}
        return counts

    @staticmethod
    def _relation(cur: Any, name: str) -> str | None:
        """A table's identity and shape: oid, file node (a rewrite) and its columns with their types (an
        ``ALTER TABLE … ADD/DROP COLUMN`` rewrites no row, yet changes ``to_jsonb(row)``); None when ``name`` is
        not a table."""
        cur.execute("""select c.oid::text || ':' || c.relfilenode::text || ':' || md5(string_agg(
                              a.attnum || ' ' || a.attname || ' ' || a.atttypid::regtype::text, ',' order by a.attnum))
                       from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0
                                                          and not a.attisdropped
                       where c.oid = to_regclass(%s) and c.relkind in ('r', 'p')
                       group by c.oid, c.relfilenode""", (name,))
        found = cur.fetchone()
        return None if found is None else str(found[0])

    def changed(self, mart: Mart, batch_size: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """The mart's rows the diff keeps, in batches of ``batch_size`` dicts with their ``_row_hash``."""
        where = "true" if self.options.full_resync else f"not {unchanged_sql(mart)}"
        for rows in self._stream(f"""select m.*, {row_hash_sql(mart)} as {ROW_HASH} from crm.{mart.table} m
                                     where {where} order by m.{mart.key_column}""", params(self.options), batch_size):
            self.rows_read += len(rows)
            yield rows

    def new_maybe_live(self, mart: Mart) -> Iterator[list[dict[str, Any]]]:
        """Orders or carts the ledger has never seen whose ``sync_mode`` may make them live
        (``automations.MAYBE_LIVE_SQL``): where the run's purchase and cart automations can come from."""
        yield from self._stream(f"""select m.*, {row_hash_sql(mart)} as {ROW_HASH} from crm.{mart.table} m
                                    where {a.MAYBE_LIVE_SQL} and not exists (
                                        select 1 from sync.ledger l where l.object_type = '{mart.object_type}'
                                                                       and l.natural_key = m.{mart.key_column})
                                    order by m.{mart.key_column}""", params(self.options), None)

    def removable_orders(self) -> Iterator[list[dict[str, Any]]]:
        """Orders the ledger holds as in the CRM that the marts now exclude (``crm.excluded_records``) and no
        longer list in ``crm.ecom_orders``: ``order_key``, ``connection_id``, ``reason``."""
        yield from self._stream("""select l.natural_key as order_key, e.connection_id, e.reason
                                   from crm.excluded_records e
                                   join sync.ledger l on l.object_type = 'ecom_order'
                                    and l.natural_key = e.connection_id || '|' || e.external_id
                                   where e.record_type = 'order' and l.crm_id is not null
                                     and l.status in ('synced', 'recovered')
                                     and not exists (select 1 from crm.ecom_orders o
                                                     where o.order_key = l.natural_key)
                                   order by 1""", {}, None)

    def _stream(self, statement: str, parameters: dict[str, Any], batch_size: int | None
                ) -> Iterator[list[dict[str, Any]]]:
        size = batch_size or self.batch_size
        try:
            with self.conn.cursor(name="ecomsync_crm_diff", cursor_factory=RealDictCursor) as cur:
                cur.itersize = size
                self._utc(cur)
                cur.execute(statement, parameters)
                while True:
                    rows = cur.fetchmany(size)
                    if not rows:
                        break
                    self.batches_read += 1
                    self.max_rows_held = max(self.max_rows_held, len(rows))
                    yield [dict(row) for row in rows]
        finally:
            self.conn.rollback()

    @staticmethod
    def _utc(cur: Any) -> None:
        # jsonb spells a timestamptz in the session's time zone: one zone, one row hash.
        cur.connection.cursor().execute("set local timezone = 'UTC'; set local extra_float_digits = 1")
