"""The per-day run summaries: kept by ingestion, and the deltas and trends they give are what the raw runs give."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.db.models import Avg, Count
from django.db.models.functions import TruncDay
from django.utils import timezone

from evaluations import selectors, services, summaries
from evaluations.models import METRIC_KEYS, EvaluationRun, RunDaySummary
from tests.evaluations.conftest import run

FAR_FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _ingest(canary, n: int, *, seed: int, days: int = 12) -> list[dict]:
    rng = random.Random(seed)
    entered = canary.phases.get(kind="canary").entered_at
    now = timezone.now()
    runs = []
    for i in range(n):
        metrics = {
            "task_success_rate": rng.uniform(0.7, 0.95),
            "latency_p95_ms": rng.gauss(1600, 120),
            "cost_per_conversation_usd": rng.gauss(0.06, 0.004),
        }
        if i % 3:
            metrics["critic_revision_rate"] = rng.uniform(0.1, 0.3)  # not every run reports every metric
        arm = rng.choice(["baseline", "candidate"])
        finished = now - dt.timedelta(minutes=rng.randint(1, days * 24 * 60))
        runs.append(
            run(
                canary.slug,
                # Each run in the phase active when it finished (preparation until the canary was entered).
                phase="canary" if finished >= entered else "preparation",
                arm=arm,
                finished=finished,
                metrics=metrics,
            )
        )
    for start in range(0, n, 37):  # several ingests, so rows are added to as well as created
        services.ingest_runs(payload={"runs": runs[start : start + 37]})
    return runs


def _figures(report):
    out = {}
    for phase in report.phases:
        out[(phase.phase.kind, "runs")] = (phase.runs, phase.baseline_runs, phase.candidate_runs)
        for m in phase.metrics:
            c = m.comparison
            out[(phase.phase.kind, m.spec.key)] = (
                m.baseline.n,
                m.candidate.n,
                m.baseline.mean,
                m.candidate.mean,
                m.baseline.sd,
                m.candidate.sd,
                c.delta,
                c.ci_low,
                c.ci_high,
                c.df,
                c.verdict,
            )
    return out


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


def test_deltas_from_summaries_equal_an_aggregate_over_the_raw_runs(canary):
    runs = _ingest(canary, 260, seed=3)
    services.ingest_runs(payload={"runs": runs[:50]})  # duplicates add nothing
    from_summaries = _figures(selectors.deltas(canary))
    # ``finished_before`` aggregates the raw table (AVG, VAR_SAMP, COUNT per phase and arm) in SQL.
    from_raw = _figures(selectors.deltas(canary, finished_before=FAR_FUTURE))
    assert from_summaries.keys() == from_raw.keys()
    assert from_summaries[("canary", "runs")][0] + from_summaries[("preparation", "runs")][0] == 260
    for key, values in from_raw.items():
        assert all(_close(a, b) for a, b in zip(from_summaries[key], values, strict=True)), key
    # Every verdict is the raw one, exactly.
    assert {k: v[-1] for k, v in from_summaries.items() if k[1] != "runs"} == {
        k: v[-1] for k, v in from_raw.items() if k[1] != "runs"
    }


def test_summary_rows_match_the_raw_runs_per_day_and_rebuild_gives_the_same(canary):
    _ingest(canary, 120, seed=5)
    raw = {
        (r["phase_id"], r["arm"], r["day"].date()): r
        for r in EvaluationRun.objects.annotate(day=TruncDay("finished_at"))
        .values("phase_id", "arm", "day")
        .annotate(n=Count("id"), tsr=Avg("task_success_rate"), crr_n=Count("critic_revision_rate"))
        .order_by()
    }
    rows = {(s.phase_id, s.arm, s.day): s for s in RunDaySummary.objects.all()}
    assert rows.keys() == raw.keys()
    for key, s in rows.items():
        assert s.runs == raw[key]["n"]
        assert s.critic_revision_rate_n == raw[key]["crr_n"]
        assert summaries.mean_of(s, "task_success_rate") == pytest.approx(raw[key]["tsr"], rel=1e-12)
    before = {k: (s.runs, *(getattr(s, c) for c in summaries.COLUMNS)) for k, s in rows.items()}
    assert summaries.rebuild() == len(rows)
    after = {
        (s.phase_id, s.arm, s.day): (s.runs, *(getattr(s, c) for c in summaries.COLUMNS))
        for s in RunDaySummary.objects.all()
    }
    assert after.keys() == before.keys()
    for key, values in after.items():
        assert values == pytest.approx(before[key], rel=1e-12)


def test_a_failed_ingest_leaves_the_summaries_untouched(canary):
    _ingest(canary, 20, seed=9)
    before = list(RunDaySummary.objects.order_by("pk").values())
    bad = [run(canary.slug), run(canary.slug, conversations=0)]
    with pytest.raises(services.PayloadInvalid):
        services.ingest_runs(payload={"runs": bad})
    assert list(RunDaySummary.objects.order_by("pk").values()) == before


def test_day_buckets_of_the_trend_come_from_the_summaries_and_equal_the_raw_means(
    canary, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(selectors, "MAX_CHART_POINTS", 10)
    _ingest(canary, 90, seed=11, days=20)
    phases = list(canary.phases.all())
    # The day summaries, the first and last run's moment (two index probes), and the phases' activity periods.
    with django_assert_max_num_queries(3):
        trend = selectors.trend_data(canary, phases)
    assert trend.bucket == "day"
    kinds = {p.pk: p.kind for p in phases}
    raw = (
        EvaluationRun.objects.filter(rollout=canary)
        .annotate(at=TruncDay("finished_at"))
        .values("at", "arm", "phase_id")
        .annotate(n=Count("id"), **{k: Avg(k) for k in METRIC_KEYS})
        .order_by("at", "phase_id", "arm")
    )
    expected = [(r["at"], r["arm"], kinds[r["phase_id"]], r["n"], r["task_success_rate"]) for r in raw]
    got = [(p.at, p.arm, p.phase_kind, p.runs, p.values["task_success_rate"]) for p in trend.points]
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    assert [g[4] for g in got] == pytest.approx([e[4] for e in expected], rel=1e-12)
