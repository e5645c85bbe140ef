"""Real Airflow runs on the local stack: environment, metadata DB, pools, `airflow dags test`.

Both the demo and the end-to-end tests use this, with their own databases and
sandbox URLs. Credentials reach Airflow only as ``AIRFLOW_CONN_*`` env vars.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
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


WAREHOUSE_CONN_ID = "warehouse_default"


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
        # The warehouse is an Airflow connection like every API (tasks.warehouse_url reads it with PostgresHook).
        f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}": warehouse_url,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if config_path:
        env["ECOMSYNC_CONFIG"] = str(config_path)
    for store in config.stores:
        env[f"AIRFLOW_CONN_{store.conn_id.upper()}"] = _conn(endpoints.bigcommerce, bigcommerce_token(store.store_hash))
    env[f"AIRFLOW_CONN_{config.square.conn_id.upper()}"] = _conn(endpoints.square, SQUARE_TOKEN)
    env[f"AIRFLOW_CONN_{config.crm.conn_id.upper()}"] = _conn(endpoints.activecampaign, ACTIVECAMPAIGN_TOKEN)
    return env


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # Linux prctl(2): the kernel sends SIGKILL to this child when the process that started it dies,
    # even of SIGKILL; the child also leads its own process group so its descendants can be ended too.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_child(command: list[str], env: dict[str, str] | None = None, **popen: object) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose child (and its process group) never outlives us.

    The child dies with this process (``PR_SET_PDEATHSIG``), and an exception here (Ctrl-C, a SIGTERM
    turned into ``SystemExit``, a timeout) kills its whole process group before propagating.
    """
    process = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent, start_new_session=True,
                               **popen)  # type: ignore[call-overload]
    previous = signal.getsignal(signal.SIGTERM)
    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        _kill_group(process)
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def airflow(env: dict[str, str], *args: str, log_path: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(VENV_BIN / "airflow"), *args]
    if log_path is None:
        result = run_child(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
        return result
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        result = run_child(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    if check and result.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {result.returncode}); log {log_path}:\n{tail}")
    return result


def init_airflow(env: dict[str, str]) -> None:
    """Migrate the metadata DB and import the API pools from their one definition (idempotent).

    ``config/airflow_pools.json`` is also what the compose file's ``airflow-init`` imports.
    """
    from ecomsync.airflow_support import POOLS_FILE

    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "import", str(POOLS_FILE))


def dag_run_failed(log_text: str) -> bool:
    return "state=failed" in log_text or "DagRun Finished" not in log_text


def run_dag(env: dict[str, str], dag_id: str, conf: dict | None = None, log_dir: Path | None = None) -> Path:
    """``airflow dags test``: one real DAG run, in process. Raises when the run fails.

    The warehouse is checked first: when it is down this raises within seconds, naming the
    connection, instead of starting a run whose every task would fail.
    """
    from ecomsync.tasks import check_warehouse

    check_warehouse(env[f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}"], f"Airflow connection {WAREHOUSE_CONN_ID!r}")
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
