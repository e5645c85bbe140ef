"""A warehouse holding exactly what ``make demo`` produces: the sandboxes ``python -m sandbox serve`` starts
(seed 42, default sizes), every store and location extracted, ``dbt build``, and one CRM load.

The demo runs these steps as Airflow DAG runs; here they run as the plain task functions the DAGs call
(``ecomsync.tasks``), with the CRM pacing opened up (the sandbox then enforces no limit). The SQL examples
of the docs and the status page are checked against this data.
"""
from __future__ import annotations

from pathlib import Path

import psycopg2
import requests
import yaml

from ecomsync.config import DEFAULT_CONFIG, load_config
from ecomsync.extract import ExtractRequest
from ecomsync.tasks import Credentials, extract_location, extract_store, load_crm, locations_to_sync, transform
from sandbox.__main__ import build_apps
from sandbox.core import serve

DEMO_SEED = 42  # ``python -m sandbox serve`` default, what ``make demo`` starts


class DemoSandboxes:
    """The three sandbox APIs as ``make demo`` starts them (seed 42), on ephemeral loopback ports."""

    def __init__(self) -> None:
        self.apps = build_apps(seed=DEMO_SEED, fixtures=None, rate_limits=False)
        self.servers = {name: serve(app)[0] for name, app in self.apps.items()}
        self.urls = {name: f"http://127.0.0.1:{server.server_port}" for name, server in self.servers.items()}

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


def build_demo_warehouse(wh_url: str, folder: Path, sandboxes: DemoSandboxes, run_id: str = "demo",
                         rejected_contacts: int = 0) -> dict:
    """extract every store and location → dbt build → load the CRM, into ``wh_url``; returns the task results.

    ``rejected_contacts``: the CRM sandbox answers 422 for that many contacts (the first emails of
    ``crm.contacts``), as the real CRM does for addresses it refuses, so the load records rejections."""
    from devstack.airflow import ACTIVECAMPAIGN_TOKEN, SQUARE_TOKEN, bigcommerce_token

    shipped = yaml.safe_load(DEFAULT_CONFIG.read_text())
    shipped["crm"]["requests_per_second"] = 500
    path = folder / "pipeline.yml"
    path.write_text(yaml.safe_dump(shipped))
    config = load_config(path)
    results: dict = {"extract": []}
    for store in config.enabled_stores:
        credentials = Credentials(sandboxes.urls["bigcommerce"], bigcommerce_token(store.store_hash))
        results["extract"].append(extract_store(config, store, credentials,
                                                ExtractRequest(run_id=f"{run_id}:{store.store_hash}"), wh_url))
    square = Credentials(sandboxes.urls["square"], SQUARE_TOKEN)
    for location in locations_to_sync(config, square):
        results["extract"].append(extract_location(config, location, square,
                                                   ExtractRequest(run_id=f"{run_id}:{location['location_id']}"),
                                                   wh_url))
    results["transform"] = transform(config, wh_url)
    if rejected_contacts:
        with psycopg2.connect(wh_url) as conn, conn.cursor() as cur:
            cur.execute("select email from crm.contacts order by email limit %s", (rejected_contacts,))
            emails = [email for (email,) in cur.fetchall()]
        requests.put(f"{sandboxes.urls['activecampaign']}/__admin/activecampaign/rejected-emails",
                     json={"emails": emails}, timeout=30).raise_for_status()
        results["rejected_emails"] = emails
    crm = Credentials(sandboxes.urls["activecampaign"], ACTIVECAMPAIGN_TOKEN)
    results["load"] = load_crm(config, crm, wh_url, run_id=f"{run_id}:load")
    return results
