"""Number formatting for evaluation pages: each metric in its unit."""

from __future__ import annotations

import functools

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import get_current_timezone

from rollout.tables import shown_number
from rollout.templatetags.rollout_tags import badge

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


@functools.lru_cache(maxsize=4096)
def _row_start(at, arm: str, phase: str, zone) -> str:
    """A data table row's time, arm and phase cells: the same for each metric's chart of a point."""
    return f"<tr><td>{at.astimezone(zone):%Y-%m-%d %H:%M}</td><td>{escape(arm)}</td><td>{escape(phase)}</td>"


@register.filter
def chart_rows(chart, bucketed) -> str:
    rows = []
    zone = get_current_timezone()  # once, not a localtime() per row
    unit = chart.unit
    for at, arm, phase, value, n in chart.table:
        cells = _row_start(at, arm, phase, zone) + f'<td class="text-end">{metric_value(value, unit)}</td>'
        if bucketed:
            cells += f'<td class="text-end">{int(n)}</td>'
        rows.append(cells + "</tr>")
    return mark_safe("".join(rows))  # noqa: S308 - dates, numbers and escaped text


# The deltas page's metric rows and its charts are drawn in one pass too: as template loops they made a
# thousand variable lookups (each number localised) a page. The markup is that of the loops they replace,
# kept as a reference template in tests/evaluations (test_pages.py compares).


def _add(value, k: int) -> int:
    """``|add:k`` on a number: Django's add filter sums the values as integers."""
    return int(value) + k


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


@register.filter
def delta_rows(phase_deltas) -> SafeString:
    """The ``<tr>`` of each metric of a phase's deltas table."""
    rows = []
    for m in phase_deltas.metrics:
        spec, b, c, cmp = m.spec, m.baseline, m.candidate, m.comparison
        unit = spec.unit
        if cmp.ci_low is not None:
            ci = f"[{escape(signed(cmp.ci_low, unit))}, {escape(signed(cmp.ci_high, unit))}]"
        else:
            ci = "—"
        if m.criterion:
            meets = m.meets_criterion
            if meets is True:
                met = '<span class="badge text-bg-success" data-meets="yes">met</span>'
            elif meets is False:
                met = '<span class="badge text-bg-danger" data-meets="no">not met</span>'
            else:
                met = '<span class="badge text-bg-light">no data</span>'
            criterion = (
                f"{escape(m.criterion.get_comparator_display())} "
                f"{escape(metric_value(m.criterion.threshold, unit))} {met}"
            )
        else:
            criterion = '<span class="text-muted">none</span>'
        rows.append(
            f'<tr data-metric="{escape(spec.key)}"><th scope="row">{escape(spec.label)} '
            f'<span class="text-muted fw-normal small">({escape(unit)}, '
            f"{'↑' if spec.direction == 'higher' else '↓'} better)</span></th>"
            f'<td class="text-end border-start">{escape(shown_number(b.n))}</td>'
            f'<td class="text-end">{escape(metric_value(b.mean, unit))}</td>'
            f'<td class="text-end">{escape(metric_value(b.sd, unit))}</td>'
            f'<td class="text-end border-start">{escape(shown_number(c.n))}</td>'
            f'<td class="text-end">{escape(metric_value(c.mean, unit))}</td>'
            f'<td class="text-end">{escape(metric_value(c.sd, unit))}</td>'
            f'<td class="text-end border-start">{escape(signed(cmp.delta, unit))}</td>'
            f'<td class="text-end">{escape(percent(cmp.relative))}</td>'
            f'<td class="text-center text-nowrap">{ci}</td>'
            f"<td>{badge(cmp.verdict)}</td>"
            f'<td class="text-nowrap">{criterion}</td></tr>'
        )
    return mark_safe("\n".join(rows))  # noqa: S308 - every value escaped


