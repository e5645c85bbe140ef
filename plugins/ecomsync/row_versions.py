"""Row-version fingerprints: has a relation changed since it was last looked at, without reading its values?

Postgres gives every row version a physical place (``ctid``) and the transaction that wrote it (``xmin``); any
insert, update or delete (and a rewrite such as VACUUM FULL) changes the set of (ctid, xmin) pairs, while reading
them touches only the heap pages, never a TOASTed payload. The sum of a 64-bit hash of each pair, with the row
count and the relation's oid (a table dbt replaces gets a new one), is the fingerprint both the scheduled build's
planner (``ecomsync.build_inputs``: raw tables) and the load's mart skip (``ecomsync.crm.diff``: crm marts,
``sync.ledger``) compare with the one they recorded. Taken in one snapshot, it says whether that snapshot holds the
same row versions; a collision of the 64-bit sums is the only way to miss a change.
"""
from __future__ import annotations

from psycopg2 import sql


def row_versions_sum(alias: str) -> sql.Composed:
    """SQL expression: over the rows of the relation aliased ``alias`` (in the query's FROM), the sum of a 64-bit
    hash of each row version's (ctid, xmin); 0 for no rows. An aggregate: use it with ``count(*)``."""
    return sql.SQL("coalesce(sum(hashtextextended({row}.ctid::text || ':' || {row}.xmin::text, 0)), 0)").format(
        row=sql.Identifier(alias))
