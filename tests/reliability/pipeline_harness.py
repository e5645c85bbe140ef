"""The whole pipeline through the plain task functions (``ecomsync.tasks``) against the three sandboxes.

``Sandboxes`` serves BigCommerce, Square and ActiveCampaign on loopback ports with data fixed by seed and
clock, so two instances hold the same data. ``run_pipeline`` extracts every store and location, runs
``dbt build`` and loads the CRM, exactly what the DAGs do in order. ``warehouse_state`` and ``crm_state``
reduce a finished run to what must be equal between a clean run and a faulted or crashed one.
"""
from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from ecomsync.config import PipelineConfig, load_config
from ecomsync.extract import ExtractRequest
from ecomsync.tasks import Credentials, extract_location, extract_store, load_crm, locations_to_sync, transform
from sandbox import activecampaign, bigcommerce, square
from sandbox.core import serve

STORES = ("k3x9q2m7a1", "p8w4z6t2n5")
AC_TOKEN = "sandbox-ac-token"
SQUARE_TOKEN = "sandbox-square-token"
# Two sandboxes built with the same seed and clock hold the same data.
CLOCK = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


def bc_token(store_hash: str) -> str:
    return f"sandbox-bc-token-{store_hash}"


ALL_TOKENS = (AC_TOKEN, SQUARE_TOKEN, *(bc_token(h) for h in STORES))


