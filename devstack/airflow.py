"""Real Airflow runs on the local stack: environment, metadata DB, pools, `airflow dags test`.

Both the demo and the end-to-end tests use this, with their own databases and
sandbox URLs. Credentials reach Airflow only as ``AIRFLOW_CONN_*`` env vars.
"""
from __future__ import annotations

import contextlib
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


def sandbox_credentials(endpoints: Endpoints, config_path: Path | None = None):
    """``conn_id -> tasks.Credentials`` of the sandboxes: what ``airflow_env`` puts in the connections."""
    from ecomsync.config import load_config
    from ecomsync.tasks import Credentials

    config = load_config(config_path)
    by_conn = {store.conn_id: Credentials(endpoints.bigcommerce, bigcommerce_token(store.store_hash))
               for store in config.stores}
    by_conn[config.square.conn_id] = Credentials(endpoints.square, SQUARE_TOKEN)
    by_conn[config.crm.conn_id] = Credentials(endpoints.activecampaign, ACTIVECAMPAIGN_TOKEN)
    for location in config.square.listed_locations:
        by_conn.setdefault(config.square.location_conn_id(location.location_id),
                           Credentials(endpoints.square, SQUARE_TOKEN))
    return by_conn.__getitem__


# --- webhooks on the local stack (issue 17): receiver URL, shared secret, registration -------------------------
RECEIVER_PREFIX = "/ecomsync/webhooks"  # plugins/ecomsync_webhooks.py URL_PREFIX


def with_webhooks(env: dict[str, str], api_port: int) -> dict[str, str]:
    """``env`` for an Airflow whose API server listens on 127.0.0.1:``api_port``, with webhooks switched on:

    - ``AIRFLOW_HOME/pipeline.yml``: the configuration in use (``ECOMSYNC_CONFIG`` or config/pipeline.yml) with
      ``webhooks.receiver_url`` = ``http://127.0.0.1:<api_port>/ecomsync/webhooks`` unless it sets one itself;
      ``ECOMSYNC_CONFIG`` points at it (the API server's receiver and the DAGs read the same file);
    - the Airflow connection ``ecomsync_webhooks`` (``AIRFLOW_CONN_ECOMSYNC_WEBHOOKS``) whose password is the
      BigCommerce hooks' shared secret, generated once into ``AIRFLOW_HOME/webhook_secret`` (mode 600).
    """
    import secrets

    import yaml

    from ecomsync.config import DEFAULT_CONFIG
    from ecomsync.webhooks.airflow_backend import WEBHOOKS_CONN_ID

    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    source = Path(env.get("ECOMSYNC_CONFIG") or DEFAULT_CONFIG)
    config = yaml.safe_load(source.read_text())
    webhooks = config.get("webhooks") or {}
    if not webhooks.get("receiver_url"):
        config["webhooks"] = {**webhooks, "receiver_url": f"http://127.0.0.1:{api_port}{RECEIVER_PREFIX}"}
    config_path = home / "pipeline.yml"
    if config_path != source:
        config_path.write_text(f"# written by devstack from {source}: webhooks.receiver_url added\n"
                               + yaml.safe_dump(config, sort_keys=False))
    secret_file = home / "webhook_secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    connection = json.dumps({"conn_type": "generic", "password": secret_file.read_text()})
    return {**env, "ECOMSYNC_CONFIG": str(config_path), f"AIRFLOW_CONN_{WEBHOOKS_CONN_ID.upper()}": connection}


def register_webhooks(env: dict[str, str], endpoints: Endpoints) -> dict:
    """Register the hooks on every configured store and the Square subscription (what the ``register_webhooks``
    DAG does every 15 minutes), now, with the pipeline's own code. Raises when a registration failed."""
    from ecomsync.config import load_config
    from ecomsync.webhooks.airflow_backend import WEBHOOKS_CONN_ID
    from ecomsync.webhooks.registration import sync_registrations

    config_path = Path(env["ECOMSYNC_CONFIG"])
    secret = json.loads(env[f"AIRFLOW_CONN_{WEBHOOKS_CONN_ID.upper()}"])["password"]
    report = sync_registrations(load_config(config_path), sandbox_credentials(endpoints, config_path), secret)
    if report["errors"]:
        raise RuntimeError(f"webhook registration failed: {report['errors']}")
    return report


# What a webhook starts: webhook_sync (unpaused at creation), then load_crm through the crm_marts Asset.
WEBHOOK_CHAIN = ("webhook_sync", "load_crm")


