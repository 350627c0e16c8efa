"""Reads over evaluation data, each with a fixed number of queries whatever the data size.

Gates first (the governance app reads ``ga_gate``), then triggers, deltas, runs
and the per-rollout gate summary the API serves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import (
    Avg,
    BigIntegerField,
    BooleanField,
    Count,
    ExpressionWrapper,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Cast, TruncHour
from django.shortcuts import get_object_or_404

from rollout.models import (
    PHASE_SEQUENCE,
    Incident,
    Phase,
    PhaseKind,
    PhasePeriod,
    PhaseStatus,
    Rollout,
)
from rollout.selectors import open_incidents
from rollout.services import active_phase

from . import summaries
from .aggregates import SampleVariance
from .models import (
    METRIC_KEYS,
    METRICS,
    Arm,
    EvaluationRun,
    MetricSpec,
    MonitoringSample,
    RunDaySummary,
    RunOutput,
    SuccessCriterion,
    TriggerFiring,
    TriggerKind,
)
from .stats import ArmStats, Comparison, welch
from .triggers import current_streak, firing_points, guardrail_breached, latency_breached

# --- GA gate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCheck:
    run: EvaluationRun
    failed: tuple[str, ...]  # metrics that missed their criterion

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class GaGate:
    """The GA gate: the last N limited-beta candidate runs each meet every success criterion."""

    required: int
    streak: int
    checks: tuple[RunCheck, ...]  # the last ``required`` runs, newest first

    @property
    def passed(self) -> bool:
        return self.streak >= self.required

    def __str__(self) -> str:
        return f"{self.streak} of {self.required} consecutive passing runs"


def check_run(run: EvaluationRun, criteria: list[SuccessCriterion]) -> RunCheck:
    return RunCheck(run=run, failed=tuple(c.metric for c in criteria if not c.is_met_by(run.metric(c.metric))))


def ga_gate(rollout: Rollout) -> GaGate:
    """Two queries whatever the number of runs (one when the rollout's success criteria are prefetched). None when
    its phases are prefetched and limited beta was never entered: no run can count then."""
    required = rollout.ga_consecutive_runs
    # Only runs of the current (latest) activity period: a re-entry after a rollback starts the streak afresh, and a
    # late arrival for an ended period never counts.
    candidate = EvaluationRun.objects.filter(rollout=rollout, arm=Arm.CANDIDATE, late=False)
    if "phases" in getattr(rollout, "_prefetched_objects_cache", {}):
        # The rollout page and the API loaded the phases in this request: the limited-beta phase's id and entry are
        # then literal values (the planner sees them), and a phase never entered has no runs to read.
        beta = next((p for p in rollout.phases.all() if p.kind == PhaseKind.LIMITED_BETA), None)
        if beta is None or beta.entered_at is None:
            return GaGate(required=required, streak=0, checks=())
        runs = candidate.filter(phase_id=beta.pk, finished_at__gte=beta.entered_at)
    else:
        # By phase id, not kind through a join: the (rollout, phase, arm, finished_at) index then yields the newest
        # runs first, instead of a walk back through every run of the rollout.
        limited_beta = Phase.objects.filter(rollout=rollout, kind=PhaseKind.LIMITED_BETA)
        runs = candidate.filter(
            phase_id=Subquery(limited_beta.values("pk")[:1]),
            finished_at__gte=Subquery(limited_beta.values("entered_at")[:1]),
        )
    runs = runs.order_by("-finished_at", "-id")[:required]
    criteria = list(rollout.success_criteria.all())  # prefetched on the rollout page, else one query
    checks = tuple(check_run(run, criteria) for run in runs)
    streak = 0
    for check in checks:
        if not check.passed:
            break
        streak += 1
    return GaGate(required=required, streak=streak, checks=checks)


# --- Rollback triggers -------------------------------------------------------------------
# A trigger looks at the active phase since it was (last) entered: a phase
# resumed after a rollback starts with fresh streaks.


def _scaled_threshold(threshold: Decimal) -> int:
    # The threshold has four decimals (a DecimalField), so the comparison can be exact in integers.
    return int(Decimal(threshold).scaleb(4))


def _window_runs(phase: Phase) -> QuerySet[EvaluationRun]:
    """Candidate runs of the phase's current activity period (ingestion keeps every run inside a period)."""
    # rollout_id leads the (rollout, phase, arm, finished_at) index.
    return EvaluationRun.objects.filter(
        rollout_id=phase.rollout_id, phase=phase, arm=Arm.CANDIDATE, finished_at__gte=phase.entered_at, late=False
    )


def _window_samples(phase: Phase) -> QuerySet[MonitoringSample]:
    """Intervals that ended in the phase's current activity period."""
    return MonitoringSample.objects.filter(phase=phase, interval_end__gte=phase.entered_at)


def _clean_runs(runs: QuerySet[EvaluationRun], threshold: Decimal) -> QuerySet[EvaluationRun]:
    """Runs whose compensations / conversations is at or below the threshold."""
    return _with_breach_flag(runs, threshold).filter(breach=False)


def run_evidence(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "finished_at": run.finished_at.isoformat(),
        "conversations": run.conversations,
        "guardrail_compensations": run.guardrail_compensations,
        "compensation_rate": round(run.guardrail_compensations / run.conversations, 6),
    }


def sample_evidence(sample: Any) -> dict[str, Any]:
    return {
        "interval_start": sample.interval_start.isoformat(),
        "interval_end": sample.interval_end.isoformat(),
        "latency_p95_ms": sample.latency_p95_ms,
        "requests": sample.requests,
    }


def _contiguous(previous: MonitoringSample, item: MonitoringSample) -> bool:
    return item.interval_start == previous.interval_end


@dataclass(frozen=True)
class FiringCandidate:
    trigger: str
    evidence: list[dict[str, Any]]
    reason: str
    run_pk: int | None = None
    sample_pk: int | None = None


def _with_breach_flag(runs: QuerySet[EvaluationRun], threshold: Decimal) -> QuerySet[EvaluationRun]:
    """Each run with ``breach``: compensations / conversations strictly above the threshold, exactly, in SQL."""
    return runs.alias(
        lhs=ExpressionWrapper(Cast("guardrail_compensations", BigIntegerField()) * 10000, BigIntegerField()),
        rhs=ExpressionWrapper(
            Cast("conversations", BigIntegerField()) * _scaled_threshold(threshold), BigIntegerField()
        ),
    ).annotate(breach=ExpressionWrapper(Q(lhs__gt=F("rhs")), output_field=BooleanField()))


def pending_firings(rollout: Rollout, phase: Phase) -> list[FiringCandidate]:
    """Streaks of the active phase that reached their threshold and have no firing yet, oldest first.

    Scans the whole window (not just the latest streak), so a streak that was
    closed by a later clean run in the same batch, or while a task was lost,
    still fires. The scan reads two or three small values per row; only the
    runs and intervals of a streak that fires are loaded whole. At most five queries.
    """
    threshold = rollout.guardrail_compensation_threshold
    sla = rollout.latency_sla_ms
    run_flags = list(
        _with_breach_flag(_window_runs(phase), threshold).order_by("finished_at", "id").values_list("pk", "breach")
    )
    sample_flags = list(
        _window_samples(phase)
        .annotate(breach=ExpressionWrapper(Q(latency_p95_ms__gt=sla), output_field=BooleanField()))
        .order_by("interval_start")
        .values_list("pk", "interval_start", "interval_end", "breach")
    )
    run_streaks = list(firing_points(run_flags, breached=lambda r: r[1], required=rollout.guardrail_breach_runs))
    sample_streaks = list(
        firing_points(
            sample_flags,
            breached=lambda s: s[3],
            required=rollout.latency_breach_intervals,
            contiguous=lambda a, b: b[1] == a[2],
        )
    )
    if not run_streaks and not sample_streaks:
        return []
    fired = TriggerFiring.objects.filter(
        Q(run_id__in=[streak[-1][0] for streak in run_streaks])
        | Q(sample_id__in=[streak[-1][0] for streak in sample_streaks])
    ).values_list("run_id", "sample_id")
    fired_runs = {r for r, _ in fired if r}
    fired_samples = {s for _, s in fired if s}
    run_streaks = [s for s in run_streaks if s[-1][0] not in fired_runs]
    sample_streaks = [s for s in sample_streaks if s[-1][0] not in fired_samples]
    runs = EvaluationRun.objects.in_bulk([pk for streak in run_streaks for pk, _ in streak])
    samples = MonitoringSample.objects.in_bulk([item[0] for streak in sample_streaks for item in streak])
    candidates: list[tuple[dt.datetime, FiringCandidate]] = []
    percent = f"{Decimal(threshold) * 100:.2f}%"
    for flags in run_streaks:
        streak = [runs[pk] for pk, _ in flags]
        ids = ", ".join(r.run_id for r in streak)
        candidates.append(
            (
                streak[-1].finished_at,
                FiringCandidate(
                    trigger=TriggerKind.GUARDRAIL,
                    run_pk=streak[-1].pk,
                    evidence=[run_evidence(r) for r in streak],
                    reason=(
                        f"Guardrail compensations above {percent} of conversations in {len(streak)} consecutive "
                        f"candidate runs ({ids})."
                    ),
                ),
            )
        )
    for flags in sample_streaks:
        streak = [samples[item[0]] for item in flags]
        candidates.append(
            (
                streak[-1].interval_end,
                FiringCandidate(
                    trigger=TriggerKind.LATENCY,
                    sample_pk=streak[-1].pk,
                    evidence=[sample_evidence(s) for s in streak],
                    reason=(
                        f"p95 latency above the {sla} ms SLA for {len(streak)} consecutive "
                        f"monitoring intervals ({streak[0].interval_start:%Y-%m-%d %H:%M} to "
                        f"{streak[-1].interval_end:%H:%M} UTC)."
                    ),
                ),
            )
        )
    return [c for _, c in sorted(candidates, key=lambda pair: pair[0])]


@dataclass(frozen=True)
class TriggerStatus:
    trigger: str
    label: str
    threshold: str
    required: int
    streak: int
    evidence: list[dict[str, Any]]
    last_firing: TriggerFiring | None

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.streak / self.required)) if self.required else 0


