"""Deltas by phase: SQL aggregates and Welch's interval equal SciPy's; verdicts are direction-aware."""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pytest
from django.utils import timezone
from scipy import stats

from evaluations import selectors, services
from evaluations.models import Direction
from evaluations.stats import ArmStats, Verdict, welch
from tests.evaluations.conftest import run


def _ingest_values(canary, phase: str, arm: str, values: dict[str, list[float]]) -> None:
    n = len(next(iter(values.values())))
    base = timezone.now() - dt.timedelta(days=2)  # inside the canary period (entered 10 days ago)
    runs = [
        run(
            canary.slug,
            phase=phase,
            arm=arm,
            finished=base + dt.timedelta(minutes=i + (0 if arm == "baseline" else 500)),
            metrics={k: v[i] for k, v in values.items() if v[i] is not None},
        )
        for i in range(n)
    ]
    services.ingest_runs(payload={"runs": runs})


def test_deltas_equal_scipy_welch(canary):
    rng = random.Random(7)
    base = {
        "task_success_rate": [rng.uniform(0.7, 0.85) for _ in range(9)],
        "latency_p95_ms": [rng.gauss(1500, 80) for _ in range(9)],
    }
    cand = {
        "task_success_rate": [rng.uniform(0.8, 0.95) for _ in range(13)],
        "latency_p95_ms": [rng.gauss(1700, 150) for _ in range(13)],
    }
    _ingest_values(canary, "canary", "baseline", base)
    _ingest_values(canary, "canary", "candidate", cand)

    report = selectors.deltas(canary)
    phase = next(p for p in report.phases if p.phase.kind == "canary")
    assert phase.runs == 22
    by_metric = {m.spec.key: m for m in phase.metrics}
    for key in ("task_success_rate", "latency_p95_ms"):
        b, c = np.array(base[key]), np.array(cand[key])
        m = by_metric[key]
        assert (m.baseline.n, m.candidate.n) == (9, 13)
        assert m.baseline.mean == pytest.approx(b.mean(), rel=1e-12)
        assert m.candidate.sd == pytest.approx(c.std(ddof=1), rel=1e-9)
        assert m.baseline.sd == pytest.approx(b.std(ddof=1), rel=1e-9)
        ci = stats.ttest_ind(c, b, equal_var=False).confidence_interval(0.95)
        assert m.comparison.delta == pytest.approx(c.mean() - b.mean(), rel=1e-9, abs=1e-12)
        assert m.comparison.ci_low == pytest.approx(ci.low, rel=1e-9, abs=1e-9)
        assert m.comparison.ci_high == pytest.approx(ci.high, rel=1e-9, abs=1e-9)
        assert m.comparison.relative == pytest.approx((c.mean() - b.mean()) / abs(b.mean()), rel=1e-9)
    # Higher is better for task success: a clearly higher candidate improved; latency up is a regression.
    assert by_metric["task_success_rate"].comparison.verdict == Verdict.IMPROVED
    assert by_metric["latency_p95_ms"].comparison.verdict == Verdict.REGRESSED
    # The criteria: task success >= 0.85, p95 <= 2000 ms.
    assert by_metric["task_success_rate"].meets_criterion == (np.mean(cand["task_success_rate"]) >= 0.85)
    assert by_metric["latency_p95_ms"].meets_criterion is True
    # Metrics nobody reported, and phases without runs, are "not enough data".
    assert by_metric["critic_revision_rate"].comparison.verdict == Verdict.NOT_ENOUGH_DATA
    ga = next(p for p in report.phases if p.phase.kind == "general_availability")
    assert ga.runs == 0 and {m.comparison.verdict for m in ga.metrics} == {Verdict.NOT_ENOUGH_DATA}


