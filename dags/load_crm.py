"""Push only what changed in the crm marts to ActiveCampaign (P4, B3, B6, B7, S6, S8, S10).

Runs whenever the marts are rebuilt; the trigger form offers a dry run and a full resync.
With ``alerts.crm_load_deadline_hours`` set, a DeadlineAlert fires when a load has not
succeeded that many hours after it was queued.
"""
from datetime import timedelta

from airflow.sdk import Param, dag, task

from ecomsync import tasks
from ecomsync.airflow_support import CRM_MARTS, START_DATE, credentials, default_args
from ecomsync.alerts import crm_load_deadline
from ecomsync.config import load_config

CONFIG = load_config()


@dag(dag_id="load_crm", schedule=[CRM_MARTS], start_date=START_DATE, catchup=False, max_active_runs=1,
     default_args=default_args(CONFIG), tags=["load", "activecampaign"], deadline=crm_load_deadline(CONFIG.alerts),
     params={
         "mode": Param("normal", enum=["normal", "dry_run", "full_resync"], title="Load mode",
                       description="dry_run: show the plan, write nothing; full_resync: ignore payload hashes "
                                   "and re-upsert everything (still idempotent)."),
         "retry_rejected": Param(False, type="boolean", title="Retry records the CRM rejected before"),
     },
     doc_md=__doc__)
def load_crm():
    @task(pool="activecampaign_api", execution_timeout=timedelta(hours=6))
    def push(params=None, run_id=None) -> dict:
        config = load_config()
        with tasks.fail_fast(config.crm.conn_id):
            return tasks.load_crm(config, credentials(config.crm.conn_id), tasks.warehouse_url(), run_id,
                                  mode=params["mode"], retry_rejected=params["retry_rejected"])

    push()


load_crm()
