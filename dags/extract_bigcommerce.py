"""Extract every enabled BigCommerce store into raw.* (B1, B2, B4, B8, B9, B10, P1, P2).

Scheduled every 15 minutes (config); the trigger form picks the mode, a date range and one store.
"""
from airflow.sdk import dag, task

from ecomsync import tasks
from ecomsync.airflow_support import (DEFAULT_ARGS, RAW_BIGCOMMERCE, START_DATE, credentials, extract_params,
                                      extract_request)
from ecomsync.config import load_config


@dag(dag_id="extract_bigcommerce", schedule=load_config().bigcommerce_schedule, start_date=START_DATE,
     catchup=False, max_active_runs=1, default_args=DEFAULT_ARGS, tags=["extract", "bigcommerce"],
     params=extract_params("store", "Store hash, or 'all'"), doc_md=__doc__)
def extract_bigcommerce():
    @task
    def plan_stores(params=None) -> list[str]:
        return [store.store_hash for store in tasks.stores_to_sync(load_config(), params["store"])]

    @task(pool="bigcommerce_api", outlets=[RAW_BIGCOMMERCE], map_index_template="{{ store_hash }}")
    def extract_store(store_hash: str, params=None, run_id=None) -> dict:
        config = load_config()
        store = config.store(store_hash)
        return tasks.extract_store(config, store, credentials(store.conn_id),
                                   extract_request(params, run_id, store_hash), tasks.warehouse_url())

    extract_store.expand(store_hash=plan_stores())


extract_bigcommerce()
