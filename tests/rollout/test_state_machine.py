"""The phase and rollout state machines of design section 3: every allowed and every forbidden transition."""

from __future__ import annotations

import itertools

import pytest
from django.utils import timezone

from rollout import services
from rollout.errors import ActionNotAllowed, InvalidTransition
from rollout.models import (
    FlagExposure,
    FlagKey,
    GuardrailMode,
    IncidentKind,
    IncidentStatus,
    Phase,
    PhaseKind,
    PhaseStatus,
    Rollout,
    RolloutStatus,
)
from rollout.roles import Role
from tests.factories import advance_to

PHASE_ALLOWED = {
    (PhaseStatus.PENDING, PhaseStatus.ACTIVE),
    (PhaseStatus.ACTIVE, PhaseStatus.COMPLETED),
    (PhaseStatus.ACTIVE, PhaseStatus.ROLLED_BACK),
    (PhaseStatus.ROLLED_BACK, PhaseStatus.ACTIVE),
}
ROLLOUT_ALLOWED = {
    (RolloutStatus.DRAFT, RolloutStatus.IN_PROGRESS),
    (RolloutStatus.DRAFT, RolloutStatus.CANCELLED),
    (RolloutStatus.IN_PROGRESS, RolloutStatus.COMPLETED),
    (RolloutStatus.IN_PROGRESS, RolloutStatus.ROLLED_BACK),
    (RolloutStatus.IN_PROGRESS, RolloutStatus.CANCELLED),
    (RolloutStatus.ROLLED_BACK, RolloutStatus.IN_PROGRESS),
    (RolloutStatus.ROLLED_BACK, RolloutStatus.CANCELLED),
}


def test_transition_tables_are_exactly_the_design():
    declared = {(a, b) for a, targets in services.PHASE_TRANSITIONS.items() for b in targets}
    assert declared == PHASE_ALLOWED
    declared = {(a, b) for a, targets in services.ROLLOUT_TRANSITIONS.items() for b in targets}
    assert declared == ROLLOUT_ALLOWED


@pytest.mark.parametrize(("start", "to"), list(itertools.product(PhaseStatus.values, PhaseStatus.values)))
def test_every_phase_transition(rollout, start, to):
    # Test set-up only: put the canary phase in ``start`` with preparation out of the way.
    rollout.phases.filter(kind=PhaseKind.PREPARATION).update(status=PhaseStatus.COMPLETED, exited_at=timezone.now())
    phase = rollout.phases.get(kind=PhaseKind.CANARY)
    Phase.objects.filter(pk=phase.pk).update(
        status=start, entered_at=timezone.now() if start != PhaseStatus.PENDING else None
    )
    phase.refresh_from_db()
    if (start, to) in PHASE_ALLOWED:
        services._set_phase_status(phase, to, actor=None, reason="test", now=timezone.now())
        phase.refresh_from_db()
        assert phase.status == to
    else:
        with pytest.raises(InvalidTransition):
            services._set_phase_status(phase, to, actor=None, reason="test", now=timezone.now())
        phase.refresh_from_db()
        assert phase.status == start


@pytest.mark.parametrize(
    ("start", "to"), [(a, b) for a, b in itertools.product(RolloutStatus.values, RolloutStatus.values) if a != b]
)
def test_every_rollout_transition(rollout, start, to):
    Rollout.objects.filter(pk=rollout.pk).update(status=start)
    rollout.refresh_from_db()
    if (start, to) in ROLLOUT_ALLOWED:
        services._set_rollout_status(rollout, to, actor=None, reason="test")
        rollout.refresh_from_db()
        assert rollout.status == to
    else:
        with pytest.raises(InvalidTransition):
            services._set_rollout_status(rollout, to, actor=None, reason="test")
        rollout.refresh_from_db()
        assert rollout.status == start


def _statuses(rollout):
    return dict(rollout.phases.values_list("kind", "status"))


