"""Model the raw data with dbt whenever an extract lands new data (P3).

Runs on the raw Assets; produces the crm marts the load reads and the segments analysts query.
"""
from airflow.sdk import Param, dag, task

from ecomsync import tasks
from ecomsync.airflow_support import CRM_MARTS, DEFAULT_ARGS, RAW_BIGCOMMERCE, RAW_SQUARE, START_DATE
from ecomsync.config import load_config


@dag(dag_id="transform", schedule=(RAW_BIGCOMMERCE | RAW_SQUARE), start_date=START_DATE, catchup=False,
     max_active_runs=1, default_args=DEFAULT_ARGS, tags=["transform", "dbt"],
     params={"full_refresh": Param(False, type="boolean", title="Rebuild incremental models from scratch")},
     doc_md=__doc__)
def transform():
    @task(outlets=[CRM_MARTS])
    def dbt_build(params=None) -> dict:
        return tasks.transform(load_config(), tasks.warehouse_url(), full_refresh=params["full_refresh"])

    dbt_build()


transform()