class Sandboxes:
    def __init__(self, seed: int = 7, square_payments: int = 24, square_customers: int = 12):
        self.apps = {
            "bigcommerce": bigcommerce.create_app(seed=seed, stores=STORES, orders=24, customers=10, products=6,
                                                  now=CLOCK, enforce_rate_limit=False),
            "square": square.create_app(seed=seed, payments=square_payments, customers=square_customers, anchor=CLOCK),
            "activecampaign": activecampaign.create_app(enforce_rate_limit=False),
        }
        self.servers = {name: serve(app)[0] for name, app in self.apps.items()}
        self.urls = {name: f"http://127.0.0.1:{server.server_port}" for name, server in self.servers.items()}

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()

    def admin(self, api: str, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.urls[api]}/__admin/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def set_faults(self, api: str, **plan: Any) -> None:
        self.admin(api, "PUT", "faults", plan)

    def request_count(self, *apis: str) -> int:
        return sum(len(self.admin(api, "GET", "requests")["requests"]) for api in apis)

    def faults_injected(self, api: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for logged in self.admin(api, "GET", "requests")["requests"]:
            if logged["fault"]:
                counts[logged["fault"]] = counts.get(logged["fault"], 0) + 1
        return counts


@dataclass(frozen=True)
class PipelineSettings:
    config: PipelineConfig
    bigcommerce: dict[str, Credentials]
    square: Credentials
    crm: Credentials


def settings_for(urls: dict[str, str], folder: Path) -> PipelineSettings:
    """The shipped configuration, with the CRM pacing raised to what the (unthrottled) CRM sandbox allows;
    ``urls`` are ``Sandboxes.urls``."""
    shipped = yaml.safe_load(Path(load_config.__globals__["DEFAULT_CONFIG"]).read_text())
    shipped["crm"]["requests_per_second"] = 200
    path = folder / "pipeline.yml"
    path.write_text(yaml.safe_dump(shipped))
    return PipelineSettings(
        config=load_config(path),
        bigcommerce={h: Credentials(urls["bigcommerce"], bc_token(h)) for h in STORES},
        square=Credentials(urls["square"], SQUARE_TOKEN),
        crm=Credentials(urls["activecampaign"], AC_TOKEN),
    )


def extract_all(settings: PipelineSettings, wh_url: str, run_id: str) -> list[dict]:
    results = []
    for store in settings.config.enabled_stores:
        results.append(extract_store(settings.config, store, settings.bigcommerce[store.store_hash],
                                     ExtractRequest(run_id=f"{run_id}:{store.store_hash}"), wh_url))
    for location in locations_to_sync(settings.config, settings.square):
        results.append(extract_location(settings.config, location, settings.square,
                                        ExtractRequest(run_id=f"{run_id}:{location['location_id']}"), wh_url))
    return results


def run_pipeline(settings: PipelineSettings, wh_url: str, run_id: str) -> dict[str, Any]:
    """extract → transform → load, as the DAG chain runs them; returns every task's XCom value."""
    extracted = extract_all(settings, wh_url, run_id)
    transformed = transform(settings.config, wh_url)
    loaded = load_crm(settings.config, settings.crm, wh_url, run_id=f"{run_id}:load")
    return {"extract": extracted, "transform": transformed, "load": loaded}


RAW_COMPARED = ("bigcommerce_orders", "bigcommerce_customers",
                "bigcommerce_subscribers", "bigcommerce_products", "bigcommerce_categories",
                "square_locations", "square_customers", "square_payments", "square_orders",
                "square_catalog_objects")
# Mart columns that describe the run rather than the data.
RUN_COLUMNS = {"landed_at"}


def warehouse_state(wh_url: str) -> dict[str, list]:
    state: dict[str, list] = {}
    with psycopg2.connect(wh_url) as conn, conn.cursor() as cur:
        for table in RAW_COMPARED:
            cur.execute(f"select connection_id, pk, payload::text, flag from raw.{table} order by 1, 2")
            state[f"raw.{table}"] = cur.fetchall()
        for mart in ("connections", "contacts", "ecom_customers", "ecom_orders", "abandoned_carts",
                     "excluded_records"):
            cur.execute("select column_name from information_schema.columns where table_schema = 'crm' "
                        "and table_name = %s order by ordinal_position", (mart,))
            columns = [name for (name,) in cur.fetchall() if name not in RUN_COLUMNS]
            cur.execute(f"select {', '.join(columns)} from crm.{mart} order by 1, 2, 3")
            state[f"crm.{mart}"] = [tuple(str(value) for value in row) for row in cur.fetchall()]
    return state


def crm_state(sandboxes: Sandboxes) -> dict[str, Any]:
    """The CRM account as natural keys: CRM ids (assigned in arrival order) are replaced by what they stand for."""
    return normalise_crm(sandboxes.admin("activecampaign", "GET", "activecampaign/state"))


# Assigned by the CRM when an object is written: differ between two equal runs.
VOLATILE_KEYS = {"id", "links", "cdate", "udate", "adate", "edate", "sdate", "tstamp", "createdDate", "updatedDate",
                 # an order's stored ``source`` is the last write's: a rerun updates what a killed load created
                 # with source 0 (issue 14: an update never fires "makes a purchase")
                 "source"}
# The sandbox's own log of import batches, not CRM objects: a killed load's batch is queued again by the rerun.
NOT_CRM_OBJECTS = {"imports"}
# Fields that hold the CRM id of another object, and the collection it belongs to.
REFERENCES = {"connectionid": "connections", "connection": "connections", "customerid": "ecomCustomers",
              "customer": "ecomCustomers", "contact": "contacts", "tag": "tags", "list": "lists",
              "orderid": "ecomOrders", "ecomOrder": "ecomOrders"}
NATURAL_KEYS = {
    "connections": lambda o: f"{o['service']}:{o['externalid']}",
    "ecomCustomers": lambda o: f"{o['connectionid']}|{o['externalid']}",
    "contacts": lambda o: o["email"],
    "tags": lambda o: o["tag"],
    "lists": lambda o: o["name"],
    "ecomOrders": lambda o: f"{o['connectionid']}|{o['externalid']}|{o['externalcheckoutid']}",
}


def normalise_crm(state: dict[str, Any]) -> dict[str, Any]:
    names: dict[str, dict[str, str]] = {}
    # connections first: the other natural keys contain a connection id
    for collection in ("connections", "ecomCustomers", "contacts", "tags", "lists", "ecomOrders"):
        names[collection] = {}
        for item in state.get(collection, []):
            resolved = {key: names.get(REFERENCES.get(key, ""), {}).get(str(value), value)
                        if key in ("connectionid", "customerid") else value for key, value in item.items()}
            names[collection][str(item["id"])] = NATURAL_KEYS[collection](resolved)

    def strip(value: Any, key: str | None = None) -> Any:
        if key in REFERENCES and isinstance(value, (str, int)) and value not in ("", "0"):
            return names.get(REFERENCES[key], {}).get(str(value), f"unknown:{value}")
        if isinstance(value, dict):
            return {k: strip(v, k) for k, v in value.items() if k not in VOLATILE_KEYS}
        if isinstance(value, list):
            return sorted((strip(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
        return value

    return {collection: strip(items) for collection, items in state.items()
            if isinstance(items, list) and collection not in NOT_CRM_OBJECTS}


def duplicates(sandboxes: Sandboxes) -> dict[str, Any]:
    return sandboxes.admin("activecampaign", "GET", "activecampaign/duplicates")


def differences(actual: dict[str, Any], expected: dict[str, Any], shown: int = 3) -> dict[str, Any]:
    """Per table or collection: a few rows only the actual state has, and a few only the expected has."""
    found = {}
    for key in sorted(set(actual) | set(expected)):
        mine = [json.dumps(row, sort_keys=True, default=str) for row in actual.get(key, [])]
        theirs = [json.dumps(row, sort_keys=True, default=str) for row in expected.get(key, [])]
        if mine != theirs:
            extra = [row[-200:] for row in mine if row not in theirs][:shown]
            missing = [row[-200:] for row in theirs if row not in mine][:shown]
            found[key] = {"unexpected": extra, "missing": missing, "rows": (len(mine), len(theirs))}
    return found
