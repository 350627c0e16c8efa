"""Per-day run summaries (``RunDaySummary``): what the deltas page and trend charts read instead of every run.

Ingestion calls ``add_runs`` in the transaction that stores the runs: one upsert adds each (rollout, phase, arm,
day)'s count, sums and sums of squares, so a summary is never ahead of or behind the runs it covers. Keys are
upserted in sorted order, so two concurrent ingests lock the same rows in the same order (no deadlock).
``rebuild`` recomputes every summary from the raw runs with one set-based statement (``seed_bench``, repairs).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from .models import METRIC_KEYS, EvaluationRun, RunDaySummary

COLUMNS: tuple[str, ...] = tuple(f"{key}_{part}" for key in METRIC_KEYS for part in ("n", "sum", "sumsq"))
# (metric, its n, sum and sum-of-squares attribute names): named once, not per row and metric.
PARTS: tuple[tuple[str, str, str, str], ...] = tuple((k, f"{k}_n", f"{k}_sum", f"{k}_sumsq") for k in METRIC_KEYS)
FIELDS: tuple[str, ...] = ("phase_id", "arm", "day", "runs", *COLUMNS)


def rows_of(summaries: QuerySet[RunDaySummary]) -> list[Any]:
    """The summaries as named tuples with the model's attribute names (``FIELDS``): the pages read a few hundred
    of them per request, and a model instance of 23 fields per row cost more than the rest of the arithmetic."""
    return list(summaries.values_list(*FIELDS, named=True))


def _day(at: dt.datetime) -> dt.date:
    return at.astimezone(dt.UTC).date()


def add_runs(runs: Iterable[EvaluationRun]) -> int:
    """Add newly stored runs to their summaries (inside the caller's transaction). Returns the rows touched."""
    return add_rows(
        (run.rollout_id, run.phase_id, run.arm, run.finished_at, [getattr(run, key) for key in METRIC_KEYS])
        for run in runs
    )


def add_rows(rows: Iterable[tuple[int, int, str, dt.datetime, Sequence[float | None]]]) -> int:
    """``add_runs`` for runs given as (rollout id, phase id, arm, finished at, values in ``METRIC_KEYS`` order):
    ingestion stores runs with COPY and builds no model instance per run."""
    totals: dict[tuple[int, int, str, dt.date], list] = defaultdict(lambda: [0] + [0.0] * len(COLUMNS))
    for rollout_id, phase_id, arm, finished_at, values in rows:
        row = totals[(rollout_id, phase_id, arm, _day(finished_at))]
        row[0] += 1
        for i, value in enumerate(values):
            if value is not None:
                row[1 + 3 * i] += 1
                row[2 + 3 * i] += value
                row[3 + 3 * i] += value * value
    if not totals:
        return 0
    table = connection.ops.quote_name(RunDaySummary._meta.db_table)
    names = ["rollout_id", "phase_id", "arm", "day", "runs", *COLUMNS]
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in ["runs", *COLUMNS])
    placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
    keys = sorted(totals)
    with connection.cursor() as cursor:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            params = [value for key in chunk for value in (*key, *totals[key])]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([placeholders] * len(chunk))} "  # noqa: S608
                f"ON CONFLICT (rollout_id, phase_id, arm, day) DO UPDATE SET {updates}",
                params,
            )
    return len(keys)


@transaction.atomic
def rebuild() -> int:
    """Recompute every summary from the raw runs (PostgreSQL or SQLite): one scan of the runs table."""
    table = connection.ops.quote_name(RunDaySummary._meta.db_table)
    runs = connection.ops.quote_name(EvaluationRun._meta.db_table)
    day = "(finished_at AT TIME ZONE 'UTC')::date" if connection.vendor == "postgresql" else "date(finished_at)"
    parts = []
    for key in METRIC_KEYS:
        parts += [f"COUNT({key})", f"COALESCE(SUM({key}), 0)", f"COALESCE(SUM({key} * {key}), 0)"]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - names from the models
        cursor.execute(
            f"INSERT INTO {table} (rollout_id, phase_id, arm, day, runs, {', '.join(COLUMNS)}) "  # noqa: S608
            f"SELECT rollout_id, phase_id, arm, {day}, COUNT(*), {', '.join(parts)} "
            f"FROM {runs} GROUP BY rollout_id, phase_id, arm, {day}"
        )
        return cursor.rowcount


@dataclass
class Moments:
    """Running totals of one metric over some summaries: n, sum and sum of squares."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, n: int, total: float, squares: float) -> None:
        self.n += n
        self.total += total
        self.squares += squares

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """The sample variance (n - 1), as ``var_samp`` over the raw values gives it; None below two values."""
        if self.n < 2:
            return None
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


def moments_of(rows: Iterable[Any]) -> dict[tuple[int, str], tuple[int, dict[str, Moments]]]:
    """(phase_id, arm) -> (runs, metric -> Moments), summed over the rows (days): ``RunDaySummary`` instances or
    ``rows_of`` tuples."""
    out: dict[tuple[int, str], tuple[list[int], dict[str, Moments]]] = {}
    for row in rows:
        runs, metrics = out.setdefault((row.phase_id, row.arm), ([0], {k: Moments() for k in METRIC_KEYS}))
        runs[0] += row.runs
        for key, n, total, squares in PARTS:
            metrics[key].add(getattr(row, n), getattr(row, total), getattr(row, squares))
    return {k: (runs[0], metrics) for k, (runs, metrics) in out.items()}


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def mean_of(row: Any, key: str) -> float | None:
    n = getattr(row, f"{key}_n")
    return getattr(row, f"{key}_sum") / n if n else None


def means_of(row: Any) -> dict[str, float | None]:
    """Every metric's mean on one summary row (``mean_of`` for each metric)."""
    means = {}
    for key, n, total, _squares in PARTS:
        count = getattr(row, n)
        means[key] = getattr(row, total) / count if count else None
    return means