def test_missing_values_and_single_runs(canary):
    _ingest_values(canary, "canary", "baseline", {"cost_per_conversation_usd": [0.05, None, 0.07]})
    _ingest_values(canary, "canary", "candidate", {"cost_per_conversation_usd": [0.06]})
    m = next(
        m
        for p in selectors.deltas(canary).phases
        if p.phase.kind == "canary"
        for m in p.metrics
        if m.spec.key == "cost_per_conversation_usd"
    )
    assert (m.baseline.n, m.candidate.n) == (2, 1)
    assert m.baseline.mean == pytest.approx(0.06)
    assert m.baseline.sd == pytest.approx(np.std([0.05, 0.07], ddof=1), rel=1e-9)
    assert m.candidate.sd is None
    assert m.comparison.delta == pytest.approx(0.0)
    assert m.comparison.ci_low is None and m.comparison.verdict == Verdict.NOT_ENOUGH_DATA


@pytest.mark.parametrize(
    ("direction", "cand_mean", "verdict"),
    [
        (Direction.HIGHER, 0.95, Verdict.IMPROVED),
        (Direction.HIGHER, 0.75, Verdict.REGRESSED),
        (Direction.HIGHER, 0.851, Verdict.NO_CLEAR_CHANGE),
        (Direction.LOWER, 0.95, Verdict.REGRESSED),
        (Direction.LOWER, 0.75, Verdict.IMPROVED),
        (Direction.LOWER, 0.849, Verdict.NO_CLEAR_CHANGE),
    ],
)
def test_verdict_is_direction_aware(direction, cand_mean, verdict):
    base = ArmStats(n=10, mean=0.85, sd=0.02)
    cand = ArmStats(n=10, mean=cand_mean, sd=0.02)
    result = welch(base, cand, direction)
    assert result.verdict == verdict
    # The interval matches SciPy's from summary statistics as well.
    t = stats.t.ppf(0.975, result.df)
    se = math.sqrt(0.02**2 / 10 * 2)
    assert result.ci_low == pytest.approx(cand_mean - 0.85 - t * se, rel=1e-9)


def test_constant_arms_have_a_zero_width_interval():
    result = welch(ArmStats(3, 1.0, 0.0), ArmStats(3, 2.0, 0.0), Direction.LOWER)
    assert (result.ci_low, result.ci_high, result.verdict) == (1.0, 1.0, Verdict.REGRESSED)
    assert welch(ArmStats(1, 1.0, None), ArmStats(5, 1.0, 0.1), Direction.LOWER).verdict == Verdict.NOT_ENOUGH_DATA
    assert welch(ArmStats(0, None, None), ArmStats(5, 1.0, 0.1), Direction.LOWER).delta is None


def test_ga_gate_counts_the_last_passing_limited_beta_runs(canary, admin):
    from tests.factories import advance_to

    advance_to(canary, "limited_beta", admin)
    entered = canary.phases.get(kind="limited_beta").entered_at
    good = {
        "task_success_rate": 0.9,
        "guardrail_compensation_rate": 0.01,
        "latency_p95_ms": 1500.0,
        "cost_per_conversation_usd": 0.05,
        "tool_call_accuracy": 0.95,
        "critic_revision_rate": 0.1,
    }
    bad = {**good, "tool_call_accuracy": 0.5}
    metrics = [good, bad, good, good, good]
    services.ingest_runs(
        payload={
            "runs": [
                run(canary.slug, phase="limited_beta", metrics=m, finished=entered + dt.timedelta(seconds=i + 1))
                for i, m in enumerate(metrics)
            ]
        }
    )
    gate = selectors.ga_gate(canary)
    assert (gate.streak, gate.required, gate.passed) == (3, 5, False)
    assert str(gate) == "3 of 5 consecutive passing runs"
    assert gate.checks[3].failed == ("tool_call_accuracy",)
    services.ingest_runs(
        payload={
            "runs": [
                run(canary.slug, phase="limited_beta", metrics=good, finished=entered + dt.timedelta(seconds=10 + i))
                for i in range(2)
            ]
        }
    )
    assert selectors.ga_gate(canary).passed
