"""The few things every DAG file shares: Assets, default args, trigger-form Params, credentials.

Imported at DAG-parse time, so it does no I/O at import.
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, BaseHook, Param

from ecomsync.alerts import failure_notifiers
from ecomsync.config import PipelineConfig
from ecomsync.extract import MODES, ExtractRequest
from ecomsync.http import clean_token
from ecomsync.tasks import Credentials, Unrecoverable, parse_when

RAW_BIGCOMMERCE = Asset(name="raw_bigcommerce", uri="warehouse://raw/bigcommerce")
RAW_SQUARE = Asset(name="raw_square", uri="warehouse://raw/square")
CRM_MARTS = Asset(name="crm_marts", uri="warehouse://crm")

# The one definition of the API pools: `airflow pools import config/airflow_pools.json` creates them
# (devstack's init_airflow and the compose file's airflow-init both run exactly that).
POOLS_FILE = Path(__file__).resolve().parents[2] / "config" / "airflow_pools.json"
POOLS = {name: (spec["slots"], spec["description"]) for name, spec in json.loads(POOLS_FILE.read_text()).items()}

START_DATE = pendulum.datetime(2024, 1, 1, tz="UTC")
DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    # A hung task (a socket that never answers) must end; each DAG may set a longer one per task.
    "execution_timeout": timedelta(hours=1),
}


def default_args(config: PipelineConfig) -> dict:
    """DEFAULT_ARGS plus the failure notifiers ``alerts`` in pipeline.yml asks for."""
    notifiers = failure_notifiers(config.alerts)
    return {**DEFAULT_ARGS, **({"on_failure_callback": notifiers} if notifiers else {})}


def extract_params(target: str, target_help: str, choices: dict[str, str] | None) -> dict[str, Param]:
    """The manual-trigger form of the extract DAGs (P1): validated by Airflow before a run is created.

    ``choices`` maps the ids the configuration lists to their names: the target becomes a drop-down
    (``enum``) of ``all`` and those ids, labelled with the names. ``None`` (Square locations
    discovered at run time, ``locations: all``) leaves a free id field with ``all`` as the default.
    Dates are date fields (JSON-schema ``format: date``, checked with a format checker).
    """
    if choices is not None:
        target_param = Param("all", type="string", enum=["all", *choices], title=target_help,
                             values_display={"all": "all", **{k: f"{v} ({k})" for k, v in choices.items()}})
    else:
        target_param = Param("all", type="string", pattern=r"^(all|[A-Za-z0-9_-]+)$", title=target_help,
                             description="'all', or one location id (the locations are discovered at run time).")
    return {
        "mode": Param("incremental", enum=list(MODES), title="Sync mode",
                      description="incremental: since the watermark (scheduled runs); catch_up: everything "
                                  "changed since the last successful sync; historical: from the beginning."),
        "start_date": Param(None, type=["null", "string"], format="date", title="From (optional)",
                            description="A date (midnight UTC); with a range the watermark stays where it is."),
        "end_date": Param(None, type=["null", "string"], format="date", title="Until (optional, exclusive)"),
        target: target_param,
    }


def extract_request(params: dict, run_id: str, target: str) -> ExtractRequest:
    return ExtractRequest(mode=params["mode"], start=parse_when(params.get("start_date")),
                          end=parse_when(params.get("end_date")), run_id=f"{run_id}:{target}")


def credentials(conn_id: str) -> Credentials:
    """Base URL and token from an Airflow connection (host = base URL, password = token).

    Raises ``Unrecoverable`` (→ fails at once under ``tasks.fail_fast``) when the connection is missing
    or incomplete, naming the connection id and the environment variable that would define it.
    """
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise Unrecoverable(f"the Airflow connection {conn_id!r} does not exist: create it (UI, `airflow connections "
                            f"add`, or AIRFLOW_CONN_{conn_id.upper()}) with host = the API base URL and password = "
                            "the token") from None
    if not conn.host or not conn.password:
        raise Unrecoverable(f"Airflow connection {conn_id!r} needs a host (the API base URL) and a password "
                            "(the token)")
    host = conn.host if "://" in conn.host else f"https://{conn.host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return Credentials(base_url=host, token=clean_token(conn.password, f"Airflow connection {conn_id!r}"))
