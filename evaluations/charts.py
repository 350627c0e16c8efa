"""Trend charts as server-rendered SVG: no JavaScript, no CDN, readable as an image.

Each chart shows one metric's runs over time (baseline and candidate), the
phase boundaries and the success criterion's threshold; the template adds a
title, a description, axis labels and a table fallback.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from .models import METRICS, Arm, SuccessCriterion
from .selectors import TrendData

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 44
COLOURS = {Arm.BASELINE: "#6c757d", Arm.CANDIDATE: "#d63384"}
MAX_DOTS = 400  # above this, lines only: dots would hide each other anyway
TABLE_ROWS = 200


@dataclass
class Series:
    arm: str
    label: str
    colour: str
    path: str
    dots: list[tuple[float, float]]


@dataclass
class Chart:
    key: str
    title: str
    unit: str
    direction: str
    y_label: str
    series: list[Series]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    boundaries: list[tuple[float, str]]
    threshold: tuple[float, str] | None
    table: list[tuple[dt.datetime, str, str, float, int]]
    table_truncated: int
    empty: bool
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    plot_top: int = TOP
    plot_bottom: int = HEIGHT - BOTTOM
    summary: str = ""
    points: int = 0
    extra: dict = field(default_factory=dict)


def _nice_step(span: float, target: int = 4) -> float:
    raw = span / target if span > 0 else 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _decimals(step: float) -> int:
    """Enough decimals that every tick of ``step`` prints differently (0.025 -> 3)."""
    for digits in range(6):
        if abs(step * 10**digits - round(step * 10**digits)) < 1e-9:
            return digits
    return 6


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def build_charts(trend: TrendData, criteria: dict[str, SuccessCriterion]) -> list[Chart]:
    times = [p.at for p in trend.points]
    t0, t1 = (min(times), max(times)) if times else (None, None)
    if t0 is not None and t0 == t1:
        t0, t1 = t0 - dt.timedelta(hours=1), t1 + dt.timedelta(hours=1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    xs: dict[dt.datetime, float] = {}  # every metric's chart places the same points: each x computed once

    def x_of(at: dt.datetime) -> float:
        x = xs.get(at)
        if x is None:
            x = xs[at] = round(LEFT + plot_w * (at - t0).total_seconds() / (t1 - t0).total_seconds(), 1)
        return x

    x_ticks: list[tuple[float, str]] = []
    boundaries: list[tuple[float, str]] = []
    if t0 is not None:
        span = t1 - t0
        fmt = "%m-%d %H:%M" if span <= dt.timedelta(days=3) else "%Y-%m-%d"
        for i in range(5):
            at = t0 + span * i / 4
            x_ticks.append((x_of(at), at.strftime(fmt)))
        boundaries = [(x_of(max(t0, at)), label) for label, at in trend.phase_starts if at <= t1]

    charts = []
    for key, spec in METRICS.items():
        rows = [(p.at, p.arm, p.phase_kind, p.values[key], p.runs) for p in trend.points if p.values[key] is not None]
        criterion = criteria.get(key)
        values = [r[3] for r in rows] + ([criterion.threshold] if criterion and rows else [])
        chart = Chart(
            key=key,
            title=f"{spec.label} over time",
            unit=spec.unit,
            direction=spec.direction,
            y_label=f"{spec.label} ({spec.unit})",
            series=[],
            y_ticks=[],
            x_ticks=x_ticks,
            boundaries=boundaries,
            threshold=None,
            table=rows[-TABLE_ROWS:],
            table_truncated=max(0, len(rows) - TABLE_ROWS),
            empty=not rows,
            points=len(rows),
        )
        if rows:
            lo, hi = min(values), max(values)
            step = _nice_step(hi - lo if hi > lo else abs(hi) or 1.0)
            y0, y1 = math.floor(lo / step) * step, math.ceil(hi / step) * step
            if y1 == y0:
                y0, y1 = y0 - step, y1 + step

            def y_of(value: float, y0=y0, y1=y1) -> float:
                return round(TOP + plot_h * (1 - (value - y0) / (y1 - y0)), 1)

            tick = y0
            while tick <= y1 + step / 2:
                chart.y_ticks.append((y_of(tick), _fmt(tick, _decimals(step))))
                tick += step
            for arm, label in Arm.choices:
                pts = [(x_of(r[0]), y_of(r[3])) for r in rows if r[1] == arm]
                if not pts:
                    continue
                path = "M" + " L".join(f"{x},{y}" for x, y in pts)
                dots = pts if len(pts) <= MAX_DOTS else []
                chart.series.append(Series(arm=arm, label=label, colour=COLOURS[arm], path=path, dots=dots))
            if criterion:
                chart.threshold = (
                    y_of(criterion.threshold),
                    f"success criterion {criterion.get_comparator_display()} {criterion.threshold:g}",
                )
            per_arm = {arm: sum(1 for r in rows if r[1] == arm) for arm in Arm.values}
            chart.summary = (
                f"{per_arm[Arm.BASELINE]} baseline and {per_arm[Arm.CANDIDATE]} candidate "
                f"{'runs' if trend.bucket is None else trend.bucket + 'ly means'} from {t0:%Y-%m-%d %H:%M} "
                f"to {t1:%Y-%m-%d %H:%M} UTC; {spec.direction.replace('_', ' ')} is better"
                + (f"; the success criterion is {criterion}." if criterion else ".")
            )
        charts.append(chart)
    return charts
