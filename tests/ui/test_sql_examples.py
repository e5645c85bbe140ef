"""Every SQL example people are shown runs on the demo data and returns rows (P5, G1; issue 19).

The examples: every ```sql block of the project's Markdown (README.md, docs/, the READMEs beside the code),
every ```sql block in a dbt YAML description (what the dbt docs show), and the query ``make demo`` prints.
They run as the read-only ``analyst`` role, so an example an analyst cannot run fails too.
"""
from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
import requests
import sqlparse
import yaml

from devstack.demo import EXAMPLE_QUERY, crm_writes, summary

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"```([\w-]*)[^\n]*\n(.*?)```", re.S)
# Statements for a DBA, not queries: shown in docs/analysts.md, they change roles cluster-wide, so they are not
# run here. Listed exactly: any other statement that is not a query fails the test.
DBA_STATEMENTS = {
    "create role jane login password '…' in role analyst",
    "grant analyst to existing_login",
    "create role analyst nologin",
}


def markdown_files() -> list[Path]:
    skip = {"node_modules", "target", "logs", "dbt_packages"}  # and hidden folders (.venv, .local, caches)
    return sorted(p for p in ROOT.rglob("*.md")
                  if not any(part in skip or part.startswith(".") for part in p.relative_to(ROOT).parts))


def yaml_descriptions(node, where: str):
    """(place, text) of every ``description`` anywhere in a parsed dbt YAML file."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield where, value
            else:
                yield from yaml_descriptions(value, f"{where}/{node.get('name', key)}")
    elif isinstance(node, list):
        for item in node:
            yield from yaml_descriptions(item, where)


def sql_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in markdown_files():
        for match in FENCE.finditer(path.read_text()):
            language, body = match.group(1).lower(), match.group(2)
            if language == "sql":
                blocks.append((str(path.relative_to(ROOT)), body))
            else:  # a query hidden in an untagged block would escape the test
                assert not re.search(r"\bfrom\s+(segments|crm|sync|state|raw)\.", body, re.I), \
                    f"{path}: a SQL example in a ```{language} block; tag it ```sql"
    for path in sorted((ROOT / "dbt_project" / "models").rglob("*.yml")):
        for place, text in yaml_descriptions(yaml.safe_load(path.read_text()), str(path.relative_to(ROOT))):
            blocks += [(place, match.group(2)) for match in FENCE.finditer(text) if match.group(1).lower() == "sql"]
    blocks.append(("devstack/demo.py EXAMPLE_QUERY", EXAMPLE_QUERY))
    return blocks


def statements(block: str) -> list[str]:
    found = []
    for statement in sqlparse.split(block):
        text = sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip()
        if text:
            found.append(text)
    return found


EXAMPLES = [(place, statement) for place, block in sql_blocks() for statement in statements(block)]


def test_the_examples_are_found():  # P5
    places = {place for place, _ in EXAMPLES}
    assert "README.md" in places and "docs/analysts.md" in places and "devstack/demo.py EXAMPLE_QUERY" in places
    assert any(place.startswith("dbt_project/") for place in places), "the dbt docs show an example"
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("place,statement", EXAMPLES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(EXAMPLES)])
def test_every_sql_example_runs_and_returns_rows(demo_warehouse, place, statement):  # P5, G1
    if not re.match(r"(select|with)\b", statement, re.I):
        assert " ".join(statement.split()) in DBA_STATEMENTS, f"{place}: not a query and not a known DBA statement"
        return
    with psycopg2.connect(demo_warehouse["url"]) as conn, conn.cursor() as cur:
        cur.execute("set local role analyst")  # what an analyst can run (P5)
        cur.execute(statement)
        rows = cur.fetchall()
        conn.rollback()
    assert rows, f"{place}: returns no rows on the demo data:\n{statement}"


def test_the_long_revenue_table_is_the_profile_map_as_rows(demo_warehouse):  # P5
    with psycopg2.connect(demo_warehouse["url"]) as conn, conn.cursor() as cur:
        cur.execute("""
            select p.email, p.connection_id, p.revenue_cents_by_currency, coalesce(r.map, '{}'::jsonb)
            from segments.contact_ecommerce_profile p
            left join (
                select email, connection_id, jsonb_object_agg(currency, revenue_cents) as map
                from segments.contact_revenue_by_currency group by email, connection_id
            ) r using (email, connection_id)""")
        rows = cur.fetchall()
        cur.execute("""select count(*) from segments.contact_revenue_by_currency r
                       where not exists (select 1 from segments.contact_ecommerce_profile p
                                         where p.email = r.email and p.connection_id = r.connection_id)""")
        orphans = cur.fetchone()[0]
    assert rows and any(len(profile) > 1 for _, _, profile, _ in rows), "demo contacts pay in several currencies"
    assert [row for row in rows if row[2] != row[3]] == []
    assert orphans == 0


def test_the_demo_summary_runs_every_query(demo_warehouse):  # P5, issue 19: the printed example must run
    text = summary(demo_warehouse["url"], datetime(2000, 1, 1, tzinfo=UTC))
    assert "not available" not in text, text
    assert EXAMPLE_QUERY in text
    assert "total CRM writes" in text


def test_the_demo_summary_counts_automations_per_trigger(demo_warehouse):  # B9, S8, issue 14: per trigger
    crm_url = demo_warehouse["sandboxes"].urls["activecampaign"]
    log = requests.get(f"{crm_url}/__admin/activecampaign/automations", timeout=10).json()["counts"]
    text = summary(demo_warehouse["url"], datetime(2000, 1, 1, tzinfo=UTC), crm_url)
    audit = [line for line in text.splitlines() if "writes that could start an automation, per trigger" in line]
    started = [line for line in text.splitlines() if line.startswith("Automations the CRM (sandbox) started")]
    assert audit and started, text
    for trigger in ("tag_added", "subscribed_to_list", "makes_a_purchase", "abandoned_cart"):  # zeros too
        assert all(f"{trigger} " in line for line in audit), audit
        assert f"{trigger} {log.get(trigger, 0)}" in started[0], (started, log)


def test_a_removal_from_the_crm_is_a_crm_write():  # issue 13: an archived order taken out of the CRM is shown
    # the run report of a load that created 3 orders, updated 1 and deleted 1 archived since it was pushed
    lines, writes = crm_writes({"ecom_order": {"created": 3, "updated": 1, "removed": 1, "unchanged": 271},
                                "contact": {"unchanged": 114}})
    assert writes == 5
    assert any(line.split()[0] == "ecom_order" and "removed   1" in line for line in lines), lines
