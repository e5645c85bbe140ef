"""Push exactly the deltas of the crm marts to ActiveCampaign (P4, B3, B4, B6, B7, B9, B10, B11, S6, S8, S9, S10).

One run, read top to bottom in ``Load.run``:
1. takes the CRM account's advisory lock (two loads never interleave) and opens a report row;
2. finds the run's live contacts, when the contacts are read: new orders and carts that may start an
   automation (their contacts' new tags and subscriptions may too, B3);
3. mart by mart in dependency order (connections → contacts with their tags and list memberships →
   e-commerce customers → orders, then the orders the marts now exclude → abandoned carts), skips the mart when
   nothing that decides its diff moved since its last settled load (``crm/skip.py``), or else streams the rows
   the warehouse-side diff keeps (``crm/diff.py``: mart rows joined to ``sync.ledger`` by key and row hash)
   in batches through a server-side cursor; counts the rows it leaves out as unchanged;
4. plans each batch (``crm/plan.py``: create, update, unchanged, skipped; may the write start an automation?)
   and, unless it is a dry run, executes it (``crm/execute.py``, ``crm/bulk_import.py``); a dry run adds the
   batch to its bounded plan (counts and a few samples, ``report.PlanSummary``);
5. writes the run report (``crm/report.py``): counts per object type, requests, warnings, automations, plan.

Memory follows the batch, not the data: a batch of rows and its items, the CRM ids of connections and tags,
the run's live contacts (new live purchases only) and counters.

A mart row the load cannot turn into a payload (money not in integer cents, unknown ``sync_mode``, naive
timestamp) is recorded in ``sync.rejections`` (``invalid_mart_row``) and never sent. A disabled connection's
records are skipped and nothing of it is deleted (B11, S9). The one deletion: an order the ledger pushed that
the marts now exclude (``crm.excluded_records``, record type ``order``) is taken out of the CRM's figures
(``DELETE ecomOrders/{id}``), its ledger row marked ``removed`` with the reason, counted as ``removed``.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import psycopg2

from ecomsync.config import CrmSettings
from ecomsync.crm import diff, skip
from ecomsync.crm.activecampaign import ActiveCampaignClient, account_key
from ecomsync.crm.execute import Executor
from ecomsync.crm.ledger import SyncStore
from ecomsync.crm.plan import Batch, Item, Planner
from ecomsync.crm.report import PlanSummary, RunReport

log = logging.getLogger(__name__)

MODES = ("normal", "dry_run", "full_resync")
BATCH_SIZE = 1000
SKIP_HINTS = {"connection disabled": "nothing in the CRM was deleted (B11, S9)",
              "rejected before, payload unchanged": "fix the data or run with retry_rejected"}


def run_push(wh_url: str, client: ActiveCampaignClient, crm_settings: CrmSettings, *, run_id: str,
             mode: str = "normal", enabled_connections: set[str], retry_rejected: bool = False,
             workers: int = 4, batch_size: int = BATCH_SIZE) -> RunReport:
    """One load of the CRM account behind ``client``; ``workers`` threads share its token bucket; mart rows are
    read and pushed ``batch_size`` at a time (contacts: at least ``bulk_import_threshold`` + 1)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    store = SyncStore(wh_url)
    try:
        # The account lock first: a second load of the account is refused before it touches anything.
        store.acquire_account_lock(client.account)  # keyed on the normalised account: one lock however it is spelt
        store.ensure_schema()
        report = RunReport(run_id=run_id, mode=mode, started_at=datetime.now(UTC))
        interrupted = store.mark_interrupted_reports(client.account, run_id,
                                                     lambda spelt: _same_account(spelt, client.account_key))
        if interrupted:
            report.warnings.append(f"{len(interrupted)} earlier load(s) of this account stopped without finishing "
                                   f"(killed?); their run reports are now 'interrupted': {', '.join(interrupted)}")
            log.warning("%s", report.warnings[-1])
        store.start_report(run_id, client.account, mode, report.started_at)
        requests_before = client.requests_made
        try:
            Load(wh_url, store, client, crm_settings, report, enabled_connections, retry_rejected, workers,
                 batch_size).run()
            report.status = "success"
        except BaseException as exc:
            report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            report.finished_at = datetime.now(UTC)
            report.requests = client.requests_made - requests_before
            store.finish_report(run_id, report.started_at, finished_at=report.finished_at, status=report.status,
                                counts=report.counts, requests=report.requests, warnings=report.warnings,
                                plan=report.plan, error=report.error, automations=report.automations,
                                marts=report.marts)
            log.info("CRM load %s (%s): %s; %d requests; counts %s; automations %s; warnings %s", run_id, mode,
                     report.status, report.requests, report.counts, report.automations, report.warnings)
        return report
    finally:
        try:
            store.refresh_statistics()
        except psycopg2.Error as exc:  # statistics are an optimisation: never mask the load's own outcome
            log.warning("ANALYZE sync.ledger failed after the load: %s", exc)
        store.release_account_lock()
        store.close()


