"""The 30-day chart of the status page as inline SVG (no script, no CDN: the page works offline).

``bar_chart(days, {"records landed": {day: n}, "CRM writes": {day: n}})`` draws one group of bars per day,
one colour per series, with a ``<title>`` per bar (the exact count on hover), the maximum on the y axis and
the first, middle and last date on the x axis.
"""
from __future__ import annotations

from datetime import date
from html import escape

COLOURS = ("#017cee", "#e07b00", "#2e7d32", "#8e24aa")


def bar_chart(days: list[date], series: dict[str, dict[date, int]], width: int = 720, height: int = 180,
              label: str = "") -> str:
    left, bottom, top, right = 48, 28, 22, 8
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([count for values in series.values() for count in values.values()] + [0])
    scale = plot_h / peak if peak else 0
    slot = plot_w / max(len(days), 1)
    bar = max(slot / (len(series) + 1), 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{peak}</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="10">0</text>']
    for index, day in enumerate(days):
        for number, (name, values) in enumerate(series.items()):
            count = values.get(day, 0)
            if not count:
                continue
            h = max(count * scale, 1.0)
            x = left + index * slot + (number + 0.5) * bar
            parts.append(f'<rect class="bar" data-series="{escape(name)}" data-day="{day.isoformat()}" '
                         f'data-count="{count}" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{COLOURS[number % len(COLOURS)]}">'
                         f'<title>{day.isoformat()} {escape(name)}: {count}</title></rect>')
    if days:
        for index in sorted({0, len(days) // 2, len(days) - 1}):
            x = left + (index + 0.5) * slot
            anchor = "start" if index == 0 else "end" if index == len(days) - 1 else "middle"
            parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="10">'
                         f'{days[index].isoformat()}</text>')
    for number, name in enumerate(series):
        x = left + number * 150
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{COLOURS[number % len(COLOURS)]}"/>'
                     f'<text x="{x + 14}" y="13" font-size="11">{escape(name)} '
                     f'({sum(series[name].get(day, 0) for day in days)})</text>')
    parts.append("</svg>")
    return "".join(parts)