@dataclass
class TriggerPanel:
    rollout: Rollout
    phase: Phase | None
    triggers: list[TriggerStatus]
    open_incidents: list[Incident]
    ga: GaGate


def trigger_statuses(rollout: Rollout, phase: Phase | None) -> list[TriggerStatus]:
    """Each trigger's live streak in the active phase. Five queries whatever the data size."""
    threshold = rollout.guardrail_compensation_threshold
    last = {
        f.trigger: f
        for f in TriggerFiring.objects.filter(rollout=rollout).select_related("phase", "incident").order_by("fired_at")
    }
    guardrail_streak: list = []
    latency_streak: list = []
    if phase is not None and phase.entered_at is not None:
        window = _window_runs(phase)
        last_clean = _clean_runs(window, threshold).order_by("-finished_at", "-id").values("finished_at", "id").first()
        tail = window
        if last_clean:
            tail = window.filter(
                Q(finished_at__gt=last_clean["finished_at"])
                | Q(finished_at=last_clean["finished_at"], id__gt=last_clean["id"])
            )
        tail_runs = list(tail.order_by("finished_at", "id"))
        guardrail_streak = current_streak(
            tail_runs, breached=lambda r: guardrail_breached(r.guardrail_compensations, r.conversations, threshold)
        )
        samples = _window_samples(phase)
        last_clean_sample = (
            samples.filter(latency_p95_ms__lte=rollout.latency_sla_ms)
            .order_by("-interval_start")
            .values("interval_start")
            .first()
        )
        if last_clean_sample:
            samples = samples.filter(interval_start__gt=last_clean_sample["interval_start"])
        latency_streak = current_streak(
            list(samples.order_by("interval_start")),
            breached=lambda s: latency_breached(s.latency_p95_ms, rollout.latency_sla_ms),
            contiguous=_contiguous,
        )
    return [
        TriggerStatus(
            trigger=TriggerKind.GUARDRAIL,
            label="Guardrail compensations",
            threshold=f"> {Decimal(threshold) * 100:.2f}% of conversations in a candidate run",
            required=rollout.guardrail_breach_runs,
            streak=len(guardrail_streak),
            evidence=[run_evidence(r) for r in guardrail_streak],
            last_firing=last.get(TriggerKind.GUARDRAIL),
        ),
        TriggerStatus(
            trigger=TriggerKind.LATENCY,
            label="SLA latency (p95)",
            threshold=f"> {rollout.latency_sla_ms} ms in a monitoring interval",
            required=rollout.latency_breach_intervals,
            streak=len(latency_streak),
            evidence=[sample_evidence(s) for s in latency_streak],
            last_firing=last.get(TriggerKind.LATENCY),
        ),
    ]


