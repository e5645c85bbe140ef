"""One dbt build at a time per warehouse.

The scheduled ``transform`` and the webhook micro-batch (``webhook_sync``) both build the same models; two
``dbt build`` runs interleaving on one warehouse replace the same tables under each other. A session-level
Postgres advisory lock, taken before dbt starts and held until it ends, makes the second one wait (not fail):
its changes are then built on top of the first one's. The lock dies with the session, so a killed build
cannot leave it held.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

LOCK_KEY = zlib.crc32(b"ecomsync.dbt_build")


@contextmanager
def dbt_build_lock(warehouse_url: str) -> Iterator[None]:
    """Hold the warehouse's dbt-build lock for the duration of the block (waits for a running build)."""
    conn = psycopg2.connect(warehouse_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        yield
    finally:
        conn.close()
