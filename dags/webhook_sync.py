"""Orders reach the CRM as they occur: the webhook micro-batch and the hook registration (issue 17; B2, S4, P1).

``webhook_sync`` runs when the receiver (plugin ``ecomsync_webhooks``) stores a new event: in one task it claims
the waiting events, extracts the named stores/locations incrementally, and builds the dbt models of those
sources; its ``crm_marts`` Asset starts ``load_crm``. One run at a time; events arriving meanwhile make
the next run. The 15/30-minute extract schedules stay as the safety net for lost webhooks.

``register_webhooks`` keeps each store's hooks and the Square subscription pointing at the receiver
(``webhooks.receiver_url`` in config/pipeline.yml): creates, repairs deactivated ones, removes them for
disabled stores.
"""
from airflow.sdk import Asset, dag, task

from ecomsync import tasks
from ecomsync.airflow_support import CRM_MARTS, START_DATE, credentials, default_args
from ecomsync.config import load_config
from ecomsync.webhooks import microbatch, registration
from ecomsync.webhooks.airflow_backend import webhook_secret
from ecomsync.webhooks.events import ASSET_NAME, ASSET_URI

CONFIG = load_config()  # an invalid pipeline.yml is this file's import error, naming the file and the key
WEBHOOK_EVENTS = Asset(name=ASSET_NAME, uri=ASSET_URI)


@dag(dag_id="webhook_sync", schedule=[WEBHOOK_EVENTS], start_date=START_DATE, catchup=False, max_active_runs=1,
     default_args={**default_args(CONFIG), "retries": 1}, tags=["webhooks", "extract", "transform"], doc_md=__doc__)
def webhook_sync():
    # One task: every task start costs seconds, and the purchase → CRM target is 60 s (ecomsync.webhooks.microbatch).
    @task(outlets=[CRM_MARTS])
    def sync_changes(run_id=None) -> dict:
        with tasks.fail_fast():
            return microbatch.run(load_config(), credentials, tasks.warehouse_url(), run_id)

    sync_changes()


@dag(dag_id="register_webhooks", schedule="*/15 * * * *", start_date=START_DATE, catchup=False, max_active_runs=1,
     default_args=default_args(CONFIG), tags=["webhooks"], doc_md=__doc__)
def register_webhooks():
    @task
    def sync_registrations() -> dict:
        with tasks.fail_fast():
            config = load_config()
        report = registration.sync_registrations(config, credentials,
                                                 webhook_secret() if config.webhook_receiver_url else None)
        if report["errors"]:
            raise RuntimeError(f"webhook registration failed for {sorted(report['errors'])}: {report['errors']}")
        return report

    sync_registrations()


webhook_sync()
register_webhooks()
