"""Transition requests: the rules, the gates, apply, the approving roles, and races on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluations.models import Arm, EvaluationRun
from governance import ledger, services
from governance.errors import (
    AlreadyApplied,
    CommentRequired,
    GateNotMet,
    InvalidApprovers,
    NotInRole,
    OneRolePerPerson,
    RequestAlreadyOpen,
    RequestClosed,
    RequestNotApproved,
    RoleAlreadyDecided,
    RoleNotRequired,
    SelfApprovalForbidden,
)
from governance.models import AuditEvent, Decision, TransitionApproval, TransitionRequest
from governance.selectors import approver_config, gates_for
from rollout import services as rollout_services
from rollout.errors import ActionNotAllowed, InvalidTransition
from rollout.models import (
    ChecklistKind,
    FlagExposure,
    FlagKey,
    GuardrailMode,
    IncidentKind,
    Phase,
    PhaseKind,
    PhaseStatus,
    RolloutStatus,
)
from rollout.roles import Role
from tests.conftest import make_user
from tests.factories import advance_to

from .helpers import Snapshot, approve, run_threads, sign_all, threaded

pytestmark = pytest.mark.django_db

ADMIN = Role.ROLLOUT_ADMIN


def request_next(rollout, users, justification="Evidence attached."):
    return services.transition_request_create(rollout=rollout, justification=justification, actor=users[ADMIN])


def decide(request, user, role, decision=Decision.APPROVE, comment="ok"):
    return services.transition_decide(request=request, role=role, decision=decision, comment=comment, actor=user)


def apply(request, users):
    return services.transition_apply(request=request, actor=users[ADMIN])


def gate(rollout, target, key):
    return next(g for g in gates_for(rollout, target) if g.key == key)


# --- Requesting -----------------------------------------------------------------------------------


def test_a_request_names_the_next_step_and_lands_in_the_ledger(ready_rollout, users):
    req = request_next(ready_rollout, users, "Readiness 12/12 and plan signed by all four leads.")
    assert (req.from_phase, req.target, req.status) == ("preparation", "canary", "open")
    assert (req.requested_by, req.requester_name) == (users[ADMIN], "rollout-admin")
    entry = AuditEvent.objects.order_by("-sequence").first()
    assert (entry.action, entry.object_id, entry.actor_name) == ("transition.request", str(req.pk), "rollout-admin")
    assert entry.reason == "Readiness 12/12 and plan signed by all four leads."


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda r, u: services.transition_request_create(rollout=r, justification="x", actor=u["product-lead"]),
            ActionNotAllowed,
        ),
        (
            lambda r, u: services.transition_request_create(rollout=r, justification="  ", actor=u[ADMIN]),
            CommentRequired,
        ),
        (
            lambda r, u: services.transition_request_create(
                rollout=r, justification="x", actor=u[ADMIN], target="limited_beta"
            ),
            InvalidTransition,
        ),
    ],
    ids=["not-rollout-admin", "no-justification", "not-the-next-step"],
)
def test_request_rules_refuse_and_write_nothing(ready_rollout, users, call, error):
    snap = Snapshot()
    with pytest.raises(error):
        call(ready_rollout, users)
    assert snap.unchanged()


def test_at_most_one_open_request_per_rollout(canary_request, users):
    snap = Snapshot()
    with pytest.raises(RequestAlreadyOpen):
        request_next(canary_request.rollout, users)
    assert snap.unchanged()
    # Approved still counts as open: it has not been applied yet.
    approve(canary_request, users)
    with pytest.raises(RequestAlreadyOpen):
        request_next(canary_request.rollout, users)
    services.transition_withdraw(request=canary_request, actor=users[ADMIN], reason="Wrong week")
    assert request_next(canary_request.rollout, users).status == "open"


def test_the_database_allows_one_pending_request_per_rollout(canary_request, users):
    fields = {
        "rollout": canary_request.rollout,
        "from_phase": "preparation",
        "target": "canary",
        "justification": "x",
        "requester_name": "x",
        "requested_at": timezone.now(),
    }
    for status in ("open", "approved"):
        with pytest.raises(IntegrityError), transaction.atomic():
            TransitionRequest.objects.create(status=status, **fields)
    TransitionRequest.objects.create(status="rejected", **fields)
    TransitionRequest.objects.create(status="withdrawn", **fields)


def test_a_cancelled_rollout_has_nothing_to_request(ready_rollout, users):
    rollout_services.rollout_cancel(rollout=ready_rollout, actor=users[ADMIN], reason="Dropped")
    with pytest.raises(InvalidTransition):
        request_next(ready_rollout, users)


# --- Deciding -------------------------------------------------------------------------------------


def test_the_last_required_approval_approves_the_request(canary_request, users):
    assert approver_config(canary_request.rollout)["canary"] == ("product-lead", "sre-lead")
    decide(canary_request, users["product-lead"], Role.PRODUCT_LEAD, comment="Go")
    canary_request.refresh_from_db()
    assert canary_request.status == "open"
    approval = decide(canary_request, users["sre-lead"], Role.SRE_LEAD, comment="")
    canary_request.refresh_from_db()
    assert canary_request.status == "approved" and canary_request.decided_at is not None
    assert (approval.requester_id, approval.approver_name) == (users[ADMIN].pk, "sre-lead")
    actions = list(AuditEvent.objects.order_by("-sequence").values_list("action", "reason", "actor_name")[:3])
    assert actions == [
        ("transition.approved", "Every required role approved", "sre-lead"),
        ("transition.approve", f"SRE lead approves request #{canary_request.pk}", "sre-lead"),
        ("transition.approve", "Go", "product-lead"),
    ]


def test_one_rejection_rejects_the_request(canary_request, users):
    decide(canary_request, users["product-lead"], Role.PRODUCT_LEAD)
    decide(canary_request, users["sre-lead"], Role.SRE_LEAD, Decision.REJECT, "Dashboards missing p99")
    canary_request.refresh_from_db()
    assert canary_request.status == "rejected"
    snap = Snapshot()
    with pytest.raises(RequestClosed):
        decide(canary_request, make_user("sre-2", Role.SRE_LEAD), Role.SRE_LEAD)
    with pytest.raises(RequestClosed):
        apply(canary_request, users)
    assert snap.unchanged()


@pytest.mark.parametrize(
    ("who", "role", "decision", "comment", "error"),
    [
        ("requester-with-role", Role.PRODUCT_LEAD, Decision.APPROVE, "", SelfApprovalForbidden),
        ("support-lead", Role.PRODUCT_LEAD, Decision.APPROVE, "", NotInRole),
        ("support-lead", Role.SUPPORT_LEAD, Decision.APPROVE, "", RoleNotRequired),
        ("auditor", Role.AUDITOR, Decision.APPROVE, "", RoleNotRequired),
        ("sre-lead", Role.SRE_LEAD, Decision.REJECT, " ", CommentRequired),
    ],
    ids=["self-approval", "not-in-role", "role-not-required", "non-lead-role", "reject-without-comment"],
)
def test_decision_rules_refuse_and_write_nothing(ready_rollout, users, who, role, decision, comment, error):
    if who == "requester-with-role":
        requester = make_user("admin-and-product", Role.ROLLOUT_ADMIN, Role.PRODUCT_LEAD)
        req = services.transition_request_create(rollout=ready_rollout, justification="x", actor=requester)
        actor = requester
    else:
        req = request_next(ready_rollout, users)
        actor = users[who]
    snap = Snapshot()
    with pytest.raises(error):
        decide(req, actor, role, decision, comment)
    assert snap.unchanged()


def test_one_decision_per_role(canary_request, users):
    decide(canary_request, users["product-lead"], Role.PRODUCT_LEAD)
    snap = Snapshot()
    with pytest.raises(RoleAlreadyDecided):
        decide(canary_request, make_user("product-2", Role.PRODUCT_LEAD), Role.PRODUCT_LEAD)
    assert snap.unchanged()


def test_one_person_fills_one_role_on_a_request(canary_request, users):
    both = make_user("two-hats", Role.PRODUCT_LEAD, Role.SRE_LEAD)
    decide(canary_request, both, Role.PRODUCT_LEAD)
    snap = Snapshot()
    with pytest.raises(OneRolePerPerson):
        decide(canary_request, both, Role.SRE_LEAD)
    assert snap.unchanged()


def test_the_database_refuses_self_approval_and_double_decisions(canary_request, users):
    fields = {"request": canary_request, "decision": "approve", "decided_at": timezone.now(), "approver_name": "x"}
    admin, product, sre = users[ADMIN], users["product-lead"], users["sre-lead"]
    with pytest.raises(IntegrityError), transaction.atomic():
        TransitionApproval.objects.create(role="product-lead", approver=admin, requester=admin, **fields)
    TransitionApproval.objects.create(role="product-lead", approver=product, requester=admin, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        TransitionApproval.objects.create(role="product-lead", approver=sre, requester=admin, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        TransitionApproval.objects.create(role="sre-lead", approver=product, requester=admin, **fields)


# --- Applying -------------------------------------------------------------------------------------


def test_apply_moves_the_rollout_into_canary_and_exposes_internal_tenants(approved_canary, users, tenants):
    before = AuditEvent.objects.count()
    applied = apply(approved_canary, users)
    assert (applied.status, applied.closed_by_name) == ("applied", "rollout-admin")
    rollout = approved_canary.rollout
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS
    assert rollout.phases.get(kind=PhaseKind.CANARY).status == PhaseStatus.ACTIVE
    assert rollout.phases.get(kind=PhaseKind.PREPARATION).status == PhaseStatus.COMPLETED
    on = set(FlagExposure.objects.filter(flag__rollout=rollout, enabled=True).values_list("flag__key", "tenant__name"))
    assert on == {
        ("react_loop", "Internal A"),
        ("react_loop", "Internal B"),
        ("multi_agent_runner", "Internal A"),
        ("multi_agent_runner", "Internal B"),
        ("critic_revision", "Internal A"),
        ("critic_revision", "Internal B"),
        ("voice_insights", "Internal A"),  # only where transcript ingestion is confirmed
    }
    entries = AuditEvent.objects.filter(sequence__gt=before).order_by("sequence")
    assert entries.last().action == "transition.apply"
    assert {e.actor_name for e in entries} == {"rollout-admin"}
    assert entries.filter(object_type="rollout.phase").count() == 2
    assert ledger.verify(ledger.database_records()).ok


def test_apply_twice_is_refused(approved_canary, users):
    apply(approved_canary, users)
    snap = Snapshot()
    with pytest.raises(AlreadyApplied):
        apply(approved_canary, users)
    assert snap.unchanged()


def test_apply_needs_every_approval(canary_request, users):
    decide(canary_request, users["product-lead"], Role.PRODUCT_LEAD)
    snap = Snapshot()
    with pytest.raises(RequestNotApproved, match="SRE lead"):
        apply(canary_request, users)
    assert snap.unchanged()


def test_apply_needs_the_apply_permission(approved_canary, users):
    with pytest.raises(ActionNotAllowed):
        services.transition_apply(request=approved_canary, actor=users["product-lead"])


def test_apply_rechecks_the_gates(approved_canary, users):
    item = approved_canary.rollout.checklist_items.filter(kind=ChecklistKind.READINESS).first()
    rollout_services.checklist_item_untick(item=item, actor=users[ADMIN], reason="Dashboards were wrong")
    snap = Snapshot()
    with pytest.raises(GateNotMet) as caught:
        apply(approved_canary, users)
    assert [g.key for g in caught.value.gates] == ["readiness"]
    assert "readiness 11/12" in caught.value.message
    assert snap.unchanged()
    assert approved_canary.rollout.phases.get(kind=PhaseKind.CANARY).status == PhaseStatus.PENDING


def test_a_superseded_sign_off_blocks_apply(approved_canary, users):
    rollout_services.rollout_update_plan(
        rollout=approved_canary.rollout, actor=users[ADMIN], reason="Longer soak", canary_soak_hours=72
    )
    with pytest.raises(GateNotMet, match=r"plan signed 0/4"):
        apply(approved_canary, users)


def test_withdraw(canary_request, users):
    services.transition_withdraw(request=canary_request, actor=users[ADMIN], reason="Postponed")
    canary_request.refresh_from_db()
    assert (canary_request.status, canary_request.close_reason) == ("withdrawn", "Postponed")
    with pytest.raises(RequestClosed):
        services.transition_withdraw(request=canary_request, actor=users[ADMIN], reason="again")
    with pytest.raises(CommentRequired):
        services.transition_withdraw(request=canary_request, actor=users[ADMIN], reason="")
    with pytest.raises(ActionNotAllowed):
        services.transition_withdraw(request=canary_request, actor=users["auditor"], reason="x")


# --- Gates after canary ---------------------------------------------------------------------------


def _in_canary(rollout, users, hours_ago: float):
    advance_to(rollout, PhaseKind.CANARY, users[ADMIN])
    Phase.objects.filter(rollout=rollout, kind=PhaseKind.CANARY).update(
        entered_at=timezone.now() - dt.timedelta(hours=hours_ago)
    )
    return rollout


def test_limited_beta_gates(rollout, users):
    _in_canary(rollout, users, hours_ago=31.5)
    soak = gate(rollout, PhaseKind.LIMITED_BETA, "canary_soak")
    assert (soak.passed, soak.detail) == (False, "canary soak 31 h of 48 h")
    _in_canary(rollout, users, hours_ago=48.01)
    gates = {g.key: g for g in gates_for(rollout, PhaseKind.LIMITED_BETA)}
    assert [k for k, g in gates.items() if not g.passed] == []
    assert gates["no_open_incident"].detail == "0 open incidents"


def test_an_automatic_rollback_in_canary_fails_the_trigger_and_incident_gates(rollout, users):
    _in_canary(rollout, users, hours_ago=50)
    rollout_services.rollout_rollback(
        rollout=rollout, actor=None, reason="Guardrail breached twice", kind=IncidentKind.AUTOMATIC, trigger="guardrail"
    )
    gates = {g.key: g for g in gates_for(rollout, PhaseKind.LIMITED_BETA)}
    assert not gates["state"].passed
    assert (gates["no_open_incident"].passed, gates["no_open_incident"].detail) == (False, "1 open incident")
    assert not gates["no_trigger_in_canary"].passed
    assert gates["no_trigger_in_canary"].detail.startswith("1 trigger fired since canary was entered")
    # Resuming re-enters canary: the soak and the trigger history start again from there.
    rollout_services.rollout_resume(rollout=rollout, actor=users[ADMIN], reason="Fixed the planner")
    gates = {g.key: g for g in gates_for(rollout, PhaseKind.LIMITED_BETA)}
    assert gates["state"].passed and gates["no_trigger_in_canary"].passed
    assert gates["canary_soak"].detail == "canary soak 0 h of 48 h"


def _runs(rollout, n, *, first=0, passing=True):
    phase = rollout.phases.get(kind=PhaseKind.LIMITED_BETA)
    start = timezone.now() - dt.timedelta(days=1)
    for i in range(first, first + n):
        EvaluationRun.objects.create(
            run_id=f"{rollout.slug}-lb-{i}",
            rollout=rollout,
            phase=phase,
            arm=Arm.CANDIDATE,
            started_at=start + dt.timedelta(hours=i),
            finished_at=start + dt.timedelta(hours=i, minutes=30),
            conversations=100,
            guardrail_compensations=1,
            harness_version="1.0",
            task_success_rate=0.9 if passing else 0.5,
            guardrail_compensation_rate=0.01,
            latency_p95_ms=1500,
            cost_per_conversation_usd=0.05,
            tool_call_accuracy=0.95,
            critic_revision_rate=0.1,
            content_hash="0" * 64,
        )


def test_ga_gate_counts_consecutive_passing_runs_and_apply_enforces_guardrails(rollout, users, tenants):
    # Entered two days ago: the runs (from a day ago) lie in the limited-beta period, the only ones the gate counts.
    advance_to(rollout, PhaseKind.LIMITED_BETA, users[ADMIN], at=timezone.now() - dt.timedelta(days=2))
    _runs(rollout, 3)
    streak = gate(rollout, PhaseKind.GENERAL_AVAILABILITY, "success_streak")
    assert (streak.passed, streak.detail) == (False, "3 of 5 consecutive passing runs")
    _runs(rollout, 2, first=3)
    req = request_next(rollout, users)
    assert req.target == "general_availability"
    approve(req, users)
    apply(req, users)
    ga = rollout.phases.get(kind=PhaseKind.GENERAL_AVAILABILITY)
    assert (ga.status, ga.guardrail_mode) == (PhaseStatus.ACTIVE, GuardrailMode.ENFORCE)
    general = FlagExposure.objects.filter(
        flag__rollout=rollout, flag__key=FlagKey.MULTI_AGENT_RUNNER, enabled=True, tenant__name__startswith="General"
    )
    assert general.count() == 2


def test_completion_needs_the_exit_criteria(rollout, users):
    advance_to(rollout, PhaseKind.GENERAL_AVAILABILITY, users[ADMIN])
    exit_gate = gate(rollout, "completed", "exit")
    assert (exit_gate.passed, exit_gate.detail) == (False, "exit criteria 0/4")
    req = approve(request_next(rollout, users), users)
    with pytest.raises(GateNotMet, match="exit criteria 0/4"):
        apply(req, users)
    for item in rollout.checklist_items.filter(kind=ChecklistKind.EXIT):
        rollout_services.checklist_item_tick(item=item, actor=users[ADMIN], evidence_url="https://e.example.com/x")
    apply(req, users)
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.COMPLETED


# --- Approving roles ------------------------------------------------------------------------------


def test_changing_approving_roles_voids_open_decisions(approved_canary, users):
    rollout = approved_canary.rollout
    services.approvers_set(
        rollout=rollout,
        roles_by_target={"canary": ["product-lead", "compliance-lead"]},
        actor=users[ADMIN],
        reason="Compliance wants a say on canary",
    )
    assert approver_config(rollout)["canary"] == ("product-lead", "compliance-lead")
    approved_canary.refresh_from_db()
    assert approved_canary.status == "open"
    voided = TransitionApproval.objects.filter(request=approved_canary)
    assert voided.count() == 2 and all(a.voided_at and a.void_reason.startswith("Approving roles") for a in voided)
    with pytest.raises(RequestNotApproved):
        apply(approved_canary, users)
    # The same product lead decides again; compliance now too.
    decide(approved_canary, users["product-lead"], Role.PRODUCT_LEAD)
    decide(approved_canary, users["compliance-lead"], Role.COMPLIANCE_LEAD)
    approved_canary.refresh_from_db()
    assert approved_canary.status == "approved"
    actions = list(AuditEvent.objects.filter(rollout_id=rollout.pk).values_list("action", flat=True))
    assert actions.count("transition.approval_void") == 2
    assert actions.count("transition.reopen") == 1
    assert actions.count("approvers.add") == 2


def test_changing_another_transition_keeps_decisions(canary_request, users):
    decide(canary_request, users["product-lead"], Role.PRODUCT_LEAD)
    services.approvers_set(
        rollout=canary_request.rollout,
        roles_by_target={"completed": ["compliance-lead"]},
        actor=users[ADMIN],
        reason="Compliance alone closes",
    )
    assert TransitionApproval.objects.filter(request=canary_request, voided_at__isnull=True).count() == 1


def test_setting_the_same_roles_writes_nothing(canary_request, users):
    snap = Snapshot()
    services.approvers_set(
        rollout=canary_request.rollout,
        roles_by_target={"canary": ["sre-lead", "product-lead"]},
        actor=users[ADMIN],
        reason="no change",
    )
    assert snap.unchanged()


@pytest.mark.parametrize(
    ("roles", "error"),
    [
        ({"canary": []}, InvalidApprovers),
        ({"canary": ["auditor"]}, InvalidApprovers),
        ({"prod": ["sre-lead"]}, InvalidApprovers),
    ],
    ids=["empty", "not-a-lead", "unknown-transition"],
)
def test_approving_roles_are_validated(canary_request, users, roles, error):
    snap = Snapshot()
    with pytest.raises(error):
        services.approvers_set(rollout=canary_request.rollout, roles_by_target=roles, actor=users[ADMIN], reason="x")
    with pytest.raises(ActionNotAllowed):
        services.approvers_set(
            rollout=canary_request.rollout,
            roles_by_target={"canary": ["sre-lead"]},
            actor=users["sre-lead"],
            reason="x",
        )
    assert snap.unchanged()


# --- Races on PostgreSQL --------------------------------------------------------------------------


@pytest.mark.postgres
@threaded
def test_twenty_racing_applies_apply_once(rollout, users):
    from tests.factories import complete_readiness

    complete_readiness(rollout, users[ADMIN])
    sign_all(rollout, users)
    req = approve(request_next(rollout, users), users)
    admins = [users[ADMIN], *(make_user(f"admin-{i}", Role.ROLLOUT_ADMIN) for i in range(19))]
    before = AuditEvent.objects.count()

    results = run_threads(20, lambda i: services.transition_apply(request=req, actor=admins[i]))

    applied = [r for r in results if isinstance(r, TransitionRequest)]
    refused = [r for r in results if isinstance(r, AlreadyApplied)]
    assert (len(applied), len(refused)) == (1, 19), results
    req.refresh_from_db()
    assert req.status == "applied"
    canary = rollout.phases.get(kind=PhaseKind.CANARY)
    assert canary.status == PhaseStatus.ACTIVE
    assert canary.history.filter(status=PhaseStatus.ACTIVE).count() == 1  # entered once
    new = AuditEvent.objects.filter(sequence__gt=before)
    assert new.filter(action="transition.apply").count() == 1
    assert ledger.verify(ledger.database_records()).ok


@pytest.mark.postgres
@threaded
def test_twenty_racing_approvals_for_one_role_record_one(rollout, users):
    from tests.factories import complete_readiness

    complete_readiness(rollout, users[ADMIN])
    sign_all(rollout, users)
    req = request_next(rollout, users)
    leads = [users["product-lead"], *(make_user(f"product-{i}", Role.PRODUCT_LEAD) for i in range(19))]

    results = run_threads(20, lambda i: decide(req, leads[i], Role.PRODUCT_LEAD))

    assert sum(isinstance(r, TransitionApproval) for r in results) == 1, results
    assert sum(isinstance(r, RoleAlreadyDecided) for r in results) == 19
    assert TransitionApproval.objects.filter(request=req).count() == 1
    assert ledger.verify(ledger.database_records()).ok


@pytest.mark.postgres
@threaded
def test_twenty_racing_requests_open_one(rollout, users):
    admins = [users[ADMIN], *(make_user(f"admin-{i}", Role.ROLLOUT_ADMIN) for i in range(19))]

    results = run_threads(
        20, lambda i: services.transition_request_create(rollout=rollout, justification=f"#{i}", actor=admins[i])
    )

    assert sum(isinstance(r, TransitionRequest) for r in results) == 1, results
    assert sum(isinstance(r, RequestAlreadyOpen) for r in results) == 19
    assert TransitionRequest.objects.filter(rollout=rollout).count() == 1
