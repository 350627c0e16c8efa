"""Rollback triggers (design section 4): streaks, boundaries, gaps, firing once, and what firing does."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluations import services, tasks
from evaluations.models import TriggerFiring
from evaluations.triggers import current_streak, firing_points, guardrail_breached
from rollout.models import FlagExposure, FlagKey, Incident, PhaseStatus, RolloutStatus
from rollout.services import rollout_resume
from tests.evaluations.conftest import run


def reference_fires(breaches: list[bool], gaps: list[bool], required: int) -> list[int]:
    """The spec, said plainly: count consecutive breaches, reset on a clean item or a gap, fire at ``required``."""
    fires, streak = [], 0
    for index, (breach, gap) in enumerate(zip(breaches, gaps, strict=True)):
        if gap:
            streak = 0
        streak = streak + 1 if breach else 0
        if streak == required:
            fires.append(index)
    return fires


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40),
    required=st.integers(min_value=1, max_value=5),
)
def test_incremental_firing_matches_the_reference(items, required):
    """Items arrive one by one; after each, the unfired firing points fire. The set fired equals the reference's."""
    breaches = [b for b, _ in items]
    gaps = [g for _, g in items]
    # An interval sequence: a gap is a missing 5-minute slot before the item.
    seq, t = [], 0
    for index, (breach, gap) in enumerate(items):
        t += 10 if gap else 5
        seq.append({"i": index, "start": t - 5, "end": t, "breach": breach})
    fired: list[int] = []
    for arrived in range(1, len(seq) + 1):
        for evidence in firing_points(
            seq[:arrived],
            breached=lambda s: s["breach"],
            required=required,
            contiguous=lambda a, b: b["start"] == a["end"],
        ):
            point = evidence[-1]["i"]
            if point not in fired:
                assert point == arrived - 1, "a streak fires when its last item arrives, not later"
                fired.append(point)
                assert len(evidence) == required
    assert fired == reference_fires(breaches, [g and i > 0 for i, g in enumerate(gaps)], required)


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.integers(min_value=1, max_value=20000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
        max_size=30,
    ),
    threshold=st.integers(min_value=0, max_value=10000),
)
def test_guardrail_breach_is_exact_and_strict(pairs, threshold):
    t = Decimal(threshold).scaleb(-4)
    breaches = [guardrail_breached(c, n, t) for c, n in pairs]
    assert breaches == [c * 10000 > threshold * n for c, n in pairs]
    streak = current_streak(pairs, breached=lambda p: guardrail_breached(p[0], p[1], t))
    expected = 0
    for b in breaches:
        expected = expected + 1 if b else 0
    assert len(streak) == expected


def test_boundaries_five_percent_does_not_breach_five_point_oh_one_does():
    assert guardrail_breached(5, 100, Decimal("0.0500")) is False
    assert guardrail_breached(501, 10000, Decimal("0.0500")) is True
    assert guardrail_breached(50, 1000, "0.05") is False
    assert guardrail_breached(0, 1, Decimal("0")) is False
    assert guardrail_breached(1, 1, Decimal("1")) is False


# --- Through the database -----------------------------------------------------------------


def ingest(canary, **kwargs):
    services.ingest_runs(payload={"runs": [run(canary.slug, **kwargs)]})


def at(canary, seconds: float) -> dt.datetime:
    return canary.phases.get(kind="canary").entered_at + dt.timedelta(seconds=seconds)


def test_five_percent_twice_does_not_fire(canary):
    ingest(canary, conversations=100, guardrail_compensations=5, finished=at(canary, 1))
    ingest(canary, conversations=100, guardrail_compensations=5, finished=at(canary, 2))
    assert services.evaluate_triggers(rollout_id=canary.pk) is None
    assert TriggerFiring.objects.count() == 0