def start_airflow_with_webhooks(env: dict[str, str], endpoints: Endpoints, api_port: int) -> tuple[LocalAirflow, dict]:
    """``make airflow``'s Airflow: ``with_webhooks``, start, register the hooks, unpause ``WEBHOOK_CHAIN``.
    Returns the running Airflow and the registration report; stops Airflow again when a step fails."""
    env = with_webhooks(env, api_port)
    airflow = LocalAirflow(env, api_port=api_port).start()
    try:
        hooks = register_webhooks(env, endpoints)
        airflow.unpause(*WEBHOOK_CHAIN)
    except BaseException:
        airflow.stop()
        raise
    return airflow, hooks


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
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def airflow(env: dict[str, str], *args: str, log_path: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
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


# --- a real, long-running Airflow on the local stack (`make airflow`, the local-Airflow and Celery tests) -------
SETTINGS_FILE = PROJECT_ROOT / "config" / "airflow.env"
ADMIN_USER = "admin"


def deployment_settings() -> dict[str, str]:
    """The Airflow settings the compose file also uses (``config/airflow.env``), minus container paths."""
    from dotenv import dotenv_values

    values = {key: value for key, value in dotenv_values(SETTINGS_FILE).items() if value is not None}
    values.pop("PYTHONPATH", None)  # container paths; airflow_env sets the local ones
    return values


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalAirflow:
    """Scheduler, dag-processor, triggerer, API server (and Celery workers) as background processes.

    ``executor`` ``LocalExecutor`` (``make airflow``) or ``CeleryExecutor`` (``broker_url`` of a Redis,
    ``workers`` ``airflow celery worker`` processes). Every server binds 127.0.0.1 on a free port; the
    processes share one JWT secret (else tasks fail with "Invalid auth token", apache/airflow#49646)
    and one admin password (SimpleAuthManager), both generated into ``AIRFLOW_HOME``.
    """

    env: dict[str, str]
    executor: str = "LocalExecutor"
    broker_url: str | None = None
    workers: int = 0
    worker_concurrency: int | None = None
    api_port: int = 0
    processes: dict[str, subprocess.Popen] | None = None

    @property
    def home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "services.pids"

    def password(self) -> str:
        return json.loads((self.home / "passwords.json").read_text())[ADMIN_USER]

    def _secrets(self) -> tuple[str, str]:
        import secrets

        self.home.mkdir(parents=True, exist_ok=True)
        jwt_file, passwords = self.home / "jwt_secret", self.home / "passwords.json"
        if not jwt_file.exists():
            jwt_file.write_text(secrets.token_urlsafe(32))
            jwt_file.chmod(0o600)
        if not passwords.exists():
            passwords.write_text(json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
            passwords.chmod(0o600)
        return jwt_file.read_text(), str(passwords)

    def service_env(self) -> dict[str, str]:
        jwt_secret, passwords = self._secrets()
        self.api_port = self.api_port or free_port()
        env = {**self.env, **deployment_settings(),
               "AIRFLOW__CORE__EXECUTOR": self.executor,
               "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
               "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": passwords,
               "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
               "AIRFLOW__API__HOST": "127.0.0.1",
               "AIRFLOW__API__PORT": str(self.api_port),
               "AIRFLOW__API__BASE_URL": self.api_url,
               "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
               "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
               "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
               "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
               "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "10",
               "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10"}
        if self.broker_url:
            sql = self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://", 1)
            env["AIRFLOW__CELERY__BROKER_URL"] = self.broker_url
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+{sql}"
        return env

    def start(self, timeout: float = 240) -> LocalAirflow:
        init_airflow(self.env)
        env = self.service_env()
        commands = {"api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
                    "scheduler": ["scheduler"], "dag-processor": ["dag-processor"], "triggerer": ["triggerer"]}
        for index in range(1, self.workers + 1):
            commands[f"worker{index}"] = ["celery", "worker", "--celery-hostname", f"worker{index}@%h",
                                          "--pid", str(self.home / f"worker{index}.pid"),
                                          *(["--concurrency", str(self.worker_concurrency)]
                                            if self.worker_concurrency else [])]
        logs = self.home / "services"
        logs.mkdir(parents=True, exist_ok=True)
        self.processes = {}
        for name, args in commands.items():
            worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            if name.startswith("worker"):
                # Both workers share this host: name each, so a task instance's hostname says which ran it.
                worker_env.update(ECOMSYNC_WORKER_NAME=name,
                                  AIRFLOW__CORE__HOSTNAME_CALLABLE="devstack.airflow.worker_hostname")
            with open(logs / f"{name}.log", "ab") as log:
                self.processes[name] = subprocess.Popen([str(VENV_BIN / "airflow"), *args], env=worker_env,
                                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(json.dumps({name: p.pid for name, p in self.processes.items()}))
        self._wait_for_api(timeout)
        return self

    def _wait_for_api(self, timeout: float) -> None:
        import time

        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, p in (self.processes or {}).items() if p.poll() is not None]
            if dead:
                self.stop()
                raise RuntimeError(f"Airflow {', '.join(dead)} exited; see {self.home / 'services'}/*.log")
            try:
                if requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"the Airflow API server did not answer within {timeout:.0f}s; see {self.home / 'services'}")

    def token(self) -> str:
        import requests

        answer = requests.post(f"{self.api_url}/auth/token",
                               json={"username": ADMIN_USER, "password": self.password()}, timeout=30)
        answer.raise_for_status()
        return answer.json()["access_token"]

    def unpause(self, *dag_ids: str, timeout: float = 240) -> None:
        """Unpause DAGs through the REST API (``PATCH /api/v2/dags/{id}``), waiting until the dag-processor
        has parsed each one."""
        import time

        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token()}"
        deadline = time.monotonic() + timeout
        for dag_id in dag_ids:
            while True:
                answer = session.patch(f"{self.api_url}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30)
                if answer.ok:
                    break
                if answer.status_code != 404 or time.monotonic() > deadline:
                    raise RuntimeError(f"could not unpause {dag_id}: {answer.status_code} {answer.text[:300]}")
                time.sleep(2)

    def stop(self) -> None:
        stop_services(self.home)
        self.processes = None


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the local Celery workers: ``<host>-<worker name>``."""
    import socket

    return f"{socket.getfqdn()}-{os.environ.get('ECOMSYNC_WORKER_NAME', 'worker')}"


def stop_services(home: Path) -> None:
    """End every process ``LocalAirflow.start`` recorded in ``home`` (their whole process groups)."""
    import time

    pid_file = home / "services.pids"
    if not pid_file.exists():
        return
    pids = json.loads(pid_file.read_text()).values()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        for _ in range(50 if sig == signal.SIGTERM else 10):
            if not any(_alive(pid) for pid in pids):
                break
            time.sleep(0.2)
    pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of our own child: reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
