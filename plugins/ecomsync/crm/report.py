"""What one CRM load reports: counts per object type and outcome, the automation audit, the dry run's plan,
progress lines while it runs (``sync.run_reports``; docs/architecture.md, ``sync``)."""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ecomsync.crm import automations as a
from ecomsync.crm.activecampaign import ActiveCampaignClient
from ecomsync.crm.plan import Item

log = logging.getLogger(__name__)

OUTCOMES = ("created", "updated", "unchanged", "rejected", "skipped", "removed")
PROGRESS_EVERY_S = 10.0
PLAN_SAMPLES = 3
REJECTIONS_KEPT = 20  # by key in the report (the rest are counted; sync.rejections has them all)
EMAIL_ADDRESS = re.compile(r"([^\s@|]+)@([^\s@|]+)")
PHONE_FIELDS = frozenset({"phone"})
_count_lock = threading.Lock()


@dataclass
class RunReport:
    run_id: str
    mode: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    requests: int = 0
    warnings: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    rejections: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    automations: dict[str, int] = field(default_factory=dict)  # trigger → writes that could start one
    # The warehouse-side diff (crm/diff.py): mart rows it streamed, in how many batches, the largest batch.
    diff: dict[str, int] = field(default_factory=dict)
    # Per crm mart, whether the load read its diff or skipped it, and why (crm/skip.py): {table: {action,
    # reason, rows, since_run}}.
    marts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count_automation(self, object_type: str, n: int = 1) -> None:
        with _count_lock:
            for trigger, fired in a.audit([object_type]).items():
                self.automations[trigger] = self.automations.get(trigger, 0) + fired * n

    def reject(self, object_type: str, key: str, status: int | None, code: str | None) -> None:
        """Count a rejection; the first ``REJECTIONS_KEPT`` are kept by key for the summary."""
        self.count(object_type, "rejected")
        with _count_lock:
            if len(self.rejections) < REJECTIONS_KEPT:
                self.rejections.append({"object_type": object_type, "key": key, "status": status, "code": code})

    def count(self, object_type: str, outcome: str, n: int = 1) -> None:
        with _count_lock:  # the push threads count concurrently
            per_type = self.counts.setdefault(object_type, dict.fromkeys(OUTCOMES, 0))
            per_type[outcome] += n

    def warn(self, message: str) -> None:
        """Add a warning once (logged once)."""
        with _count_lock:
            if message in self.warnings:
                return
            self.warnings.append(message)
        log.warning("%s", message)

    @property
    def writes(self) -> int:
        return sum(c["created"] + c["updated"] for c in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """Small and JSON-able for XCom: counts, warnings, rejected keys with the CRM's code, the plan's samples.

        XCom and task logs are no place for personal data: the samples' emails and phones are masked
        (``sync.run_reports`` keeps the plan unmasked).
        """
        return {"run_id": self.run_id, "mode": self.mode, "status": self.status,
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "counts": self.counts, "writes": self.writes, "requests": self.requests,
                "automations": dict(self.automations), "diff": dict(self.diff), "marts": dict(self.marts),
                "warnings": list(self.warnings), "rejections": self.rejections[:REJECTIONS_KEPT],
                "plan": masked(self.plan),
                "error": self.error}


def masked(value: Any, field: str | None = None) -> Any:
    """``value`` with every email address reduced to its first letter and domain, and phones to their end."""
    if isinstance(value, dict):
        return {key: masked(inner, key) for key, inner in value.items()}
    if isinstance(value, list):
        return [masked(inner) for inner in value]
    if isinstance(value, str):
        if field in PHONE_FIELDS and value:
            return "***" + value[-2:]
        return EMAIL_ADDRESS.sub(lambda match: f"{match[1][0]}***@{match[2]}", value)
    return value


class PlanSummary:
    """The dry run's plan, built batch by batch and bounded: per object type the counts of each action and at
    most ``PLAN_SAMPLES`` sample payloads of what a real run would send."""

    def __init__(self) -> None:
        self.plan: dict[str, Any] = {}

    def entry(self, object_type: str) -> dict[str, Any]:
        return self.plan.setdefault(object_type, {"create": 0, "update": 0, "unchanged": 0, "skipped": 0,
                                                  "remove": 0, "samples": []})

    def add_count(self, object_type: str, action: str, n: int) -> None:
        if n:
            self.entry(object_type)[action] += n

    def add(self, items: list[Item]) -> None:
        for item in items:
            entry = self.entry(item.object_type)
            entry[item.action] += 1
            if item.action in ("create", "update", "remove") and len(entry["samples"]) < PLAN_SAMPLES:
                sample = {"action": item.action, "key": item.natural_key, "payload": item.payload}
                if item.object_type in ("ecom_order", "abandoned_cart") and item.action != "remove":
                    sample["source"] = a.source_flag(item.fires)
                if item.fires:
                    sample["automation"] = a.TRIGGERS[item.object_type]
                entry["samples"].append(sample)


def plan_summary(items: list[Item]) -> dict[str, Any]:
    """Per object type: what a real run would create and update, with a few sample payloads."""
    summary = PlanSummary()
    summary.add(items)
    return summary.plan


class Progress:
    """Logs one phase's progress — planned / done / rejected, requests, rate — at most every
    ``PROGRESS_EVERY_S`` seconds, and once at its end (issue 19)."""

    def __init__(self, phase: str, planned: int, client: ActiveCampaignClient, report: RunReport,
                 object_types: set[str]):
        self.phase, self.planned, self.client, self.report = phase, planned, client, report
        self.object_types = object_types
        self.started = self.last = time.monotonic()
        self.requests_before = client.requests_made

    def log(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        rejected = sum(self.report.counts.get(t, {}).get("rejected", 0) for t in self.object_types)
        requests = self.client.requests_made - self.requests_before
        log.info("CRM %s %s: %d/%d done, %d rejected (whole run), %d requests, %.1f requests/s",
                 self.phase, "finished" if final else "in progress", done, self.planned, rejected, requests,
                 requests / max(now - self.started, 1e-6))
