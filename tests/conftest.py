"""Shared fixtures: the embedded Postgres and a fresh database per test that asks for one."""
from __future__ import annotations

import os
import uuid

import pytest

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
