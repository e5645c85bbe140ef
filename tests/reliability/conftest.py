"""Shared fixtures of the reliability suite: a warehouse database per module, dbt artifacts apart."""
from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture(scope="module")
def module_warehouse(local_pg):
    """An empty database for one module (dbt builds are slow, so a module's asserts share one build)."""
    name = f"test_rel_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = local_pg.ensure_database(name)
    yield url
    local_pg.drop_database(name)


@pytest.fixture(scope="module")
def dbt_target(tmp_path_factory):
    """Artifacts apart from dbt_project/target, so concurrent runs in the checkout do not collide."""
    return tmp_path_factory.mktemp("dbt_target")