def test_five_point_oh_one_percent_twice_fires_and_rolls_back(canary, tenants):
    ingest(canary, run_id="r-1", conversations=10000, guardrail_compensations=501, finished=at(canary, 1))
    assert services.evaluate_triggers(rollout_id=canary.pk) is None
    ingest(canary, run_id="r-2", conversations=10000, guardrail_compensations=501, finished=at(canary, 2))
    firing = services.evaluate_triggers(rollout_id=canary.pk)
    assert firing is not None
    assert (firing.trigger, firing.streak, firing.run.run_id) == ("guardrail", 2, "r-2")
    assert [e["run_id"] for e in firing.evidence] == ["r-1", "r-2"]
    assert firing.evidence[0]["compensation_rate"] == 0.0501

    canary.refresh_from_db()
    phase = canary.phases.get(kind="canary")
    assert (canary.status, phase.status) == (RolloutStatus.ROLLED_BACK, PhaseStatus.ROLLED_BACK)
    incident = firing.incident
    assert (incident.kind, incident.trigger, incident.phase_id) == ("automatic", "guardrail", phase.pk)
    evidence = incident.events.get(kind="evidence")
    assert [e["run_id"] for e in evidence.data["evidence"]] == ["r-1", "r-2"]
    internal = [tenants["Internal A"], tenants["Internal B"]]
    on = set(FlagExposure.objects.filter(flag__rollout=canary, enabled=True).values_list("flag__key", "tenant_id"))
    for tenant in internal:
        assert (FlagKey.AGENT_V1_FALLBACK, tenant.pk) in on
        assert (FlagKey.MULTI_AGENT_RUNNER, tenant.pk) not in on
    # Evaluating again finds nothing more: the phase is rolled back, and the streak has fired.
    assert services.evaluate_triggers(rollout_id=canary.pk) is None
    assert TriggerFiring.objects.count() == 1 and Incident.objects.count() == 1


def test_a_clean_run_resets_and_baseline_runs_do_not_count(canary):
    ingest(canary, guardrail_compensations=9, finished=at(canary, 1))
    ingest(canary, guardrail_compensations=1, finished=at(canary, 2))
    ingest(canary, guardrail_compensations=9, finished=at(canary, 3))
    ingest(canary, arm="baseline", guardrail_compensations=90, finished=at(canary, 4))
    assert services.evaluate_triggers(rollout_id=canary.pk) is None


def test_order_is_by_finished_at_not_by_arrival(canary):
    ingest(canary, guardrail_compensations=9, finished=at(canary, 3))
    ingest(canary, guardrail_compensations=9, finished=at(canary, 1))
    ingest(canary, guardrail_compensations=0, finished=at(canary, 2))
    assert services.evaluate_triggers(rollout_id=canary.pk) is None


def test_a_streak_closed_within_one_batch_still_fires(canary):
    runs = [
        run(canary.slug, run_id="b-1", guardrail_compensations=9, finished=at(canary, 1)),
        run(canary.slug, run_id="b-2", guardrail_compensations=9, finished=at(canary, 2)),
        run(canary.slug, run_id="b-3", guardrail_compensations=0, finished=at(canary, 3)),
    ]
    services.ingest_runs(payload={"runs": runs})
    firing = services.evaluate_triggers(rollout_id=canary.pk)
    assert firing is not None and firing.run.run_id == "b-2"


def sample(canary, start_s: int, seconds: int = 20, latency: float = 2500.0) -> dict:
    start = at(canary, start_s)
    return {
        "rollout": canary.slug,
        "phase": "canary",
        "interval_start": start.isoformat(),
        "interval_end": (start + dt.timedelta(seconds=seconds)).isoformat(),
        "latency_p95_ms": latency,
        "requests": 100,
    }


def test_latency_gap_resets_the_streak_and_three_contiguous_fire(canary):
    # 20-second intervals from phase entry keep the synthetic times within the clock-skew bound.
    five = 20
    services.ingest_samples(
        payload={"samples": [sample(canary, 0), sample(canary, five), sample(canary, 3 * five)]}  # gap before the 3rd
    )
    assert services.evaluate_triggers(rollout_id=canary.pk) is None
    services.ingest_samples(payload={"samples": [sample(canary, 4 * five, latency=2000.0)]})  # at the SLA: clean
    services.ingest_samples(payload={"samples": [sample(canary, 5 * five), sample(canary, 6 * five)]})
    assert services.evaluate_triggers(rollout_id=canary.pk) is None
    services.ingest_samples(payload={"samples": [sample(canary, 7 * five)]})
    firing = services.evaluate_triggers(rollout_id=canary.pk)
    assert firing is not None and firing.trigger == "latency" and firing.streak == 3
    assert [e["interval_start"] for e in firing.evidence] == [at(canary, s * five).isoformat() for s in (5, 6, 7)]
    assert firing.incident.trigger == "latency"


