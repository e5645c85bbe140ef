"""Model the raw data with dbt whenever an extract lands new data (P3).

Runs on the raw Assets; produces the crm marts the load reads and the segments analysts query.
A failed model or test is named in the task log; a retry of the task runs ``dbt retry``, which
reruns only what failed (one task for the whole project keeps the webhook path fast: per-model
tasks would add Airflow's scheduling overhead to every model).
"""
from datetime import timedelta

from airflow.sdk import Param, dag, task

from ecomsync import tasks
from ecomsync.airflow_support import CRM_MARTS, RAW_BIGCOMMERCE, RAW_SQUARE, START_DATE, default_args
from ecomsync.config import load_config

CONFIG = load_config()


@dag(dag_id="transform", schedule=(RAW_BIGCOMMERCE | RAW_SQUARE), start_date=START_DATE, catchup=False,
     max_active_runs=1, default_args=default_args(CONFIG), tags=["transform", "dbt"],
     params={"full_refresh": Param(False, type="boolean", title="Rebuild incremental models from scratch")},
     doc_md=__doc__)
def transform():
    @task(outlets=[CRM_MARTS], execution_timeout=timedelta(hours=2))
    def dbt_build(params=None, ti=None) -> dict:
        with tasks.fail_fast():
            return tasks.transform(load_config(), tasks.warehouse_url(), full_refresh=params["full_refresh"],
                                   retry=ti.try_number > 1)

    dbt_build()


transform()
