"""Runs one CRM load in a child process, so a test can kill it with SIGKILL mid-run.

Usage: python tests/integration/crm_load_child.py WAREHOUSE_URL CRM_BASE_URL ENABLED_CONNECTIONS SETTINGS_JSON
(ENABLED_CONNECTIONS comma-separated; SETTINGS_JSON the CrmSettings fields, dates as YYYY-MM-DD).
"""
from __future__ import annotations

import json
import sys
from datetime import date

from ecomsync.config import CrmSettings
from ecomsync.crm.activecampaign import ActiveCampaignClient
from ecomsync.crm.push import run_push

SANDBOX_TOKEN = "sandbox-ac-token"
REQUESTS_PER_SECOND = 8  # slow enough for the parent to stop it between two writes


def main(wh_url: str, base_url: str, enabled: str, settings_json: str) -> None:
    fields = json.loads(settings_json)
    for name in ("account_created_on", "master_list_cutoff"):
        fields[name] = date.fromisoformat(fields[name])
    client = ActiveCampaignClient(base_url, SANDBOX_TOKEN, requests_per_second=REQUESTS_PER_SECOND)
    run_push(wh_url, client, CrmSettings(**fields), run_id="killed-run", enabled_connections=set(enabled.split(",")))


if __name__ == "__main__":
    main(*sys.argv[1:5])
