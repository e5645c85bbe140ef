"""The status page's HTML: ``render(report)`` for a ``StatusReport``, ``render_problem(message)`` otherwise.

Jinja2 with autoescaping (every warehouse value is escaped); styles inline; the only graphics are the inline
SVG charts of ``chart``. The page is plain HTML so it works inside the Airflow UI's iframe and offline.
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from ecomsync.status.chart import bar_chart
from ecomsync.status.report import StatusReport

_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_env.filters["when"] = _when


def render(report: StatusReport, docs_href: str | None = None) -> str:
    overall = Markup(bar_chart(report.days, {"records landed": report.landed_per_day,
                                             "CRM writes": report.crm_writes_per_day},
                               label="records landed and CRM writes per day, last 30 days"))
    charts = {c.connection_id: Markup(bar_chart(report.days, {"records landed": c.landed_per_day,
                                                              "CRM objects written": c.crm_writes_per_day},
                                                width=560, height=140, label=f"{c.name}: last 30 days"))
              for c in report.connections}
    return _env.get_template("status.html").render(report=report, overall=overall, charts=charts,
                                                   docs_href=docs_href)


def render_problem(message: str) -> str:
    return _env.get_template("problem.html").render(message=message)
