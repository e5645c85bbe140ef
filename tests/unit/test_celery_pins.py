"""The pinned Celery works with the pinned Celery provider (P6, issue 18).

celery 5.7.0 removed ``celery.backends.database.retry``, which apache-airflow-providers-celery 3.26.0 imports
at module level: every ``airflow celery worker`` and a CeleryExecutor scheduler die at start-up with
"cannot import name 'retry'". constraints.txt pins celery 5.6.3 (kombu 5.7.0 satisfies its kombu>=5.6.0).
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_celery_executor_imports_with_the_installed_celery():  # P6
    import airflow.providers.celery.executors.celery_executor as executor  # raises ImportError on celery 5.7.0

    assert executor.app.main


def test_constraints_pin_the_celery_the_provider_can_import():  # P6
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    assert pins["celery"] == "5.6.3"
    assert importlib.metadata.version("celery") == pins["celery"], "run `make` to install the pinned set"
