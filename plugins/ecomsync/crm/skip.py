"""Skip a crm mart's diff when it provably cannot stream a row to write (P4, S4; issue 16: a no-change cycle).

The diff (``crm/diff.py``) decides "unchanged" per row by hashing every mart row and probing ``sync.ledger``:
O(marts) even when nothing changed. A mart is skipped instead — its diff query not run at all — when its
**fingerprint** equals the one recorded by its last complete, settled load (``sync.mart_loads``):

- ``mart``: ``crm.<mart>`` (and ``crm.excluded_records`` for the orders' removals) as relation oid, file node,
  columns, row count and the sum of a 64-bit hash of each row version's ``(tableoid, ctid, xmin)``
  (``Reader.mart_fingerprint``), taken in the snapshot the diff would read (contacts: one just before it): any
  insert, update or delete moves it, and so do dbt replacing the table and a column added or dropped;
- ``sync``: the ``sync.ledger`` and ``sync.rejections`` rows of the mart's object types and of the parents its
  objects wait for (``Mart.ledger_types``), the same way (``Reader.sync_fingerprint``): a push, the privacy
  erase, a hand fix, a new or cleared rejection moves it;
- ``options``: everything else ``diff.unchanged_sql`` and the planner read: ``payloads.PAYLOAD_VERSION``, the
  master list's name and whether the CRM has it (contacts), the enabled connections (marts with a connection),
  the CRM settings but the pacing ones (``PACING_SETTINGS``), the account and ``FINGERPRINT_VERSION``.

A full resync and a run with ``retry_rejected`` never skip (they send what a settled mart holds back). A mart
is recorded only after its phase completed (every streamed row written, or decided by what the fingerprint
covers: unchanged, rejected, skipped for a rejection, a disabled connection, a missing master list or a parent
without a CRM id) and with nothing owed to the next run (``Executor.owed``: a contact the CRM lookup did not
find, tags and subscriptions of a contact the CRM lost); its fingerprint is the ``mart`` part of the read's
snapshot with the ``sync`` part taken after its writes — never before the data it covers is written. A mart
that is read has its record forgotten first, so a load that fails half way leaves it to be read again. A dry
run skips but never records nor forgets. A change made by hand to ``sync.ledger`` or ``sync.rejections`` *during*
a mart's phase is taken for the load's own (the privacy erase holds every account's load lock: it cannot).

What a skipped mart reports: in ``RunReport.marts`` why (``unchanged since load <run>``) and, in its counts
(and a dry run's plan), what a re-read would count, carried from the recorded load (``settled_counts``):
written and unchanged objects as unchanged, objects the CRM refused (and skips) as skipped, malformed rows as
rejected again. Warnings about a skipped mart's skips (``push.SKIP_HINTS``) are carried too; the executor's
"waiting for a parent" warnings are not (they name records: ``sync.mart_loads`` holds no keys).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ecomsync.config import CrmSettings
from ecomsync.crm import diff
from ecomsync.crm import payloads as p
from ecomsync.crm.ledger import SyncStore

FINGERPRINT_VERSION = "1"  # bump when what a skip depends on changes
REJECTED_BEFORE = "rejected before, payload unchanged"
MASTER_LIST_SETTINGS = frozenset({"master_list_name", "master_list_cutoff", "account_created_on"})
PACING_SETTINGS = frozenset({"conn_id", "requests_per_second"})  # the Airflow connection and the rate


@dataclass
class MartState:
    """One mart's skip decision, and what its record will say."""

    mart: diff.Mart
    skip: bool
    reason: str
    fingerprint: dict[str, str] | None = None  # None: cannot be recorded (not a table)
    rows: int | None = None
    since: dict[str, Any] | None = None  # the recorded load (``sync.mart_loads`` row) a skip relies on

    def as_report(self) -> dict[str, Any]:
        return {"action": "skipped" if self.skip else "read", "reason": self.reason, "rows": self.rows,
                "since_run": self.since["run_id"] if self.skip and self.since else None}


