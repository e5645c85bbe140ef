"""Extract every enabled Square location into raw.* (S1-S5, S7, S9, P1, P2).

Every 30 minutes (S4); a location seen for the first time gets a historical sync (S3);
an account's merchant-wide streams (customers, catalog, locations) are extracted once, before its locations;
the trigger form runs a historical restart on demand (S5). Each mapped task is labelled with
its location's name.
"""
from datetime import timedelta

from airflow.sdk import dag, task

from ecomsync import tasks
from ecomsync.airflow_support import RAW_SQUARE, START_DATE, credentials, default_args, extract_params, extract_request
from ecomsync.config import load_config

CONFIG = load_config()
LISTED = ({loc.location_id: loc.name or loc.location_id for loc in CONFIG.square.listed_locations}
          if CONFIG.square.locations != "all" else None)


@dag(dag_id="extract_square", schedule=CONFIG.square.schedule, start_date=START_DATE, catchup=False,
     max_active_runs=1, default_args=default_args(CONFIG), tags=["extract", "square"],
     params=extract_params("location", "Location", LISTED), doc_md=__doc__)
def extract_square():
    @task(execution_timeout=timedelta(minutes=5))
    def plan_locations(params=None, run_id=None) -> list[dict]:
        config = load_config()
        with tasks.fail_fast(config.square.conn_id):
            extract_request(params, run_id, "plan")  # an empty date range fails here, before any location runs
            return tasks.locations_to_sync(config, credentials(config.square.conn_id), params["location"])

    # Customers, catalog and locations are merchant-wide: fetched once per Square account, before its locations.
    # No outlet: the locations that follow announce raw.square_* (one transform after the whole account).
    @task(pool="square_api", execution_timeout=timedelta(hours=6))
    def extract_merchants(locations: list[dict], params=None, run_id=None) -> list[dict]:
        config = load_config()
        results = []
        for conn_id, merchant in tasks.merchants_of(config, locations):
            with tasks.fail_fast(conn_id):
                results.append(tasks.extract_merchant(config, merchant, credentials(conn_id),
                                                      extract_request(params, run_id, f"merchant:{merchant}"),
                                                      tasks.warehouse_url()))
        return results

    # The label is rendered from the task's own arguments before it runs, so a failed location keeps its name.
    @task(pool="square_api", outlets=[RAW_SQUARE], execution_timeout=timedelta(hours=6),
          map_index_template="{{ task.op_kwargs['location']['name'] }}")
    def extract_location(location: dict, params=None, run_id=None) -> dict:
        config = load_config()
        conn_id = config.square.location_conn_id(location["location_id"])
        with tasks.fail_fast(conn_id):
            return tasks.extract_location(config, location, credentials(conn_id),
                                          extract_request(params, run_id, location["location_id"]),
                                          tasks.warehouse_url(), merchant=False)

    planned = plan_locations()
    extract_merchants(planned) >> extract_location.expand(location=planned)


extract_square()
