"""Real Airflow runs on the local stack: environment, metadata DB, pools, `airflow dags test`.

Both the demo and the end-to-end tests use this, with their own databases and
sandbox URLs. Credentials reach Airflow only as ``AIRFLOW_CONN_*`` env vars.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.postgres import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Endpoints:
    bigcommerce: str
    square: str
    activecampaign: str


def bigcommerce_token(store_hash: str) -> str:
    return f"sandbox-bc-token-{store_hash}"


SQUARE_TOKEN = "sandbox-square-token"
ACTIVECAMPAIGN_TOKEN = "sandbox-ac-token"


def _conn(host: str, token: str) -> str:
    return json.dumps({"conn_type": "http", "host": host, "password": token})


def airflow_env(*, warehouse_url: str, airflow_db_url: str, endpoints: Endpoints, home: Path,
                config_path: Path | None = None) -> dict[str, str]:
    from ecomsync.config import load_config

    config = load_config(config_path)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "plugins"), str(PROJECT_ROOT)]),
        "WAREHOUSE_URL": warehouse_url,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if config_path:
        env["ECOMSYNC_CONFIG"] = str(config_path)
    for store in config.stores:
        env[f"AIRFLOW_CONN_{store.conn_id.upper()}"] = _conn(endpoints.bigcommerce, bigcommerce_token(store.store_hash))
    env[f"AIRFLOW_CONN_{config.square.conn_id.upper()}"] = _conn(endpoints.square, SQUARE_TOKEN)
    env[f"AIRFLOW_CONN_{config.crm.conn_id.upper()}"] = _conn(endpoints.activecampaign, ACTIVECAMPAIGN_TOKEN)
    return env


def airflow(env: dict[str, str], *args: str, log_path: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(VENV_BIN / "airflow"), *args]
    if log_path is None:
        return subprocess.run(command, env=env, check=check, capture_output=True, text=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    if check and result.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {result.returncode}); log {log_path}:\n{tail}")
    return result


def init_airflow(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the API pools (idempotent)."""
    from ecomsync.airflow_support import POOLS

    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(env, "db", "migrate")
    for name, (slots, description) in POOLS.items():
        airflow(env, "pools", "set", name, str(slots), description)


def dag_run_failed(log_text: str) -> bool:
    return "state=failed" in log_text or "DagRun Finished" not in log_text


def run_dag(env: dict[str, str], dag_id: str, conf: dict | None = None, log_dir: Path | None = None) -> Path:
    """``airflow dags test``: one real DAG run, in process. Raises when the run fails."""
    log_dir = log_dir or Path(env["AIRFLOW_HOME"]) / "runs"
    log_path = log_dir / f"{dag_id}.log"
    args = ["dags", "test", dag_id]
    if conf:
        args += ["-c", json.dumps(conf)]
    airflow(env, *args, log_path=log_path)
    text = log_path.read_text(errors="replace")
    if dag_run_failed(text):
        tail = "".join(text.splitlines(keepends=True)[-60:])
        raise RuntimeError(f"DAG {dag_id} did not succeed; log {log_path}:\n{tail}")
    return log_path