def trigger_panel(rollout: Rollout) -> TriggerPanel:
    """On the rollout page, the active phase and open incidents come from what its selector already loaded."""
    phase = active_phase(rollout)
    return TriggerPanel(
        rollout=rollout,
        phase=phase,
        triggers=trigger_statuses(rollout, phase),
        open_incidents=open_incidents(rollout),
        ga=ga_gate(rollout),
    )


# --- Deltas by phase ----------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDelta:
    spec: MetricSpec
    baseline: ArmStats
    candidate: ArmStats
    comparison: Comparison
    criterion: SuccessCriterion | None

    @property
    def meets_criterion(self) -> bool | None:
        if self.criterion is None or self.candidate.mean is None:
            return None
        return self.criterion.is_met_by(self.candidate.mean)


@dataclass
class PhaseDeltas:
    phase: Phase
    metrics: list[MetricDelta]
    runs: int
    baseline_runs: int = 0
    candidate_runs: int = 0


@dataclass
class DeltaReport:
    rollout: Rollout
    phases: list[PhaseDeltas]
    criteria: dict[str, SuccessCriterion]


def deltas(
    rollout: Rollout, *, finished_before: dt.datetime | None = None, days: list[Any] | None = None
) -> DeltaReport:
    """Per phase and metric: both arms' n, mean, sd and Welch's comparison. Three queries (two given ``days``).

    Up to now, from the per-day summaries (a few hundred rows whatever the number of runs; ``days`` when the
    caller already read them with ``day_summaries``); with
    ``finished_before``, only the runs that finished before it, aggregated over the raw runs (the daily report).
    """
    if finished_before is None:
        by_phase_arm = _summary_aggregates(rollout, days)
    else:
        by_phase_arm = _raw_aggregates(rollout, finished_before)
    criteria = {c.metric: c for c in SuccessCriterion.objects.filter(rollout=rollout)}
    report = []
    for phase in rollout.phases.all():
        base = by_phase_arm.get((phase.pk, Arm.BASELINE), {})
        cand = by_phase_arm.get((phase.pk, Arm.CANDIDATE), {})
        metrics = []
        for key, spec in METRICS.items():
            b = ArmStats.from_aggregate(base.get(f"{key}__n"), base.get(f"{key}__mean"), base.get(f"{key}__var"))
            c = ArmStats.from_aggregate(cand.get(f"{key}__n"), cand.get(f"{key}__mean"), cand.get(f"{key}__var"))
            metrics.append(
                MetricDelta(
                    spec=spec,
                    baseline=b,
                    candidate=c,
                    comparison=welch(b, c, spec.direction),
                    criterion=criteria.get(key),
                )
            )
        report.append(
            PhaseDeltas(
                phase=phase,
                metrics=metrics,
                runs=base.get("runs", 0) + cand.get("runs", 0),
                baseline_runs=base.get("runs", 0),
                candidate_runs=cand.get("runs", 0),
            )
        )
    return DeltaReport(rollout=rollout, phases=report, criteria=criteria)