def test_firing_is_unique_on_its_run(canary):
    ingest(canary, run_id="u-1", guardrail_compensations=9, finished=at(canary, 1))
    ingest(canary, run_id="u-2", guardrail_compensations=9, finished=at(canary, 2))
    firing = services.evaluate_triggers(rollout_id=canary.pk)
    with pytest.raises(IntegrityError), transaction.atomic():
        TriggerFiring.objects.create(
            rollout=canary,
            phase=firing.phase,
            trigger="guardrail",
            run=firing.run,
            streak=2,
            evidence=[],
            fired_at=firing.fired_at,
        )


def test_after_resume_old_breaches_do_not_count(canary, admin):
    # The first activation began days ago (the fixture), so its runs lie well before the resume.
    ingest(canary, guardrail_compensations=9, finished=at(canary, 1))
    ingest(canary, guardrail_compensations=9, finished=at(canary, 2))
    assert services.evaluate_triggers(rollout_id=canary.pk) is not None
    rollout_resume(rollout=canary, actor=admin, reason="fixed the planner prompt")
    phase = canary.phases.get(kind="canary")
    services.ingest_runs(
        payload={
            "runs": [run(canary.slug, guardrail_compensations=9, finished=phase.entered_at + dt.timedelta(seconds=1))]
        }
    )
    assert services.evaluate_triggers(rollout_id=canary.pk) is None
    services.ingest_runs(
        payload={
            "runs": [run(canary.slug, guardrail_compensations=9, finished=phase.entered_at + dt.timedelta(seconds=2))]
        }
    )
    assert services.evaluate_triggers(rollout_id=canary.pk) is not None
    assert TriggerFiring.objects.count() == 2


def test_the_sweep_catches_a_lost_task(canary):
    # In the test transaction nothing commits, so the on-commit task never ran: as if it were lost.
    ingest(canary, guardrail_compensations=9, finished=at(canary, 1))
    ingest(canary, guardrail_compensations=9, finished=at(canary, 2))
    assert TriggerFiring.objects.count() == 0
    assert tasks.sweep_triggers() == 1
    assert TriggerFiring.objects.count() == 1
    assert tasks.sweep_triggers() == 0


def test_ingest_schedules_the_evaluation_on_commit(canary, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.ingest_runs(
            payload={"runs": [run(canary.slug, guardrail_compensations=9, finished=at(canary, s)) for s in (1, 2)]}
        )
    # CELERY_TASK_ALWAYS_EAGER in tests: the task ran at commit.
    assert TriggerFiring.objects.count() == 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals=st.lists(st.tuples(st.sampled_from(["candidate", "baseline"]), st.booleans()), min_size=1, max_size=8))
def test_database_path_fires_exactly_when_the_reference_says(canary, arrivals):
    """Runs arrive one at a time through the ingest service; evaluation after each fires at the reference's point."""
    sid = transaction.savepoint()
    try:
        fired_at = None
        candidates: list[bool] = []
        for index, (arm, breach) in enumerate(arrivals):
            ingest(
                canary,
                run_id=f"p-{index}",
                arm=arm,
                conversations=100,
                guardrail_compensations=6 if breach else 5,
                finished=at(canary, index + 1),
            )
            if arm == "candidate":
                candidates.append(breach)
            firing = services.evaluate_triggers(rollout_id=canary.pk)
            if firing is not None:
                assert fired_at is None, "fires once"
                fired_at = len(candidates) - 1
                assert firing.run.run_id == f"p-{index}"
                break
        expected = reference_fires(candidates, [False] * len(candidates), canary.guardrail_breach_runs)
        assert fired_at == (expected[0] if expected else None)
    finally:
        transaction.savepoint_rollback(sid)
