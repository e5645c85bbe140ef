"""Extract every enabled BigCommerce store into raw.* (B1, B2, B4, B8, B9, B10, P1, P2).

Scheduled every 15 minutes (config); the trigger form picks the mode, a date range and one store
(a drop-down of the configured stores). Each mapped task is labelled with its store's name.
"""
from datetime import timedelta

from airflow.sdk import dag, task

from ecomsync import tasks
from ecomsync.airflow_support import (
    RAW_BIGCOMMERCE,
    START_DATE,
    credentials,
    default_args,
    extract_params,
    extract_request,
)
from ecomsync.config import load_config

CONFIG = load_config()


@dag(dag_id="extract_bigcommerce", schedule=CONFIG.bigcommerce_schedule, start_date=START_DATE,
     catchup=False, max_active_runs=1, default_args=default_args(CONFIG), tags=["extract", "bigcommerce"],
     params=extract_params("store", "Store", {s.store_hash: s.name for s in CONFIG.stores}), doc_md=__doc__)
def extract_bigcommerce():
    @task(execution_timeout=timedelta(minutes=5))
    def plan_stores(params=None, run_id=None) -> list[dict]:
        with tasks.fail_fast():
            extract_request(params, run_id, "plan")  # an empty date range fails here, before any store runs
            return [{"store_hash": store.store_hash, "name": store.name}
                    for store in tasks.stores_to_sync(load_config(), params["store"])]

    # The label is rendered from the task's own arguments before it runs, so a failed store keeps its name.
    @task(pool="bigcommerce_api", outlets=[RAW_BIGCOMMERCE], execution_timeout=timedelta(hours=6),
          map_index_template="{{ task.op_kwargs['store']['name'] }}")
    def extract_store(store: dict, params=None, run_id=None) -> dict:
        config = load_config()
        conn_id = config.store(store["store_hash"]).conn_id
        with tasks.fail_fast(conn_id):
            return tasks.extract_store(config, config.store(store["store_hash"]), credentials(conn_id),
                                       extract_request(params, run_id, store["store_hash"]), tasks.warehouse_url())

    extract_store.expand(store=plan_stores())


extract_bigcommerce()