def _raw_aggregates(rollout: Rollout, finished_before: dt.datetime) -> dict[tuple[int, str], dict[str, Any]]:
    aggregates: dict[str, Any] = {}
    for key in METRIC_KEYS:
        aggregates[f"{key}__n"] = Count(key)
        aggregates[f"{key}__mean"] = Avg(key)
        aggregates[f"{key}__var"] = SampleVariance(key)
    runs = EvaluationRun.objects.filter(rollout=rollout, finished_at__lt=finished_before)
    rows = runs.values("phase_id", "arm").annotate(runs=Count("id"), **aggregates).order_by()
    return {(row["phase_id"], row["arm"]): row for row in rows}


def _summary_aggregates(rollout: Rollout, days: list[Any] | None = None) -> dict[tuple[int, str], dict[str, Any]]:
    """The same figures as ``_raw_aggregates`` over all runs, from the day summaries (read here unless given)."""
    rows = day_summaries(rollout) if days is None else days
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for key, (runs, metrics) in summaries.moments_of(rows).items():
        row: dict[str, Any] = {"runs": runs}
        for name, m in metrics.items():
            row[f"{name}__n"], row[f"{name}__mean"], row[f"{name}__var"] = m.n, m.mean, m.variance
        out[key] = row
    return out


# --- Trend chart data ----------------------------------------------------------------------