@register.filter
def chart_figure(chart, bucketed) -> SafeString:
    """A trend chart's ``<figure>``: the SVG (title, description, legend, axes and ticks, phase boundaries,
    the success criterion's threshold, the series) and its data table."""
    n = shown_number
    key, title = escape(chart.key), escape(chart.title)
    out = [f'<figure class="trend-chart border rounded p-2 mb-0" id="chart-{key}">']
    if chart.empty:
        out.append(
            f'<figcaption class="fw-semibold small">{title}</figcaption>'
            '<p class="text-muted small mb-0">No runs have reported this metric yet.</p></figure>'
        )
        return mark_safe("".join(out))  # noqa: S308 - escaped
    left, right, top, bottom = n(chart.plot_left), n(chart.plot_right), n(chart.plot_top), n(chart.plot_bottom)
    out.append(
        f'<svg viewBox="0 0 {n(chart.width)} {n(chart.height)}" width="100%" role="img" '
        f'aria-labelledby="chart-{key}-title chart-{key}-desc" xmlns="http://www.w3.org/2000/svg" '
        'font-family="system-ui, sans-serif" font-size="11">'
        f'<title id="chart-{key}-title">{title}</title><desc id="chart-{key}-desc">{escape(chart.summary)}</desc>'
        f'<text x="{left}" y="14" font-size="13" font-weight="600" fill="#212529">{title}</text>'
        f'<g class="legend" transform="translate({right},10)" text-anchor="end">'
    )
    for i, s in enumerate(chart.series):
        out.append(f'<text x="{"-110" if i == 0 else "0"}" y="4" fill="{escape(s.colour)}">● {escape(s.arm)}</text>')
    out.append("</g>")
    tick_x = n(_add(chart.plot_left, -6))
    for y, label in chart.y_ticks:
        y = n(y)
        out.append(
            f'<line x1="{left}" x2="{right}" y1="{y}" y2="{y}" stroke="#e9ecef"/>'
            f'<text x="{tick_x}" y="{y}" dy="3.5" text-anchor="end" fill="#495057">{escape(label)}</text>'
        )
    last = len(chart.x_ticks) - 1
    tick_end, tick_label_y = n(_add(chart.plot_bottom, 4)), n(_add(chart.plot_bottom, 16))
    for i, (x, label) in enumerate(chart.x_ticks):
        x = n(x)
        anchor = "start" if i == 0 else "end" if i == last else "middle"
        out.append(
            f'<line x1="{x}" x2="{x}" y1="{bottom}" y2="{tick_end}" stroke="#495057"/>'
            f'<text x="{x}" y="{tick_label_y}" text-anchor="{anchor}" fill="#495057">{escape(label)}</text>'
        )
    out.append(
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#495057"/>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="#495057"/>'
        f'<text x="{left}" y="{n(_add(chart.height, -4))}" fill="#212529">Run finished (UTC) →</text>'
        f'<text transform="translate(12,{bottom}) rotate(-90)" fill="#212529">{escape(chart.y_label)}</text>'
    )
    boundary_y = n(_add(chart.plot_top, 9))
    for x, label in chart.boundaries:
        x = n(x)
        out.append(
            f'<line class="phase-boundary" x1="{x}" x2="{x}" y1="{top}" y2="{bottom}" stroke="#0d6efd" '
            f'stroke-dasharray="4 3"/><text x="{x}" dx="3" y="{boundary_y}" fill="#0d6efd">{escape(label)}</text>'
        )
    if chart.threshold:
        y = n(chart.threshold[0])
        out.append(
            f'<line class="threshold" x1="{left}" x2="{right}" y1="{y}" y2="{y}" stroke="#dc3545" '
            f'stroke-dasharray="6 3"/><text x="{n(_add(chart.plot_left, 4))}" y="{y}" dy="-3" fill="#dc3545">'
            f"{escape(chart.threshold[1])}</text>"
        )
    for s in chart.series:
        out.append(
            f'<path class="series" data-arm="{escape(s.arm)}" d="{escape(s.path)}" fill="none" '
            f'stroke="{escape(s.colour)}" stroke-width="1.5" stroke-opacity=".7"/>{series_dots(s)}'
        )
    out.append("</svg>")
    truncated = (
        f'<p class="text-muted mb-1">The latest {n(len(chart.table))} shown; {n(chart.table_truncated)} older ones '
        "are in the runs list.</p>"
        if chart.table_truncated
        else ""
    )
    y_label = escape(chart.y_label)
    runs_header = '<th scope="col" class="text-end">Runs</th>'
    out.append(
        f'<details class="small mt-1"><summary>Data table ({n(chart.points)} point{_plural(chart.points)})</summary>'
        f'{truncated}<table class="table table-sm mb-0"><caption class="visually-hidden">{title}</caption>'
        '<thead><tr><th scope="col">Finished (UTC)</th><th scope="col">Arm</th><th scope="col">Phase</th>'
        f'<th scope="col" class="text-end">{y_label}</th>'
        f"{runs_header if bucketed else ''}</tr></thead>"
        f"<tbody>{chart_rows(chart, bucketed)}</tbody></table></details></figure>"
    )
    return mark_safe("".join(out))  # noqa: S308 - numbers and escaped text
