"""Extract every enabled Square location into raw.* (S1-S5, S7, S9, P1, P2).

Every 30 minutes (S4); a location seen for the first time gets a historical sync (S3);
the trigger form runs a historical restart on demand (S5).
"""
from airflow.sdk import dag, task

from ecomsync import tasks
from ecomsync.airflow_support import (DEFAULT_ARGS, RAW_SQUARE, START_DATE, credentials, extract_params,
                                      extract_request)
from ecomsync.config import load_config


@dag(dag_id="extract_square", schedule=load_config().square.schedule, start_date=START_DATE, catchup=False,
     max_active_runs=1, default_args=DEFAULT_ARGS, tags=["extract", "square"],
     params=extract_params("location", "Location id, or 'all'"), doc_md=__doc__)
def extract_square():
    @task
    def plan_locations(params=None) -> list[dict]:
        config = load_config()
        return tasks.locations_to_sync(config, credentials(config.square.conn_id), params["location"])

    @task(pool="square_api", outlets=[RAW_SQUARE], map_index_template="{{ location['name'] }}")
    def extract_location(location: dict, params=None, run_id=None) -> dict:
        config = load_config()
        conn_id = config.square.location_conn_id(location["location_id"])
        return tasks.extract_location(config, location, credentials(conn_id),
                                      extract_request(params, run_id, location["location_id"]),
                                      tasks.warehouse_url())

    extract_location.expand(location=plan_locations())


extract_square()
