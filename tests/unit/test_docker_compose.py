"""No Docker engine runs here: check the distributed deployment's structure instead (P6)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from ecomsync.airflow_support import POOLS
from ecomsync.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer", "airflow-init")


def pinned(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"^{re.escape(package)}(\[[^\]]*\])?==(\S+)", line)
        if match:
            return match.group(2)
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def test_all_services_of_the_celery_deployment_exist():  # P6
    assert set(AIRFLOW_SERVICES) | {"redis", "airflow-db", "warehouse"} <= set(SERVICES)
    assert COMPOSE["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert SERVICES["airflow-worker"]["command"] == "celery worker"


def test_image_versions_match_the_pins():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"apache/airflow:{pinned('apache-airflow')}-python3.11" in dockerfile
    assert "requirements.txt" in dockerfile and "constraints.txt" in dockerfile
    assert COMPOSE["x-airflow-common"]["image"].endswith(pinned("apache-airflow"))
    constraints = (ROOT / "constraints.txt").read_text()
    for package in ("dbt-core", "dbt-postgres", "apache-airflow"):
        assert f"{package}=={pinned(package)}" in constraints


def test_code_is_mounted_into_every_airflow_service():
    for name in AIRFLOW_SERVICES:
        volumes = SERVICES[name]["volumes"]
        for folder in ("dags", "plugins", "dbt_project", "config"):
            assert f"./{folder}:/opt/airflow/{folder}" in volumes, (name, folder)


def test_credentials_come_from_the_environment_only():
    env = COMPOSE["x-airflow-common"]["environment"]
    config = load_config()
    expected = {f"AIRFLOW_CONN_{s.conn_id.upper()}" for s in config.stores}
    expected |= {f"AIRFLOW_CONN_{config.square.conn_id.upper()}", f"AIRFLOW_CONN_{config.crm.conn_id.upper()}"}
    assert expected <= set(env)
    for key, value in env.items():
        if key.startswith("AIRFLOW_CONN_") or "PASSWORD" in str(value):
            assert "${" in str(value), f"{key} must come from the environment"
    assert env["WAREHOUSE_URL"].startswith("postgresql://") and "${WAREHOUSE_PASSWORD" in env["WAREHOUSE_URL"]


def test_separate_warehouse_and_metadata_databases():
    assert SERVICES["warehouse"]["image"].startswith("postgres:")
    assert SERVICES["airflow-db"]["image"].startswith("postgres:")
    assert "@warehouse:" in COMPOSE["x-airflow-common"]["environment"]["WAREHOUSE_URL"]
    assert "@airflow-db/" in COMPOSE["x-airflow-common"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_init_creates_the_same_pools_as_the_local_stack():
    command = "\n".join(SERVICES["airflow-init"]["command"])
    for pool, (slots, _) in POOLS.items():
        assert f"airflow pools set {pool} {slots} " in command
