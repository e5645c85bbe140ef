"""No Docker engine runs here: the distributed deployment is checked structurally (P6, issue 18).

The reference is the official Airflow 3 compose file (apache/airflow,
``airflow-core/docs/howto/docker-compose/docker-compose.yaml``): its services, commands, health checks,
start order, shared ``config`` folder and init step are restated below and compared with ours.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from dotenv import dotenv_values

from ecomsync.airflow_support import POOLS_FILE
from ecomsync.config import load_config
from ecomsync.webhooks.airflow_backend import WEBHOOKS_CONN_ID

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
COMMON = COMPOSE["x-airflow-common"]

# From the official file: service → (command, health-check command).
OFFICIAL = {
    "airflow-apiserver": ("api-server", ["CMD", "curl", "--fail", "http://localhost:8080/api/v2/version"]),
    "airflow-scheduler": ("scheduler", ["CMD", "curl", "--fail", "http://localhost:8974/health"]),
    "airflow-dag-processor": ("dag-processor", [
        "CMD-SHELL", 'airflow jobs check --job-type DagProcessorJob --hostname "$${HOSTNAME}"']),
    "airflow-triggerer": ("triggerer", ["CMD-SHELL",
                                        'airflow jobs check --job-type TriggererJob --hostname "$${HOSTNAME}"']),
    "airflow-worker": ("celery worker", None),
}
AIRFLOW_SERVICES = (*OFFICIAL, "airflow-init")


def pinned(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"^{re.escape(package)}(\[[^\]]*\])?==(\S+)", line)
        if match:
            return match.group(2)
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def init_script() -> str:
    return "\n".join(SERVICES["airflow-init"]["command"])


def test_the_services_commands_and_health_checks_of_the_official_file():  # P6
    assert set(AIRFLOW_SERVICES) | {"redis", "airflow-db", "warehouse"} <= set(SERVICES)
    for name, (command, health) in OFFICIAL.items():
        assert SERVICES[name]["command"] == command, name
        if health:
            assert SERVICES[name]["healthcheck"]["test"] == health, name
    worker_health = " ".join(SERVICES["airflow-worker"]["healthcheck"]["test"])
    assert "celery_executor.app inspect ping" in worker_health
    assert SERVICES["airflow-worker"]["environment"]["DUMB_INIT_SETSID"] == "0"
    assert SERVICES["redis"]["image"] == "redis:7.2-bookworm"


def test_start_order_waits_for_init_and_the_api_server():  # P6
    for name in OFFICIAL:
        assert SERVICES[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name
        for dependency in ("redis", "airflow-db", "warehouse"):
            assert SERVICES[name]["depends_on"][dependency] == {"condition": "service_healthy"}, (name, dependency)
    assert SERVICES["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}
    assert COMMON["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_one_shared_config_and_jwt_secret_for_every_container():  # P6 (apache/airflow#49646)
    env = COMMON["environment"]
    assert env["AIRFLOW_CONFIG"] == "/opt/airflow/config/airflow.cfg"
    for name in AIRFLOW_SERVICES:
        assert any(v.endswith("/config:/opt/airflow/config") for v in SERVICES[name]["volumes"]), name
        service_env = {**env, **(SERVICES[name].get("environment") or {})}
        # a per-container value would override the shared airflow.cfg
        assert not {k for k in service_env if k.startswith(("AIRFLOW__API_AUTH__JWT", "AIRFLOW__CORE__FERNET_KEY",
                                                             "AIRFLOW__API__SECRET_KEY"))}, name
    script = init_script()
    assert "airflow config list" in script and "jwt_secret = .+" in script
    assert SERVICES["airflow-init"]["user"] == "0:0"


def test_init_fixes_ownership_of_what_the_tasks_write():  # P6: dbt writes target/ and logs/ as uid 50000
    script = init_script()
    assert re.search(r'chown -R "\$\{AIRFLOW_UID:-50000\}:0" .*/opt/airflow/dbt_project/\{target,logs\}', script)
    assert "/opt/airflow/{logs,config}" in script
    assert SERVICES["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"


def test_init_imports_the_pools_from_their_one_definition():  # P6
    assert POOLS_FILE.parent == ROOT / "config"
    assert f"airflow pools import /opt/airflow/config/{POOLS_FILE.name}" in init_script()


def test_an_auth_manager_with_a_documented_login():  # P6
    settings = dotenv_values(ROOT / "config" / "airflow.env")
    assert settings["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    passwords = COMMON["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords.startswith("/opt/airflow/config/") and passwords in init_script()
    assert "AIRFLOW_ADMIN_PASSWORD" in dotenv_values(ROOT / ".env.example")
    assert "login `admin`" in COMPOSE_TEXT


def test_settings_and_connections_come_from_env_files():  # P6
    env_files = [entry["path"] for entry in COMMON["env_file"]]
    assert env_files == ["./config/airflow.env", "./config/connections.env"]
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "config/connections.env" in ignored and ".env" in ignored
    example = dotenv_values(ROOT / "config" / "connections.env.example")
    config = load_config()
    expected = {f"AIRFLOW_CONN_{s.conn_id.upper()}" for s in config.stores}
    expected |= {f"AIRFLOW_CONN_{config.square.conn_id.upper()}", f"AIRFLOW_CONN_{config.crm.conn_id.upper()}"}
    expected |= {f"AIRFLOW_CONN_{WEBHOOKS_CONN_ID.upper()}"}  # the webhook receiver's shared secret (issue 17)
    assert set(example) == expected
    assert all("<" in value for value in example.values()), "placeholders only, no real token"
    # nothing but the warehouse connection is hard-coded in the compose file
    for key, value in COMMON["environment"].items():
        if key.startswith("AIRFLOW_CONN_") or "PASSWORD" in str(value) or "@" in str(value):
            assert "${" in str(value) or "redis://:@" in str(value), f"{key} must come from the environment"
    assert "${WAREHOUSE_PASSWORD" in COMMON["environment"]["AIRFLOW_CONN_WAREHOUSE_DEFAULT"]


def test_every_variable_the_compose_file_requires_is_in_the_documented_env_file():  # P6
    # what `docker compose config` checks: ${VAR:?msg} must be set; ${VAR:-default} and $${…} need nothing
    required = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*):\?", COMPOSE_TEXT))
    documented = set(dotenv_values(ROOT / ".env.example"))
    assert required and required <= documented, required - documented
    bare = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)\}", COMPOSE_TEXT))
    assert bare <= documented, bare - documented


def test_image_installs_only_pinned_packages():  # P6
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"apache/airflow:{pinned('apache-airflow')}-python3.11" in dockerfile
    install = re.search(r"pip install ([^&]*)", dockerfile).group(1)
    assert "-r /opt/ecomsync/requirements.txt" in install and "-c /opt/ecomsync/constraints.txt" in install
    assert not re.search(r"\s[a-z][\w.-]*(==|>=)", install.replace("\\\n", " ")), "no package outside requirements"
    assert COMMON["image"].endswith(pinned("apache-airflow"))
    constraints = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
                   if "==" in line}
    for package in ("celery", "kombu", "redis", "apache-airflow-providers-celery", "dbt-core", "dbt-postgres"):
        assert package in constraints, package


def test_code_is_mounted_into_every_airflow_service():
    for name in AIRFLOW_SERVICES:
        volumes = SERVICES[name]["volumes"]
        for folder in ("dags", "plugins", "dbt_project", "config"):
            assert f"${{AIRFLOW_PROJ_DIR:-.}}/{folder}:/opt/airflow/{folder}" in volumes, (name, folder)


def test_separate_warehouse_and_metadata_databases():
    assert SERVICES["warehouse"]["image"].startswith("postgres:")
    assert SERVICES["airflow-db"]["image"].startswith("postgres:")
    assert "@warehouse:" in COMMON["environment"]["AIRFLOW_CONN_WAREHOUSE_DEFAULT"]
    assert "@airflow-db/" in COMMON["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_the_local_and_celery_processes_use_the_compose_settings(tmp_path):  # P6: one source of truth
    from devstack.airflow import LocalAirflow, deployment_settings

    settings = deployment_settings()
    env = LocalAirflow({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://x/y"},
                       executor="CeleryExecutor", broker_url="redis://127.0.0.1:1/0").service_env()
    assert settings and all(env[key] == value for key, value in settings.items())
    assert env["AIRFLOW__CORE__EXECUTOR"] == dotenv_values(ROOT / "config" / "airflow.env")["AIRFLOW__CORE__EXECUTOR"]