def options_fingerprint(mart: diff.Mart, options: diff.DiffOptions, settings: CrmSettings, account: str) -> str:
    """sha256 of the non-table inputs of the mart's diff and plan (see the module docstring)."""
    # The master list settings are in ``options.master_list`` (contacts); the pacing settings decide when a write
    # is sent, never which (a load seeded at an open rate is as settled as one at 5/s); the rest goes in whole.
    shared = {key: value for key, value in vars(settings).items()
              if key not in MASTER_LIST_SETTINGS | PACING_SETTINGS}
    parts: dict[str, Any] = {"fingerprint_version": FINGERPRINT_VERSION, "payload_version": p.PAYLOAD_VERSION,
                             "account": account, "settings": repr(sorted(shared.items()))}
    if mart.table == "contacts":
        parts |= {"master_list": options.master_list, "master_list_found": options.master_list_found}
    if mart.has_connection:
        parts["enabled"] = sorted(options.enabled_connections)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def settled_counts(mart: diff.Mart, counts: dict[str, dict[str, int]], malformed: int
                   ) -> dict[str, dict[str, int]]:
    """What re-reading the mart right after its load would count, from that load's ``counts`` (its own object
    types): created, updated and unchanged objects are then unchanged; refused ones are skipped as rejected
    before; ``malformed`` rows (``invalid_mart_row``, counted on the mart's object type) are rejected again."""
    settled: dict[str, dict[str, int]] = {}
    for object_type in mart.own_types:
        c = counts.get(object_type)
        if not c:
            continue
        again = malformed if object_type == mart.object_type else 0
        settled[object_type] = {"unchanged": c["created"] + c["updated"] + c["unchanged"],
                                "skipped": c["skipped"] + c["rejected"] - again, "rejected": again}
    return settled


def carried(mart: diff.Mart, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What a load that skips ``mart`` reports, from the run's tallies (``push.Load.tallies``: ``counts`` of the
    mart's object types, ``skips`` {(reason, scope): n}, ``malformed`` rows) before and after its phase:
    ``settled_counts`` of the phase's counts, and its skips with each refused object as a skip "rejected before"."""
    counts = {t: {o: n - before["counts"].get(t, {}).get(o, 0) for o, n in c.items()}
              for t, c in after["counts"].items() if c}
    settled = settled_counts(mart, counts, after["malformed"] - before["malformed"])
    skips = {key: n - before["skips"].get(key, 0) for key, n in after["skips"].items()}
    for object_type, c in settled.items():
        refused = counts[object_type]["rejected"] - c["rejected"]
        if refused:
            skips[(REJECTED_BEFORE, object_type)] = skips.get((REJECTED_BEFORE, object_type), 0) + refused
    return {"counts": settled, "skips": [[reason, scope, n] for (reason, scope), n in sorted(skips.items()) if n]}


class MartSkip:
    """The skip decisions and records of one load (``push.Load``)."""

    def __init__(self, store: SyncStore, reader: diff.Reader, options: diff.DiffOptions, settings: CrmSettings,
                 account: str, run_id: str, *, mode: str, retry_rejected: bool):
        self.store, self.reader, self.options, self.settings, self.account = store, reader, options, settings, account
        self.run_id = run_id
        self.never = ("a full resync reads every row" if mode == "full_resync"
                      else "retry_rejected sends rejected records again" if retry_rejected else None)
        self.records = mode != "dry_run"

    def check(self, mart: diff.Mart) -> MartState:
        """Whether ``mart`` is skipped. Opens the reader's snapshot for the mart: a read mart's diff must run in
        it (``Reader.unchanged_counts``, ``changed``); a skipped mart's is ended here. A read mart's record is
        forgotten (not by a dry run) before anything of it is written."""
        found = self.reader.mart_fingerprint(mart)
        state = MartState(mart, False, f"crm.{mart.table} is not a table: always read")
        if found is not None:
            fingerprint = {"mart": found[0], "sync": self.reader.sync_fingerprint(mart.ledger_types),
                           "options": options_fingerprint(mart, self.options, self.settings, self.account)}
            state = MartState(mart, False, "", fingerprint, found[1], self.store.mart_load(mart.table))
            state.skip, state.reason = self.decide(state)
        if state.skip:
            self.reader.end()
        elif self.records:
            self.store.forget_mart_load(mart.table)
        return state

    def decide(self, state: MartState) -> tuple[bool, str]:
        last = state.since
        if self.never:
            return False, self.never
        if last is None:
            return False, "no complete load of it with nothing owed is recorded"
        since = f"since load {last['run_id']}"
        if last["fingerprint"] == state.fingerprint:
            return True, f"unchanged {since}"
        assert state.fingerprint is not None
        changed = [what for key, what in (("mart", f"crm.{state.mart.table}"),
                                          ("sync", "its sync.ledger/sync.rejections rows"),
                                          ("options", "the load's settings"))
                   if last["fingerprint"].get(key) != state.fingerprint[key]]
        return False, f"{' and '.join(changed) or 'its fingerprint'} changed {since}"

    def record(self, state: MartState, carried: dict[str, Any], owed: set[str]) -> bool:
        """After the mart's phase: record it unless it owes the next run something (or this is a dry run, or it
        could not be fingerprinted). The ``sync`` part is taken now, after the phase's writes."""
        if not self.records or state.fingerprint is None or owed & set(state.mart.own_types):
            return False
        try:
            sync_after = self.reader.sync_fingerprint(state.mart.ledger_types)
        finally:
            self.reader.end()
        self.store.record_mart_load(state.mart.table, {**state.fingerprint, "sync": sync_after},
                                    self.run_id, state.rows or 0, carried)
        return True
