"""Number formatting for evaluation pages: each metric in its unit."""

from __future__ import annotations

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.timezone import get_current_timezone

register = template.Library()


@register.filter
def metric_value(value, unit: str = "") -> str:
    if value is None or value == "":
        return "—"
    value = float(value)
    if unit == "ms":
        return f"{value:,.1f}"
    if unit == "USD":
        return f"{value:.4f}"
    return f"{value:.4f}"


@register.filter
def signed(value, unit: str = "") -> str:
    if value is None:
        return "—"
    text = metric_value(abs(value), unit)
    return ("+" if value > 0 else "\u2212" if value < 0 else "±") + text


@register.filter
def percent(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.{int(digits)}f}%"


# The trend charts draw hundreds of dots and table rows per chart; built here in one pass rather than through
# template loops, which cost a template variable lookup per cell (most of the deltas page's time at a year of data).


@register.filter
def series_dots(series) -> str:
    colour = escape(series.colour)
    # Coordinates are numbers: nothing to escape.
    return mark_safe(  # noqa: S308 - only numbers and the escaped colour
        "".join(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>' for x, y in series.dots)
    )


@register.filter
def chart_rows(chart, bucketed) -> str:
    rows = []
    zone = get_current_timezone()  # once, not a localtime() per row
    escaped: dict[str, str] = {}  # arms and phase labels: a handful of distinct values, escaped once each
    unit = chart.unit
    for at, arm, phase, value, n in chart.table:
        arm_html = escaped.get(arm) or escaped.setdefault(arm, escape(arm))
        phase_html = escaped.get(phase) or escaped.setdefault(phase, escape(phase))
        cells = (
            f"<tr><td>{at.astimezone(zone):%Y-%m-%d %H:%M}</td><td>{arm_html}</td><td>{phase_html}</td>"
            f'<td class="text-end">{metric_value(value, unit)}</td>'
        )
        if bucketed:
            cells += f'<td class="text-end">{int(n)}</td>'
        rows.append(cells + "</tr>")
    return mark_safe("".join(rows))  # noqa: S308 - dates, numbers and escaped text
