"""One warehouse database per test module: dbt builds are slow, so the asserts share a build."""
from __future__ import annotations

import os
import uuid

import pytest
from raw_warehouse_fixture import create_warehouse_tables


@pytest.fixture(scope="module")
def empty_warehouse(local_pg):
    name = f"test_dbt_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    create_warehouse_tables(url)
    yield url
    local_pg.drop_database(name)


@pytest.fixture(scope="module")
def dbt_target(tmp_path_factory):
    """Artifacts apart from dbt_project/target, so concurrent runs in the checkout do not collide."""
    return tmp_path_factory.mktemp("dbt_target")
