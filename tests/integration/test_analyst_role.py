"""P5 / issue 15: the analyst role is read-only for real — no temporary tables, no functions, no tables in
public — and a statement timeout guards the warehouse, with the grants made by the real dbt macros."""
from __future__ import annotations

import uuid

import psycopg2
import pytest

from ecomsync.dbt import run_dbt
from ecomsync.warehouse import RawRecord, Warehouse


@pytest.fixture(scope="module")
def warehouse_url(local_pg):
    name = f"test_analyst_{uuid.uuid4().hex[:8]}"
    yield local_pg.ensure_database(name)
    local_pg.drop_database(name)


@pytest.fixture(scope="module")
def analyst_login(warehouse_url, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("dbt_target")
    admin = psycopg2.connect(warehouse_url)
    admin.autocommit = True
    login = f"analyst_login_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute("create schema segments; create table segments.segment_members (email text, segment_key text);"
                    "insert into segments.segment_members values ('a@example.com', 'has_purchased')")
    with admin.cursor() as cur:
        cur.execute("do $$ begin create role analyst nologin; exception when duplicate_object then null; end $$")
        cur.execute(f'create role "{login}" login in role analyst')
    try:
        # the build's on-run-start/on-run-end macros, as a DBA runs them after adding a login
        summary = run_dbt(["run-operation", "apply_analyst_access"], warehouse_url,
                          vars={"analyst_statement_timeout": "1s"}, target_path=tmp_path)
        assert summary.success, summary.error
        analyst = psycopg2.connect(warehouse_url, user=login)
        analyst.autocommit = True
        yield analyst
        analyst.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'drop owned by "{login}"; drop role "{login}"')
        admin.close()


@pytest.mark.parametrize("statement", [
    "create temporary table mine (id int)",
    "create function pg_temp.mine() returns int language sql as 'select 1'",
    "create table public.mine (id int)",
    "create function public.mine() returns int language sql as 'select 1'",
    "create table segments.mine (id int)",
    "create view segments.mine as select 1",
])
def test_the_analyst_role_cannot_create_anything(analyst_login, statement):  # P5
    with analyst_login.cursor() as cur:
        cur.execute("select count(*) from segments.segment_members")
        assert cur.fetchone()[0] == 1
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(statement)


def test_the_analyst_role_has_a_statement_timeout(analyst_login):  # P5
    with analyst_login.cursor() as cur:
        cur.execute("show statement_timeout")
        assert cur.fetchone()[0] == "1s"
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("select pg_sleep(5)")


def test_the_pipeline_still_lands_through_its_temporary_batch_table(analyst_login, warehouse_url):  # P2
    warehouse = Warehouse(warehouse_url)
    warehouse.ensure_schema()
    with warehouse.transaction() as conn:
        assert warehouse.land(conn, "bigcommerce_orders", "bigcommerce:s", [RawRecord("1", {"id": 1}, None)],
                              "r", "historical") == 1
