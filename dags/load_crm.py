"""Push only what changed in the crm marts to ActiveCampaign (P4, B3, B6, B7, S6, S8, S10).

Runs whenever the marts are rebuilt; the trigger form offers a dry run and a full resync.
"""
from airflow.sdk import Param, dag, task

from ecomsync import tasks
from ecomsync.airflow_support import CRM_MARTS, DEFAULT_ARGS, START_DATE, credentials
from ecomsync.config import load_config


@dag(dag_id="load_crm", schedule=[CRM_MARTS], start_date=START_DATE, catchup=False, max_active_runs=1,
     default_args=DEFAULT_ARGS, tags=["load", "activecampaign"],
     params={
         "mode": Param("normal", enum=["normal", "dry_run", "full_resync"], title="Load mode",
                       description="dry_run: show the plan, write nothing; full_resync: ignore payload hashes "
                                   "and re-upsert everything (still idempotent)."),
         "retry_rejected": Param(False, type="boolean", title="Retry records the CRM rejected before"),
     },
     doc_md=__doc__)
def load_crm():
    @task(pool="activecampaign_api")
    def push(params=None, run_id=None) -> dict:
        config = load_config()
        return tasks.load_crm(config, credentials(config.crm.conn_id), tasks.warehouse_url(), run_id,
                              mode=params["mode"], retry_rejected=params["retry_rejected"])

    push()


load_crm()
