"""Shared fixtures: the embedded Postgres and a fresh database per test that asks for one."""
from __future__ import annotations

import os
import uuid

import psycopg2
import pytest
import requests
from psycopg2.extras import RealDictCursor

from devstack.postgres import LocalPostgres


@pytest.fixture(scope="session")
def local_pg() -> LocalPostgres:
    return LocalPostgres().ensure_running()


@pytest.fixture
def warehouse_url(local_pg: LocalPostgres):
    """A new, empty database on the local cluster, dropped after the test."""
    name = f"test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    yield url
    local_pg.drop_database(name)


def dict_rows(url: str, sql: str, params: tuple = ()) -> list[dict]:
    """The rows of one query as dicts (for tests that read marts and tables by column name)."""
    with psycopg2.connect(url) as conn, conn.cursor(cursor_factory=RealDictCursor) as cur:
        cur.execute(sql, params)
        return [dict(row) for row in cur.fetchall()]


def sandbox_admin(base_url: str, api: str, method: str, path: str, body: dict | None = None) -> dict:
    """Call a sandbox's admin endpoint ``/__admin/<api>/<path>``; anything but a success fails the test."""
    answer = requests.request(method, f"{base_url}/__admin/{api}/{path}", json=body, timeout=30)
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else {}