class Load:
    """One run of the load over its marts (see the module docstring)."""

    def __init__(self, wh_url: str, store: SyncStore, client: ActiveCampaignClient, settings: CrmSettings,
                 report: RunReport, enabled_connections: set[str], retry_rejected: bool, workers: int,
                 batch_size: int):
        self.wh_url, self.store, self.client, self.settings, self.report = wh_url, store, client, settings, report
        self.enabled = set(enabled_connections)
        self.retry_rejected, self.workers, self.batch_size = retry_rejected, workers, batch_size
        self.dry_run = report.mode == "dry_run"
        self.summary = PlanSummary()
        self.skips: dict[tuple[str, str], int] = {}  # (reason, connection or object type) → skipped objects

    def run(self) -> None:
        self.require_marts()
        if not self.dry_run:
            self.store.clear_shadowing_rejections()
        master_list_id = self.find_master_list()
        options = diff.DiffOptions(
            enabled_connections=tuple(sorted(self.enabled)), full_resync=self.report.mode == "full_resync",
            master_list=self.settings.master_list_name if self.settings.master_list_rule_applies else None,
            master_list_found=master_list_id is not None)
        reader = diff.Reader(self.wh_url, options, self.batch_size)
        try:
            planner = Planner(self.store, self.settings, mode=self.report.mode, enabled_connections=self.enabled,
                              master_list_found=master_list_id is not None, retry_rejected=self.retry_rejected,
                              started_at=self.report.started_at, live_emails=set())
            executor = Executor(self.store, self.client, self.settings, self.report, self.workers, master_list_id)
            marts = skip.MartSkip(self.store, reader, options, self.settings, self.client.account_key,
                                  self.report.run_id, mode=self.report.mode, retry_rejected=self.retry_rejected)
            for mart in diff.MARTS:
                state = marts.check(mart)
                self.report.marts[mart.table] = state.as_report()
                log.info("crm.%s: %s (%s)", mart.table, "skipped" if state.skip else "read", state.reason)
                if state.skip:
                    self.carry(mart, state, planner)
                    continue
                if mart.table == "contacts":
                    # planned in its own snapshots: the contacts' diff then reads in a snapshot of its own
                    reader.end()
                    planner.live_emails = self.live_emails(reader, planner)
                before = self.tallies(mart, planner)
                self.read(mart, reader, planner, executor)
                marts.record(state, skip.carried(mart, before, self.tallies(mart, planner)), executor.owed)
            self.warn_about(planner)
            if not self.dry_run:
                executor.finish()
            else:
                self.report.plan = self.summary.plan
        finally:
            self.report.diff = {"rows_read": reader.rows_read, "batches_read": reader.batches_read,
                                "max_batch_rows": reader.max_rows_held}
            reader.close()

    def read(self, mart: diff.Mart, reader: diff.Reader, planner: Planner, executor: Executor) -> None:
        """The mart's diff: its unchanged rows counted, its changed rows planned and pushed batch by batch."""
        self.count_unchanged(reader.unchanged_counts(mart))
        for rows in reader.changed(mart, self.rows_per_batch(mart)):
            self.handle(planner.plan(mart, rows, self.reject_row), executor)
        if mart.table == "ecom_orders":
            for rows in reader.removable_orders():
                self.handle(self.removals(rows), executor)

    def tallies(self, mart: diff.Mart, planner: Planner) -> dict[str, Any]:
        """The run's counts, skips and malformed rows of ``mart`` so far (``skip.carried`` takes a phase's as the
        difference of two)."""
        return {"counts": {t: dict(self.report.counts.get(t, {})) for t in mart.own_types},
                "skips": dict(self.skips), "malformed": planner.malformed.get(mart.table, 0)}

    def carry(self, mart: diff.Mart, state: skip.MartState, planner: Planner) -> None:
        """A skipped mart's counts, skips and malformed rows (for the warnings) and dry-run plan entries, as its
        recorded load left them."""
        assert state.since is not None
        carried = state.since["carried"]
        for object_type, counts in carried.get("counts", {}).items():
            for outcome, n in counts.items():
                if n:
                    self.report.count(object_type, outcome, n)
                    if self.dry_run and outcome in ("unchanged", "skipped"):
                        self.summary.add_count(object_type, outcome, n)
        for reason, scope, n in carried.get("skips", []):
            self.skips[(reason, scope)] = self.skips.get((reason, scope), 0) + n
        malformed = carried.get("counts", {}).get(mart.object_type, {}).get("rejected", 0)
        if malformed:
            planner.malformed[mart.table] = planner.malformed.get(mart.table, 0) + malformed
        if self.dry_run:
            self.summary.entry(mart.object_type)["mart"] = f"crm.{mart.table} skipped: {state.reason}"

    def require_marts(self) -> None:
        names = [f"crm.{mart.table}" for mart in diff.MARTS] + ["crm.excluded_records"]
        missing = self.store.query("select name from unnest(%s::text[]) as name where to_regclass(name) is null",
                                   (names,))
        if missing:
            raise RuntimeError(f"{missing[0]['name']} does not exist: run the transform (dbt build) before the load")

    def find_master_list(self) -> str | None:
        if not self.settings.master_list_rule_applies:
            return None
        master_list_id = self.client.find_list(self.settings.master_list_name)
        if master_list_id is None:
            self.report.warn(f"master list {self.settings.master_list_name!r} not found in the CRM (renamed or "
                             "deleted?): no contact was subscribed to it (B7)")
        return master_list_id

    def live_emails(self, reader: diff.Reader, planner: Planner) -> set[str]:
        """Emails with a new order or cart that may start an automation in this run (planned, not recorded)."""
        emails: set[str] = set()
        for mart in diff.MARTS:
            if mart.table in ("ecom_orders", "abandoned_carts"):
                for rows in reader.new_maybe_live(mart):
                    emails |= {item.payload["email"] for item in planner.plan(mart, rows, None).items
                               if item.fires}
        return emails

    def rows_per_batch(self, mart: diff.Mart) -> int:
        # bulk_import_threshold is decided per batch of changed contacts: a batch holds more than it.
        if mart.table == "contacts":
            return max(self.batch_size, self.settings.bulk_import_threshold + 1)
        return self.batch_size

    def count_unchanged(self, counts: dict[str, int]) -> None:
        for object_type, n in counts.items():
            if n:
                self.report.count(object_type, "unchanged", n)
                self.summary.add_count(object_type, "unchanged", n)

    def handle(self, batch: Batch, executor: Executor) -> None:
        """Plan → (dry run) the plan summary, or → the executor; the batch's skips are tallied for the warnings."""
        for item in batch.items:
            if item.action == "skipped" and item.reason in SKIP_HINTS:
                scope = item.connection_id if item.reason == "connection disabled" else item.object_type
                self.skips[(item.reason, str(scope))] = self.skips.get((item.reason, str(scope)), 0) + 1
        if self.dry_run:
            self.summary.add(batch.items)
            for item in batch.items:
                if item.fires:
                    self.report.count_automation(item.object_type)
                if item.action in ("unchanged", "skipped"):
                    self.report.count(item.object_type, item.action)
            return
        self.store.set_row_hashes([
            (item.object_type, item.natural_key, item.row_hash) for item in batch.items
            if item.action == "unchanged" and item.row_hash is not None
            and batch.ledger[(item.object_type, item.natural_key)].row_hash != item.row_hash])
        executor.push_batch(batch)

    def removals(self, rows: list[dict[str, Any]]) -> Batch:
        """Orders the ledger pushed that the marts now exclude (archived, failed, cancelled …): to be taken out
        of the CRM's figures. A disabled connection's are skipped: nothing of it is deleted (B11)."""
        items = []
        for row in rows:
            item = Item("ecom_order", row["order_key"], row["connection_id"], {"excluded": row["reason"]},
                        action="remove", reason=str(row["reason"]))
            if item.connection_id not in self.enabled:
                item.action, item.reason = "skipped", "connection disabled"
            items.append(item)
        return Batch(items, ledger=self.store.ledger_for([("ecom_order", item.natural_key) for item in items]))

    def reject_row(self, object_type: str, natural_key: str, connection_id: str | None, payload_hash: str,
                   error_code: str, error: dict, why: str) -> None:
        """A mart row the load cannot send: recorded in ``sync.rejections`` (not by a dry run) and counted."""
        if not self.dry_run:
            self.store.record_rejection(object_type, natural_key, connection_id, payload_hash, None, error_code,
                                        error, self.report.run_id)
        self.report.reject(object_type, natural_key, None, error_code)
        log.warning("%s %s %s", object_type, natural_key, why)

    def warn_about(self, planner: Planner) -> None:
        """One warning per malformed mart and per skip reason (the missing master list already has its own)."""
        if planner.orders_without_is_purchase:
            self.report.warn("crm.ecom_orders has no is_purchase column (marts older than the load): every new "
                             "live order is taken for a purchase — rebuild the marts")
        for table, n in planner.malformed.items():
            self.report.warn(f"{n} crm.{table} row(s) malformed and not sent: see sync.rejections "
                             f"(error_code invalid_mart_row) and fix the model")
        for (reason, scope), n in sorted(self.skips.items()):
            self.report.warn(f"{n} record(s) of {scope} skipped: {reason} — {SKIP_HINTS[reason]}")


def _same_account(spelt: str, key: str) -> bool:
    """Whether a report's account URL names the account ``key`` (a URL that cannot be parsed names none)."""
    try:
        return account_key(spelt) == key
    except ValueError:
        return False