MAX_CHART_POINTS = 1500


@dataclass
class TrendPoint:
    at: dt.datetime
    arm: str
    phase_kind: str
    values: dict[str, float | None]
    runs: int = 1


@dataclass
class TrendData:
    points: list[TrendPoint]
    bucket: str | None  # None: one point per run; "hour" or "day": means per bucket
    phase_starts: list[tuple[str, dt.datetime]] = field(default_factory=list)
    first: dt.datetime | None = None  # when the first and the last run finished (None without runs)
    last: dt.datetime | None = None


def day_summaries(rollout: Rollout) -> list[Any]:
    """The rollout's day summaries, oldest day first: one query, a few hundred rows whatever the number of runs
    (named tuples with the model's attributes, ``summaries.rows_of``)."""
    return summaries.rows_of(RunDaySummary.objects.filter(rollout=rollout).order_by("day", "phase_id", "arm"))


def _day_points(days: list[Any], kinds: dict[int, str]) -> list[TrendPoint]:
    return [
        TrendPoint(summaries.day_start(d.day), d.arm, kinds.get(d.phase_id, ""), summaries.means_of(d), runs=d.runs)
        for d in days
    ]


def trend_data(rollout: Rollout, phases: Iterable[Phase], *, days: list[Any] | None = None) -> TrendData:
    """Runs over time per arm; above ``MAX_CHART_POINTS`` runs, means per hour (within four days) or day.

    Three queries whatever the number of runs (two when the caller passes the ``day_summaries``): the day
    summaries; one over the runs, which gives either each run (up to ``MAX_CHART_POINTS`` of them), or their hourly
    means when they lie within a few days, or else (the day buckets come from the summaries) only when the first and
    the last finished, through the ``(rollout, finished_at)`` index; and the phases' activity periods."""
    phases = list(phases)
    kinds = {p.pk: p.kind for p in phases}
    runs = EvaluationRun.objects.filter(rollout=rollout)
    days = day_summaries(rollout) if days is None else sorted(days, key=lambda d: (d.day, d.phase_id, d.arm))
    n = sum(d.runs for d in days)
    points: list[TrendPoint] = []
    bucket = None
    first = last = None
    if n <= MAX_CHART_POINTS:
        for row in runs.order_by("finished_at", "id").values("finished_at", "arm", "phase_id", *METRIC_KEYS):
            kind = kinds.get(row["phase_id"], "")
            points.append(TrendPoint(row["finished_at"], row["arm"], kind, {k: row[k] for k in METRIC_KEYS}))
        if points:
            first, last = points[0].at, points[-1].at
    elif days[-1].day - days[0].day <= dt.timedelta(days=4):
        # Within five UTC days: hourly means over the raw runs (a bounded stretch), with the exact span in the same
        # query; a span above four days after all falls back to the summaries' day buckets.
        rows = list(
            runs.annotate(at=TruncHour("finished_at"))
            .values("at", "arm", "phase_id")
            .annotate(
                n=Count("id"),
                first=Min("finished_at"),
                last=Max("finished_at"),
                **{k: Avg(k) for k in METRIC_KEYS},
            )
            .order_by("at", "phase_id", "arm")
        )
        if rows:
            first, last = min(r["first"] for r in rows), max(r["last"] for r in rows)
        if rows and last - first <= dt.timedelta(days=4):
            bucket = "hour"
            for row in rows:
                kind = kinds.get(row["phase_id"], "")
                values = {k: row[k] for k in METRIC_KEYS}
                points.append(TrendPoint(row["at"], row["arm"], kind, values, runs=row["n"]))
        else:
            bucket = "day"
            points = _day_points(days, kinds)
    else:
        # More than four days apart: day buckets, straight from the summaries.
        bucket = "day"
        points = _day_points(days, kinds)
        span = runs.aggregate(first=Min("finished_at"), last=Max("finished_at"))
        first, last = span["first"], span["last"]
    first_by_phase: dict[str, dt.datetime] = {}
    for point in points:
        first_by_phase.setdefault(point.phase_kind, point.at)
    starts = []
    by_pk = {p.pk: p for p in phases}
    for period in PhasePeriod.objects.filter(phase__rollout=rollout).order_by("entered_at", "id"):
        phase = by_pk.get(period.phase_id)
        if phase is None or phase.kind == PHASE_SEQUENCE[0] or phase.kind not in first_by_phase:
            continue
        # A phase starts where its activity period starts (every run lies inside one).
        label = phase.get_kind_display() + (f" (re-entry {period.ordinal - 1})" if period.ordinal > 1 else "")
        starts.append((label, period.entered_at))
    return TrendData(points=points, bucket=bucket, phase_starts=starts, first=first, last=last)


