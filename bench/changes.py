"""Source-side changes for the incremental measurements, made through the sandboxes' admin endpoints.

The records to change are drawn (repeatably, by seed) from what the warehouse landed.
"""
from __future__ import annotations

import psycopg2
import requests


def _sample(wh_url: str, candidates: str, share: float, seed: int) -> list[tuple]:
    """``share`` of the candidate rows, at least one; the same rows for the same seed and data."""
    with psycopg2.connect(wh_url) as conn, conn.cursor() as cur:
        cur.execute("select setseed(%s)", (seed / 1000,))
        cur.execute(f"select count(*) from ({candidates}) candidates")
        wanted = max(1, round(share * cur.fetchone()[0]))
        cur.execute(f"select * from ({candidates}) candidates order by random() limit %s", (wanted,))
        return cur.fetchall()


def change_order_statuses(bc_url: str, wh_url: str, share: float, seed: int) -> int:
    """``share`` of the orders (not Incomplete, not already Shipped) become Shipped; returns how many."""
    orders = _sample(wh_url, "select split_part(connection_id, ':', 2), pk from raw.bigcommerce_orders "
                             "where payload->>'status_id' not in ('0', '2')", share, seed)
    with requests.Session() as http:
        for store_hash, order_id in orders:
            http.put(f"{bc_url}/__admin/bigcommerce/{store_hash}/orders/{order_id}", json={"status_id": 2},
                     timeout=60).raise_for_status()
    return len(orders)


def refund_payments(square_url: str, wh_url: str, share: float, seed: int) -> int:
    """A full refund of ``share`` of the completed, unrefunded payments; returns how many."""
    payments = _sample(wh_url, "select pk, connection_id from raw.square_payments "
                               "where payload->'refunded_money' is null and payload->>'status' = 'COMPLETED'",
                       share, seed)
    with requests.Session() as http:
        for payment_id, _ in payments:
            http.post(f"{square_url}/__admin/square/payments/{payment_id}/refund", json={},
                      timeout=60).raise_for_status()
    return len(payments)
