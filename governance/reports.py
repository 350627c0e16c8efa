"""Daily delta reports: the playbook's "daily regression harness delta report" (section 2, limited beta).

For each rollout in progress, the job stores the deltas of its current phase
(``evaluations.selectors.deltas``: both arms' n/mean/sd, the delta, Welch's 95%
interval, the verdict and the success criterion) over the runs that finished
before the end of the report's UTC day. One report per rollout and day (a
unique constraint); a second run the same day leaves the first report as it is.
The list page sets each day beside the day before.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluations.selectors import MetricDelta, deltas
from rollout.models import Phase, PhaseStatus, Rollout, RolloutStatus

from .jobs import Outcome
from .models import DailyDeltaReport, JobRun


def _number(value: float | None) -> float | None:
    # JSON has no infinity (a Welch df of two constant arms is infinite).
    return None if value is None or not math.isfinite(value) else value


def metric_row(item: MetricDelta) -> dict[str, Any]:
    c = item.comparison
    return {
        "metric": item.spec.key,
        "label": item.spec.label,
        "unit": item.spec.unit,
        "direction": item.spec.direction,
        "baseline": {"n": item.baseline.n, "mean": item.baseline.mean, "sd": item.baseline.sd},
        "candidate": {"n": item.candidate.n, "mean": item.candidate.mean, "sd": item.candidate.sd},
        "delta": _number(c.delta),
        "relative": _number(c.relative),
        "ci_low": _number(c.ci_low),
        "ci_high": _number(c.ci_high),
        "verdict": c.verdict,
        "criterion": str(item.criterion) if item.criterion else None,
        "meets_criterion": item.meets_criterion,
    }


def report_day_bounds(report_date: dt.date) -> dt.datetime:
    """The end of ``report_date`` (UTC): runs that finished before it are in the report."""
    return dt.datetime.combine(report_date + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)


def generate_daily_delta_reports(*, report_date: dt.date) -> tuple[list[DailyDeltaReport], int]:
    """Store the report of ``report_date`` for each rollout in progress that has none; returns (created, skipped)."""
    through = report_day_bounds(report_date)
    active = {
        p.rollout_id: p
        for p in Phase.objects.filter(status=PhaseStatus.ACTIVE, rollout__status=RolloutStatus.IN_PROGRESS)
    }
    done = set(
        DailyDeltaReport.objects.filter(report_date=report_date, rollout_id__in=list(active)).values_list(
            "rollout_id", flat=True
        )
    )
    created, skipped = [], len(done)
    for rollout in Rollout.objects.filter(pk__in=[r for r in active if r not in done]).order_by("pk"):
        phase = active[rollout.pk]
        report = deltas(rollout, finished_before=through)
        current = next(p for p in report.phases if p.phase.pk == phase.pk)
        row = DailyDeltaReport(
            rollout=rollout,
            phase=phase,
            report_date=report_date,
            through=through,
            generated_at=timezone.now(),
            baseline_runs=current.baseline_runs,
            candidate_runs=current.candidate_runs,
            metrics=[metric_row(m) for m in current.metrics],
        )
        try:
            with transaction.atomic():
                row.save()
        except IntegrityError:  # made by a concurrent run
            skipped += 1
            continue
        created.append(row)
    return created, skipped


def default_report_date(scheduled_for: dt.datetime) -> dt.date:
    """The last complete UTC day before the run's slot."""
    return scheduled_for.astimezone(dt.UTC).date() - dt.timedelta(days=1)


def run_daily(run: JobRun) -> Outcome:
    report_date = default_report_date(run.scheduled_for)
    created, skipped = generate_daily_delta_reports(report_date=report_date)
    slugs = [r.rollout.slug for r in created]
    return Outcome(
        summary=f"Reports of {report_date:%Y-%m-%d}: {len(created)} stored"
        + (f" ({', '.join(slugs)})" if slugs else "")
        + (f", {skipped} already there" if skipped else "")
        + ".",
        result={"report_date": report_date.isoformat(), "created": slugs, "skipped": skipped},
    )


# --- Day over day -----------------------------------------------------------------------------------------------------


def day_over_day(report: DailyDeltaReport, previous: DailyDeltaReport | None) -> list[dict[str, Any]]:
    """Each metric of ``report`` with the change of its delta and verdict since ``previous`` (same phase only)."""
    comparable = previous is not None and previous.phase_id == report.phase_id
    before = {m["metric"]: m for m in previous.metrics} if comparable else {}
    rows = []
    for metric in report.metrics:
        old = before.get(metric["metric"])
        change = None
        if old and metric["delta"] is not None and old["delta"] is not None:
            change = metric["delta"] - old["delta"]
        rows.append(
            {
                **metric,
                "previous_delta": old["delta"] if old else None,
                "delta_change": change,
                "previous_verdict": old["verdict"] if old else None,
                "verdict_changed": bool(old) and old["verdict"] != metric["verdict"],
            }
        )
    return rows
