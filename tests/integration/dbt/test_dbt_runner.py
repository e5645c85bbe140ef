"""plugins/ecomsync/dbt.py: URL → profile env, failures name the failing nodes (P3)."""
from __future__ import annotations

import os

import pytest

from ecomsync.dbt import DbtRunError, profile_env, run_dbt


def test_profile_env_from_warehouse_url():
    env = profile_env("postgresql://etl%40corp:p%2Fss@db.example.com:6543/ware%20house?sslmode=require")
    assert env == {"DBT_PG_HOST": "db.example.com", "DBT_PG_PORT": "6543", "DBT_PG_USER": "etl@corp",
                   "DBT_PG_PASSWORD": "p/ss", "DBT_PG_DBNAME": "ware house", "DBT_PG_SSLMODE": "require"}
    assert profile_env("postgresql://postgres@127.0.0.1/w")["DBT_PG_PORT"] == "5432"
    with pytest.raises(ValueError):
        profile_env("mysql://x@y/z")
    with pytest.raises(ValueError):
        profile_env("postgresql://x@y")


def test_failure_names_the_failing_node_and_restores_env(warehouse_url, tmp_path):  # P3
    # A database without the raw/state tables: the staging view over state.connections cannot be built.
    with pytest.raises(DbtRunError) as failure:
        run_dbt(["run", "-s", "stg_state__connections"], warehouse_url, target_path=tmp_path)
    assert "stg_state__connections" in str(failure.value)
    assert [node.name for node in failure.value.summary.failed_nodes] == ["stg_state__connections"]
    assert "DBT_PG_DBNAME" not in os.environ
