"""CRM load: requests per changed object, the achieved rate vs 5 requests/s, 429s, a no-change rerun.

Pushing the full data set at 5 requests/s would take hours (one request per order is
the floor), so this stage pushes a sample store (``--crm-orders`` orders, half as many
customers) through the real chain — historical extract → dbt build → ``load_crm`` —
against the ActiveCampaign sandbox enforcing its real limit, then runs the load again with
nothing changed. (Updates are measured in the end_to_end stage's 1 % cycle.)
Requests are counted from the sandbox's own request log.
"""
from __future__ import annotations

import requests

from bench.context import BenchContext, StageResult, bigcommerce_sandbox
from bench.processes import run_task
from bench.scale import STORES, Scale

CRM_RATE = 5.0  # ActiveCampaign's limit per account
SAMPLE_STORE = STORES[0]
# Which object type an API path writes or looks up (carts are ecomOrders too).
PATH_GROUPS = (("/api/3/ecomOrders", "orders"), ("/api/3/ecomCustomers", "ecom_customers"),
               ("/api/3/connections", "connections"))
CONTACT_GROUP = "contacts"  # contact/sync, contacts, tags, lists, contactTags, contactLists, import/*
# The run report's object types that count as "changed objects"; tags and list memberships ride along
# with their contact (their requests count against the contact).
OBJECT_GROUPS = {"ecom_order": "orders", "abandoned_cart": "orders", "contact": CONTACT_GROUP,
                 "ecom_customer": "ecom_customers", "connection": "connections"}


def path_group(path: str) -> str:
    for prefix, group in PATH_GROUPS:
        if path.startswith(prefix):
            return group
    return CONTACT_GROUP


def changed_objects(report: dict) -> dict[str, int]:
    """created + updated per group, from the load's run report counts."""
    changed: dict[str, int] = {}
    for object_type, counts in (report.get("counts") or {}).items():
        group = OBJECT_GROUPS.get(object_type)
        if group is None:
            continue
        changed[group] = changed.get(group, 0) + int(counts.get("created", 0)) + int(counts.get("updated", 0))
    return changed


def requests_by_group(log: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in log:
        group = path_group(entry["path"])
        counts[group] = counts.get(group, 0) + 1
    return counts


def admin(url: str, what: str) -> dict:
    return requests.get(f"{url}/__admin/activecampaign/{what}", timeout=60).json()


def request_log(url: str, since: int = 0) -> list[dict]:
    return requests.get(f"{url}/__admin/requests", params={"since": since}, timeout=60).json()["requests"]


def run(ctx: BenchContext, result: StageResult) -> None:
    orders = ctx.options.crm_orders
    source = bigcommerce_sandbox(Scale(orders / Scale(1).orders_per_store), ctx.options.seed, quota=None,
                                 stores=(SAMPLE_STORE,))
    source["customers"] = max(1, orders // 2)
    apis = ctx.start_sandboxes({"bigcommerce": source,
                                "activecampaign": {"enforce_rate_limit": True, "requests_per_second": int(CRM_RATE)}})
    _, url = ctx.new_database("crm")
    run_task("extract_store", wh_url=url, bc_url=apis.url("bigcommerce"), store_hash=SAMPLE_STORE,
             mode="historical", run_id="bench-crm-extract")
    ctx.transform(url, full_refresh=True, label="crm")
    ac = apis.url("activecampaign")

    first = run_task("load_crm", wh_url=url, ac_url=ac, run_id="bench-crm-first", mode="normal",
                     requests_per_second=CRM_RATE)
    log = request_log(ac)
    writes_before_rerun = len(admin(ac, "writes")["writes"])
    rerun = run_task("load_crm", wh_url=url, ac_url=ac, run_id="bench-crm-rerun", mode="normal",
                     requests_per_second=CRM_RATE)
    rerun_log = request_log(ac, since=log[-1]["seq"] if log else 0)
    rerun_writes = len(admin(ac, "writes")["writes"]) - writes_before_rerun

    by_group = requests_by_group(log)
    changed = changed_objects(first.result)
    refused = sum(1 for entry in log + rerun_log if entry["status"] == 429)
    span = log[-1]["at"] - log[0]["at"] if len(log) > 1 else 0.0
    pushing_rate = (len(log) - 1) / span if span else None
    bulk = any(entry["path"].startswith("/api/3/import/bulk_import") for entry in log)
    result.metrics.update({
        "sample_orders": orders, "requests": len(log), "requests_by_group": by_group, "changed_by_group": changed,
        "load_wall_s": first.wall_s, "requests_per_s_whole_task": round(len(log) / first.wall_s, 3),
        "requests_per_s_while_pushing": round(pushing_rate, 3) if pushing_rate else None,
        "contacts_via_bulk_import": bulk, "http_429": refused,
        "rerun_requests": len(rerun_log),
        "rerun_writes": rerun_writes, "rerun_wall_s": rerun.wall_s, "first_report": first.result,
        "rerun_diff": (rerun.result or {}).get("diff"), "max_rss_mb": first.max_rss_mb,
        "rerun_max_rss_mb": rerun.max_rss_mb})

    per_order = by_group.get("orders", 0) / changed["orders"] if changed.get("orders") else None
    result.check("requests per created order/cart", round(per_order, 3) if per_order else None, "<= 1",
                 per_order is not None and per_order <= 1.0)
    per_contact = by_group.get(CONTACT_GROUP, 0) / changed[CONTACT_GROUP] if changed.get(CONTACT_GROUP) else None
    if bulk:
        result.check("requests per changed contact (bulk)", round(per_contact, 4) if per_contact else None,
                     "<= 0.01", per_contact is not None and per_contact <= 0.01)
    else:
        result.check("requests per changed contact (below the bulk threshold)",
                     round(per_contact, 3) if per_contact else None, "no target outside bulk mode", None)
    attainment = pushing_rate / CRM_RATE if pushing_rate else None
    result.check("achieved rate ÷ 5 requests/s", round(attainment, 3) if attainment else None, ">= 0.95",
                 attainment is not None and attainment >= 0.95)
    result.check("HTTP 429 from the CRM", refused, "0", refused == 0)
    result.check("writes on a rerun with no changes", rerun_writes, "0", rerun_writes == 0)
    # The diff is computed in the warehouse (crm/diff.py): a no-change rerun streams only the rows the first run
    # could not put in the ledger (refused by the CRM, or skipped: waiting for a refused parent, disabled).
    rows_read = ((rerun.result or {}).get("diff") or {}).get("rows_read")
    not_in_ledger = sum(int(c.get("rejected", 0)) + int(c.get("skipped", 0))
                        for c in (first.result or {}).get("counts", {}).values())
    result.check("mart rows read by a rerun with no changes", rows_read, f"<= refused + skipped ({not_in_ledger})",
                 rows_read is not None and rows_read <= not_in_ledger)