# --- Runs ---------------------------------------------------------------------------------


def runs_for(
    rollout: Rollout,
    *,
    phase: str | None = None,
    arm: str | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> QuerySet[EvaluationRun]:
    """Runs of a rollout, newest first, filtered; ``until`` is inclusive (the whole day)."""
    runs = EvaluationRun.objects.filter(rollout=rollout).select_related("phase", "cohort")
    if phase:
        # The phase's id, not a join on its kind: the (rollout, finished_at, id) index keeps serving the order.
        runs = runs.filter(phase_id=Subquery(Phase.objects.filter(rollout=rollout, kind=phase).values("pk")[:1]))
    if arm:
        runs = runs.filter(arm=arm)
    if since:
        runs = runs.filter(finished_at__gte=dt.datetime.combine(since, dt.time.min, tzinfo=dt.UTC))
    if until:
        runs = runs.filter(
            finished_at__lt=dt.datetime.combine(until + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
        )
    return runs.order_by("-finished_at", "-id")


def run_detail(run_id: str) -> EvaluationRun:
    return get_object_or_404(EvaluationRun.objects.select_related("rollout", "phase", "cohort"), run_id=run_id)


def run_outputs(run: EvaluationRun) -> QuerySet[RunOutput]:
    return run.outputs.order_by("id")


def rollout_index() -> QuerySet[Rollout]:
    """Rollouts with their run and sample counts, in one query."""
    active = Phase.objects.filter(rollout=OuterRef("pk"), status=PhaseStatus.ACTIVE)
    runs = (
        EvaluationRun.objects.filter(rollout=OuterRef("pk"))
        .order_by()
        .values("rollout")
        .annotate(n=Count("id"))
        .values("n")
    )
    last = EvaluationRun.objects.filter(rollout=OuterRef("pk")).order_by("-finished_at").values("finished_at")[:1]
    firings = (
        TriggerFiring.objects.filter(rollout=OuterRef("pk"))
        .order_by()
        .values("rollout")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Rollout.objects.annotate(
        current_phase_kind=Subquery(active.values("kind")[:1]),
        run_count=Subquery(runs),
        last_run_at=Subquery(last),
        firing_count=Subquery(firings),
    ).order_by("-created_at", "-id")


def criteria_for(rollout: Rollout) -> list[SuccessCriterion]:
    return list(rollout.success_criteria.order_by("id"))