def test_advance_walks_the_phases_in_order_and_completes(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    services.rollout_advance(rollout=rollout, to=PhaseKind.CANARY, actor=admin, reason="go")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS
    assert _statuses(rollout) == {
        "preparation": "completed",
        "canary": "active",
        "limited_beta": "pending",
        "general_availability": "pending",
    }
    services.rollout_advance(rollout=rollout, to=PhaseKind.LIMITED_BETA, actor=admin, reason="go")
    ga = services.rollout_advance(rollout=rollout, to=PhaseKind.GENERAL_AVAILABILITY, actor=admin, reason="go")
    assert ga.guardrail_mode == GuardrailMode.ENFORCE
    assert services.rollout_advance(rollout=rollout, to="completed", actor=admin, reason="done") is None
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.COMPLETED
    assert set(_statuses(rollout).values()) == {"completed"}
    phases = list(rollout.phases.order_by("order"))
    # Each phase was exited no earlier than the next one was entered.
    for earlier, later in itertools.pairwise(phases):
        assert earlier.exited_at <= later.entered_at


@pytest.mark.parametrize("target", ["limited_beta", "general_availability", "completed", "preparation", "bogus"])
def test_advance_refuses_anything_but_the_next_step(rollout, users, target):
    with pytest.raises(InvalidTransition, match="next step is canary"):
        services.rollout_advance(rollout=rollout, to=target, actor=users[Role.ROLLOUT_ADMIN], reason="skip")
    assert _statuses(rollout)["preparation"] == "active"
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.DRAFT


def test_advance_after_completion_or_cancel_has_no_next_step(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    services.rollout_cancel(rollout=rollout, actor=admin, reason="descoped")
    with pytest.raises(InvalidTransition, match="no next step"):
        services.rollout_advance(rollout=rollout, to=PhaseKind.CANARY, actor=admin, reason="go")


def test_exposure_follows_the_phase_with_voice_only_where_confirmed(rollout, users, tenants):
    admin = users[Role.ROLLOUT_ADMIN]

    def on(flag):
        return set(
            FlagExposure.objects.filter(flag__rollout=rollout, flag__key=flag, enabled=True).values_list(
                "tenant__name", flat=True
            )
        )

    assert on(FlagKey.REACT_LOOP) == set()
    advance_to(rollout, PhaseKind.CANARY, admin)
    assert on(FlagKey.REACT_LOOP) == {"Internal A", "Internal B"}
    assert on(FlagKey.VOICE_INSIGHTS) == {"Internal A"}
    advance_to(rollout, PhaseKind.LIMITED_BETA, admin)
    assert on(FlagKey.MULTI_AGENT_RUNNER) == {"Internal A", "Internal B", "Beta A", "Beta B"}
    assert on(FlagKey.VOICE_INSIGHTS) == {"Internal A", "Beta A"}
    advance_to(rollout, PhaseKind.GENERAL_AVAILABILITY, admin)
    assert on(FlagKey.CRITIC_REVISION) == set(tenants)
    assert on(FlagKey.VOICE_INSIGHTS) == {"Internal A", "Beta A", "General A"}
    assert on(FlagKey.AGENT_V1_FALLBACK) == set()


def test_rollback_turns_exposed_tenants_back_to_the_legacy_pipeline(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    advance_to(rollout, PhaseKind.LIMITED_BETA, admin)
    incident = services.rollout_rollback(rollout=rollout, actor=admin, reason="latency regression")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLED_BACK
    assert _statuses(rollout)["limited_beta"] == PhaseStatus.ROLLED_BACK
    multi = FlagExposure.objects.filter(flag__rollout=rollout, enabled=True).exclude(
        flag__key=FlagKey.AGENT_V1_FALLBACK
    )
    assert not multi.exists()
    fallback = set(
        FlagExposure.objects.filter(
            flag__rollout=rollout, flag__key=FlagKey.AGENT_V1_FALLBACK, enabled=True
        ).values_list("tenant__name", flat=True)
    )
    assert fallback == {"Internal A", "Internal B", "Beta A", "Beta B"}
    assert incident.kind == IncidentKind.MANUAL
    assert incident.status == IncidentStatus.OPEN
    assert [s.key for s in incident.steps.all()] == ["disable_flags", "drain_workers", "notify_stakeholders"]
    assert incident.steps.get(key="disable_flags").done_by == admin
    # A rolled-back rollout cannot advance or be rolled back again, but can resume.
    with pytest.raises(InvalidTransition):
        services.rollout_advance(rollout=rollout, to=PhaseKind.GENERAL_AVAILABILITY, actor=admin, reason="x")
    with pytest.raises(InvalidTransition):
        services.rollout_rollback(rollout=rollout, actor=admin, reason="again")
    phase = services.rollout_resume(rollout=rollout, actor=admin, reason="fixed")
    assert phase.kind == PhaseKind.LIMITED_BETA and phase.status == PhaseStatus.ACTIVE
    assert not FlagExposure.objects.filter(
        flag__rollout=rollout, flag__key=FlagKey.AGENT_V1_FALLBACK, enabled=True
    ).exists()


def test_rollback_of_a_draft_rollout_is_refused_and_writes_nothing(rollout, users):
    with pytest.raises(InvalidTransition, match="Only a rollout in progress"):
        services.rollout_rollback(rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="why not")
    assert not rollout.incidents.exists()
    assert _statuses(rollout)["preparation"] == "active"


def test_manual_rollback_needs_the_permission(rollout, users):
    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])
    with pytest.raises(ActionNotAllowed):
        services.rollout_rollback(rollout=rollout, actor=users[Role.AUDITOR], reason="I want to")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS
