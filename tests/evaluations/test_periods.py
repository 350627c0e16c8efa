"""Issue 9, seam 1: runs belong to a phase's activity periods; late arrivals are shown, never counted."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from evaluations import selectors, services
from evaluations.models import EvaluationRun
from rollout.models import PhaseKind, PhasePeriod
from rollout.roles import Role
from rollout.services import rollout_resume, rollout_rollback
from tests.evaluations.conftest import run
from tests.factories import advance_to

pytestmark = pytest.mark.django_db


def _breach(slug: str, finished: dt.datetime, **kw) -> dict:
    return run(slug, guardrail_compensations=6, finished=finished, **kw)


def test_a_late_run_for_an_ended_period_is_accepted_marked_and_never_counts_toward_the_trigger(canary, admin):
    canary_phase = canary.phases.get(kind=PhaseKind.CANARY)
    first_entry = canary_phase.entered_at
    rollout_rollback(rollout=canary, actor=admin, reason="Refund loop")
    rollout_resume(rollout=canary, actor=admin, reason="Planner prompt fixed")
    canary_phase.refresh_from_db()
    # Two breaching runs that finished in the first period arrive only now.
    late = [_breach(canary.slug, first_entry + dt.timedelta(hours=h)) for h in (1, 2)]
    assert services.ingest_runs(payload={"runs": late}).created == [r["run_id"] for r in late]
    assert list(
        EvaluationRun.objects.filter(run_id__in=[r["run_id"] for r in late]).values_list("late", flat=True)
    ) == [
        True,
        True,
    ]
    statuses = {t.trigger: t.streak for t in selectors.trigger_statuses(canary, canary_phase)}
    assert statuses == {"guardrail": 0, "latency": 0}
    assert services.evaluate_triggers(rollout_id=canary.pk) is None
    # A run of the current period is not late, and counts.
    current = _breach(canary.slug, timezone.now())
    services.ingest_runs(payload={"runs": [current]})
    assert EvaluationRun.objects.get(run_id=current["run_id"]).late is False
    assert {t.trigger: t.streak for t in selectors.trigger_statuses(canary, canary_phase)}["guardrail"] == 1


def test_the_runs_page_and_run_page_mark_a_late_arrival(client_for, canary, admin):
    entered = canary.phases.get(kind=PhaseKind.CANARY).entered_at
    advance_to(canary, "limited_beta", admin)
    late, fresh = run(canary.slug, finished=entered + dt.timedelta(hours=1)), run(canary.slug, phase="limited_beta")
    services.ingest_runs(payload={"runs": [late, fresh]})
    client = client_for(Role.AUDITOR)
    page = client.get(f"/rollouts/{canary.slug}/runs/").content.decode()
    assert page.count("late arrival</span>") == 1
    row = page[page.index(late["run_id"]) :]
    assert row.index("late arrival") < row.index("</tr>")
    detail = client.get(f"/rollouts/{canary.slug}/runs/{late['run_id']}/").content.decode()
    assert 'id="late-arrival"' in detail and "never counts toward a live rollback trigger" in detail
    assert 'id="late-arrival"' not in client.get(f"/rollouts/{canary.slug}/runs/{fresh['run_id']}/").content.decode()


def test_the_ga_streak_counts_only_runs_of_the_current_limited_beta_period(canary, admin):
    advance_to(canary, "limited_beta", admin, at=timezone.now() - dt.timedelta(days=2))
    beta = canary.phases.get(kind=PhaseKind.LIMITED_BETA)
    good = {
        "task_success_rate": 0.9,
        "guardrail_compensation_rate": 0.01,
        "latency_p95_ms": 1500.0,
        "cost_per_conversation_usd": 0.05,
        "tool_call_accuracy": 0.95,
        "critic_revision_rate": 0.1,
    }
    first = [
        run(canary.slug, phase="limited_beta", metrics=good, finished=beta.entered_at + dt.timedelta(minutes=m))
        for m in range(1, 6)
    ]
    services.ingest_runs(payload={"runs": first})
    assert selectors.ga_gate(canary).streak == 5
    rollout_rollback(rollout=canary, actor=admin, reason="Latency")
    rollout_resume(rollout=canary, actor=admin, reason="Fixed")
    # Five passing runs stored before the re-entry no longer count: the streak starts afresh.
    assert selectors.ga_gate(canary).streak == 0
    services.ingest_runs(payload={"runs": [run(canary.slug, phase="limited_beta", metrics=good)]})
    assert selectors.ga_gate(canary).streak == 1


def _gates_both_ways(rollout):
    """The GA gate read fresh (the phase by subqueries) and from a rollout whose phases are prefetched (the rollout
    page and the API: the phase's id and entry as literals, no query before limited beta is entered)."""
    from django.db.models import Prefetch

    from rollout.models import Rollout

    fresh = selectors.ga_gate(Rollout.objects.get(pk=rollout.pk))
    loaded = Rollout.objects.prefetch_related(Prefetch("phases")).get(pk=rollout.pk)
    prefetched = selectors.ga_gate(loaded)
    assert (prefetched.required, prefetched.streak) == (fresh.required, fresh.streak)
    assert [(c.run.pk, c.failed) for c in prefetched.checks] == [(c.run.pk, c.failed) for c in fresh.checks]
    return fresh


def test_the_ga_gate_from_prefetched_phases_equals_the_fresh_read(canary, admin, django_assert_num_queries):
    from rollout.models import Rollout

    assert _gates_both_ways(canary).checks == ()  # limited beta not entered
    loaded = Rollout.objects.prefetch_related("phases").get(pk=canary.pk)
    with django_assert_num_queries(0):
        assert selectors.ga_gate(loaded).streak == 0
    advance_to(canary, "limited_beta", admin, at=timezone.now() - dt.timedelta(days=2))
    beta = canary.phases.get(kind=PhaseKind.LIMITED_BETA)
    good = {
        "task_success_rate": 0.9,
        "guardrail_compensation_rate": 0.01,
        "latency_p95_ms": 1500.0,
        "cost_per_conversation_usd": 0.05,
        "tool_call_accuracy": 0.95,
        "critic_revision_rate": 0.1,
    }
    bad = {**good, "tool_call_accuracy": 0.1}
    runs = [
        run(canary.slug, phase="limited_beta", metrics=m, finished=beta.entered_at + dt.timedelta(minutes=i + 1))
        for i, m in enumerate([good, bad, good, good])
    ]
    services.ingest_runs(payload={"runs": runs})
    gate = _gates_both_ways(canary)
    assert (len(gate.checks), gate.streak, gate.checks[2].failed) == (4, 2, ("tool_call_accuracy",))
    rollout_rollback(rollout=canary, actor=admin, reason="Latency")
    rollout_resume(rollout=canary, actor=admin, reason="Fixed")
    assert _gates_both_ways(canary).checks == ()  # re-entered: the earlier period's runs no longer count
    services.ingest_runs(payload={"runs": [run(canary.slug, phase="limited_beta", metrics=good)]})
    assert _gates_both_ways(canary).streak == 1


def test_the_trend_chart_draws_the_canary_start_where_its_period_starts(canary, admin):
    entered = canary.phases.get(kind=PhaseKind.CANARY).entered_at
    services.ingest_runs(
        payload={
            "runs": [
                run(canary.slug, phase="canary", finished=entered + dt.timedelta(days=1)),
                run(canary.slug, phase="preparation", finished=entered - dt.timedelta(days=1)),
            ]
        }
    )
    trend = selectors.trend_data(canary, list(canary.phases.all()))
    assert trend.phase_starts == [("Canary (internal QA)", entered)]
    rollout_rollback(rollout=canary, actor=admin, reason="Latency")
    rollout_resume(rollout=canary, actor=admin, reason="Fixed")
    services.ingest_runs(payload={"runs": [run(canary.slug)]})
    second = PhasePeriod.objects.get(phase__rollout=canary, phase__kind="canary", ordinal=2)
    trend = selectors.trend_data(canary, list(canary.phases.all()))
    assert trend.phase_starts == [
        ("Canary (internal QA)", entered),
        ("Canary (internal QA) (re-entry 1)", second.entered_at),
    ]
