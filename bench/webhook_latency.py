"""Purchase → CRM latency through webhooks, with Airflow running for real (issue 17 item 5).

``PYTHONPATH=plugins:. .venv/bin/python -m bench.webhook_latency [--events 100] [--minutes 3]``

Starts the local stack (embedded Postgres, the three sandboxes in this process, the ActiveCampaign sandbox
enforcing its real 5 requests/s), syncs it once (``airflow dags test`` of the four scheduled DAGs, which also
seeds the CRM), then starts Airflow's scheduler, dag-processor, triggerer and API server (LocalExecutor) with
the webhook receiver plugin, registers the hooks with the pipeline's own registration code, and creates
``--events`` purchases (BigCommerce orders in both stores and Square payments, alternating) evenly over
``--minutes`` through the sandbox admin endpoints. For each purchase it takes the time from its creation to
the CRM sandbox's first write of that order (the CRM write log), and reports p50/p95/max, how many purchases
never arrived within ``--timeout``, and how many "makes a purchase" automations fired per purchase (exactly one
for each synced live purchase; guest checkouts are not synced, B5).

The extract DAGs stay paused (their 15/30-minute schedules would only add load here); the webhook path alone is
measured. Results: printed and written to ``bench/results/webhook-latency-<UTC time>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import requests
import yaml

from devstack.airflow import VENV_BIN, Endpoints, airflow, airflow_env, bigcommerce_token, init_airflow, run_dag
from devstack.postgres import PROJECT_ROOT, LocalPostgres
from ecomsync import tasks
from ecomsync.config import load_config
from ecomsync.webhooks import registration
from sandbox import activecampaign, bigcommerce, square
from sandbox.core import serve

SCHEDULED_DAGS = ("extract_bigcommerce", "extract_square", "transform", "load_crm")
AIRFLOW_PROCESSES = ("scheduler", "dag-processor", "triggerer")
TARGETS = {"p95_s": 60.0, "max_s": 120.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _parse_at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Stack:
    def __init__(self, work: Path, seed: int):
        self.work = work
        self.postgres = LocalPostgres().ensure_running()
        tag = uuid.uuid4().hex[:8]
        self.databases = [f"bench_hooks_wh_{tag}", f"bench_hooks_af_{tag}"]
        self.warehouse_url = self.postgres.ensure_database(self.databases[0])
        self.airflow_db_url = self.postgres.ensure_database(self.databases[1])
        self.apps = {"bigcommerce": bigcommerce.create_app(seed=seed, orders=40, customers=15, products=10),
                     "square": square.create_app(seed=seed, payments=40, customers=20),
                     "activecampaign": activecampaign.create_app(enforce_rate_limit=True)}
        self.servers = {name: serve(app)[0] for name, app in self.apps.items()}
        self.urls = {name: f"http://127.0.0.1:{s.server_port}" for name, s in self.servers.items()}
        self.port = _free_port()
        self.receiver_url = f"http://127.0.0.1:{self.port}/ecomsync/webhooks"
        config = yaml.safe_load((PROJECT_ROOT / "config" / "pipeline.yml").read_text())
        config["webhooks"] = {"receiver_url": self.receiver_url}
        self.config_path = work / "pipeline.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.config = load_config(self.config_path)
        self.secret = secrets.token_urlsafe(24)
        self.env = airflow_env(warehouse_url=self.warehouse_url, airflow_db_url=self.airflow_db_url,
                               endpoints=Endpoints(self.urls["bigcommerce"], self.urls["square"],
                                                   self.urls["activecampaign"]),
                               home=work / "airflow", config_path=self.config_path)
        self.env.update({
            "AIRFLOW_CONN_ECOMSYNC_WEBHOOKS": json.dumps({"conn_type": "generic", "password": self.secret}),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__CORE__PARALLELISM": "4",  # 2 cores: 32 idle worker processes only cost memory
            # the scheduler's and triggerer's log servers: free ports, never the fixed defaults 8793/8794
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
        })
        self.processes: list[subprocess.Popen] = []

    def credentials_for(self, conn_id: str) -> tasks.Credentials:
        if conn_id.startswith("bigcommerce_"):
            return tasks.Credentials(self.urls["bigcommerce"], bigcommerce_token(conn_id.split("_", 1)[1]))
        return tasks.Credentials(self.urls["square"], "sandbox-square-token")

    def start_airflow(self) -> None:
        init_airflow(self.env)
        for dag_id in SCHEDULED_DAGS:  # the first (historical) sync, which also seeds the CRM
            run_dag(self.env, dag_id, log_dir=self.work / "initial")
        airflow(self.env, "dags", "reserialize", log_path=self.work / "reserialize.log")
        for dag_id in ("webhook_sync", "load_crm"):
            airflow(self.env, "dags", "unpause", dag_id)
        commands = [["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]]
        commands += [[name] for name in AIRFLOW_PROCESSES]
        for command in commands:
            log = open(self.work / f"{command[0]}.log", "w")  # noqa: SIM115 - lives as long as the process
            self.processes.append(subprocess.Popen([str(VENV_BIN / "airflow"), *command], env=self.env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/api/v2/version", timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(1)
        raise RuntimeError(f"the API server did not start; see {self.work / 'api-server.log'}")

    def close(self, keep: bool) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for server in self.servers.values():
            server.shutdown()
        if not keep:
            for name in self.databases:
                self.postgres.drop_database(name)


def create_purchases(stack: Stack, count: int, minutes: float) -> list[dict]:
    """Alternate a BigCommerce order (the two stores in turn) and a Square payment, evenly over ``minutes``."""
    stores = [store.store_hash for store in stack.config.enabled_stores]
    gap = minutes * 60 / max(count, 1)
    purchases = []
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i * gap - time.monotonic()))
        at = time.time()
        if i % 2 == 0:
            store = stores[(i // 2) % len(stores)]
            order = requests.post(f"{stack.urls['bigcommerce']}/__admin/bigcommerce/{store}/orders",
                                  json={"count": 1}, timeout=30).json()["orders"][0]
            purchases.append({"source": "bigcommerce", "externalid": str(order["id"]), "created_at": at,
                              "connection": f"bigcommerce:{store}", "guest": order["customer_id"] == 0})
        else:
            sale = requests.post(f"{stack.urls['square']}/__admin/square/payments", json={}, timeout=30).json()
            purchases.append({"source": "square", "externalid": sale["payment"]["id"], "created_at": at,
                              "connection": f"square:{sale['payment']['location_id']}",
                              "guest": not sale["customer"].get("email_address")})
    return purchases


def crm_writes(stack: Stack, since: int) -> list[dict]:
    return requests.get(f"{stack.urls['activecampaign']}/__admin/activecampaign/writes",
                        params={"since": since}, timeout=60).json()["writes"]


def _crm_connections(stack: Stack) -> dict[str, str]:
    """CRM connection id → our connection_id (``bigcommerce:<hash>`` / ``square:<location>``)."""
    state = requests.get(f"{stack.urls['activecampaign']}/__admin/activecampaign/state", timeout=60).json()
    return {str(c["id"]): f"{c['service']}:{c['externalid']}" for c in state["connections"]}


def _order_key(write: dict, connections: dict[str, str]) -> str:
    # An order id is unique per store only: the two stores both have an order 140.
    order = (write.get("payload") or {}).get("ecomOrder") or {}
    return f"{connections.get(str(order.get('connectionid')), '?')}|{order.get('externalid')}"


def _excluded(stack: Stack) -> dict[str, str]:
    """Orders the pipeline excluded with a recorded reason (e.g. a customer record without an email): not
    expected in the CRM, reported with their reason instead of as missing."""
    try:
        with psycopg2.connect(stack.warehouse_url) as conn, conn.cursor() as cur:
            cur.execute("select connection_id || '|' || external_id, reason from crm.excluded_records "
                        "where record_type = 'order'")
            return dict(cur.fetchall())
    except psycopg2.Error:
        return {}


def measure(stack: Stack, purchases: list[dict], since: int, timeout_s: float) -> dict:
    wanted = {f"{p['connection']}|{p['externalid']}": p for p in purchases if not p["guest"]}
    deadline = time.time() + timeout_s
    while True:
        connections = _crm_connections(stack)
        writes = [w for w in crm_writes(stack, since) if w["object_type"] == "ecomOrder"]
        seen = {_order_key(w, connections) for w in writes}
        if set(wanted) <= seen | set(_excluded(stack)) or time.time() > deadline:
            break
        time.sleep(2)
    first_write: dict[str, float] = {}
    automations: dict[str, int] = {}
    for write in writes:
        externalid = _order_key(write, connections)
        if externalid not in wanted:
            continue
        first_write.setdefault(externalid, _parse_at(write["at"]))
        if write.get("automation") == "makes_a_purchase":
            automations[externalid] = automations.get(externalid, 0) + 1
    excluded = {k: reason for k, reason in _excluded(stack).items() if k in wanted and k not in first_write}
    latencies = [first_write[k] - wanted[k]["created_at"] for k in wanted if k in first_write]
    return {
        "purchases": len(purchases), "guest_checkouts_not_synced": len(purchases) - len(wanted),
        "arrived": len(latencies), "excluded_with_reason": excluded,
        "missing": sorted(set(wanted) - set(first_write) - set(excluded)),
        "p50_s": round(statistics.median(latencies), 1) if latencies else None,
        "p95_s": round(_percentile(latencies, 0.95), 1) if latencies else None,
        "max_s": round(max(latencies), 1) if latencies else None,
        "automations_fired": sum(automations.values()),
        "purchases_with_exactly_one_automation": sum(1 for k in wanted if automations.get(k) == 1),
        "automations_other_than_one": {k: automations.get(k, 0) for k in wanted
                                       if automations.get(k, 0) != 1 and k not in excluded},
        "by_source": {source: {"p50_s": round(statistics.median(v), 1), "max_s": round(max(v), 1), "n": len(v)}
                      for source in ("bigcommerce", "square")
                      if (v := [first_write[k] - p["created_at"] for k, p in wanted.items()
                                if p["source"] == source and k in first_write])},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100, help="purchases to create (default 100)")
    parser.add_argument("--minutes", type=float, default=3.0, help="spread over this many minutes (default 3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the last one (default 600)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    work = PROJECT_ROOT / ".local" / f"bench-webhooks-{started:%Y%m%dT%H%M%S}"
    work.mkdir(parents=True)
    stack = Stack(work, args.seed)
    try:
        print("[webhooks] initial sync and Airflow start …", flush=True)
        stack.start_airflow()
        report = registration.sync_registrations(stack.config, stack.credentials_for, stack.secret)
        if report["errors"]:
            raise RuntimeError(f"registration failed: {report['errors']}")
        since = max([w["seq"] for w in crm_writes(stack, 0)] or [0])
        print(f"[webhooks] creating {args.events} purchases over {args.minutes} min …", flush=True)
        purchases = create_purchases(stack, args.events, args.minutes)
        result = measure(stack, purchases, since, args.timeout)
        with psycopg2.connect(stack.airflow_db_url) as conn, conn.cursor() as cur:
            cur.execute("select dag_id, state, count(*), avg(extract(epoch from end_date - start_date)) "
                        "from dag_run where dag_id in ('webhook_sync', 'load_crm') and run_type = 'asset_triggered' "
                        "group by 1, 2 order by 1, 2")
            result["runs"] = [{"dag_id": d, "state": st, "count": n, "avg_s": round(float(a or 0), 1)}
                              for d, st, n, a in cur.fetchall()]
    finally:
        stack.close(keep=args.keep)
    result.update(started_at=started.isoformat(), events=args.events, minutes=args.minutes,
                  cpus=os.cpu_count(), targets=TARGETS,
                  ok=bool(result["p95_s"] is not None and result["p95_s"] <= TARGETS["p95_s"]
                          and result["max_s"] <= TARGETS["max_s"] and not result["missing"]))
    out = PROJECT_ROOT / "bench" / "results" / f"webhook-latency-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"[webhooks] written to {out}; Airflow logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
