"""Plan sign-off: who signs, what a plan version is, and superseded sign-offs not counting."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluations.models import SuccessCriterion
from governance import services
from governance.errors import InvalidDecision, NotInRole, OneRolePerPerson, RoleAlreadyDecided, RolloutClosed
from governance.models import AuditEvent, Decision, PlanSignOff
from governance.selectors import gates_for, plan_hash, sign_off_state
from rollout import services as rollout_services
from rollout.history import save_tracked
from rollout.models import Cohort, CohortKind, PhaseKind, Tenant
from rollout.roles import Role
from tests.conftest import make_user
from tests.factories import complete_readiness

from .helpers import Snapshot, sign_all

pytestmark = pytest.mark.django_db


def sign(rollout, user, role, decision=Decision.APPROVE, comment=""):
    return services.plan_sign_off(rollout=rollout, role=role, decision=decision, comment=comment, actor=user)


def sign_off_gate(rollout):
    return next(g for g in gates_for(rollout, PhaseKind.CANARY) if g.key == "sign_off")


def test_a_sign_off_records_signer_role_decision_comment_time_and_plan_version(rollout, users):
    before = timezone.now()
    s = sign(
        rollout, users[Role.SUPPORT_LEAD], Role.SUPPORT_LEAD, Decision.REJECT, "Escalation matrix lacks a SEV1 email"
    )
    s.refresh_from_db()
    assert (s.role, s.decision, s.signer, s.signer_name) == (
        "support-lead",
        "reject",
        users[Role.SUPPORT_LEAD],
        "support-lead",
    )
    assert s.comment == "Escalation matrix lacks a SEV1 email"
    assert s.plan_hash == plan_hash(rollout) and len(s.plan_hash) == 64
    assert before <= s.signed_at <= timezone.now()
    assert s.superseded_at is None
    entry = AuditEvent.objects.order_by("-sequence").first()
    assert (entry.action, entry.object_type, entry.object_id) == ("signoff.reject", "governance.plansignoff", str(s.pk))
    assert (entry.actor_kind, entry.actor_name, entry.actor_user_id) == ("user", "support-lead", s.signer_id)
    assert entry.reason == "Escalation matrix lacks a SEV1 email"
    assert entry.rollout_id == rollout.pk
    assert entry.after["plan_hash"] == s.plan_hash


def test_the_gate_counts_approvals_of_the_current_version(rollout, users):
    sign(rollout, users[Role.PRODUCT_LEAD], Role.PRODUCT_LEAD)
    sign(rollout, users[Role.SRE_LEAD], Role.SRE_LEAD)
    sign(rollout, users[Role.SUPPORT_LEAD], Role.SUPPORT_LEAD, Decision.REJECT, "not yet")
    gate = sign_off_gate(rollout)
    assert not gate.passed
    assert gate.detail == f"plan signed 2/4 (version {plan_hash(rollout)[:12]}); rejected by Support lead"
    sign(rollout, users[Role.COMPLIANCE_LEAD], Role.COMPLIANCE_LEAD)
    assert sign_off_gate(rollout).detail.startswith("plan signed 3/4")


def test_all_four_leads_pass_the_gate(rollout, users):
    sign_all(rollout, users)
    gate = sign_off_gate(rollout)
    assert gate.passed and gate.detail.startswith("plan signed 4/4")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r, u: sign(r, u[Role.ROLLOUT_ADMIN], Role.PRODUCT_LEAD), NotInRole),
        (lambda r, u: sign(r, u[Role.AUDITOR], Role.AUDITOR), NotInRole),
        (lambda r, u: sign(r, u[Role.SRE_LEAD], Role.PRODUCT_LEAD), NotInRole),
        (lambda r, u: sign(r, u[Role.SRE_LEAD], Role.SRE_LEAD, Decision.REJECT, "  "), services.CommentRequired),
        (lambda r, u: sign(r, u[Role.SRE_LEAD], Role.SRE_LEAD, "maybe"), InvalidDecision),
    ],
    ids=["not-a-member", "not-a-lead-role", "another-role", "reject-without-comment", "unknown-decision"],
)
def test_sign_off_rules_refuse_with_a_named_error_and_write_nothing(rollout, users, call, error):
    snap = Snapshot()
    with pytest.raises(error):
        call(rollout, users)
    assert snap.unchanged()


def test_one_decision_per_role_per_version(rollout, users):
    sign(rollout, users[Role.PRODUCT_LEAD], Role.PRODUCT_LEAD)
    other = make_user("product-lead-2", Role.PRODUCT_LEAD)
    snap = Snapshot()
    with pytest.raises(RoleAlreadyDecided, match="Product lead already approved"):
        sign(rollout, other, Role.PRODUCT_LEAD)
    assert snap.unchanged()


def test_one_person_signs_in_one_role(rollout, users):
    both = make_user("two-hats", Role.PRODUCT_LEAD, Role.SRE_LEAD)
    sign(rollout, both, Role.PRODUCT_LEAD)
    snap = Snapshot()
    with pytest.raises(OneRolePerPerson):
        sign(rollout, both, Role.SRE_LEAD)
    assert snap.unchanged()


def test_a_closed_rollout_is_not_signed(rollout, users):
    rollout_services.rollout_cancel(rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="Superseded by v2")
    snap = Snapshot()
    with pytest.raises(RolloutClosed):
        sign(rollout, users[Role.SRE_LEAD], Role.SRE_LEAD)
    assert snap.unchanged()


def test_the_database_holds_one_current_sign_off_per_role_and_per_person(rollout, users):
    base = {"rollout": rollout, "decision": "approve", "plan_hash": "a" * 64, "signed_at": timezone.now()}
    PlanSignOff.objects.create(role="sre-lead", signer=users["sre-lead"], signer_name="sre-lead", **base)
    with pytest.raises(IntegrityError), transaction.atomic():
        PlanSignOff.objects.create(role="sre-lead", signer=users["product-lead"], signer_name="x", **base)
    with pytest.raises(IntegrityError), transaction.atomic():
        PlanSignOff.objects.create(role="product-lead", signer=users["sre-lead"], signer_name="x", **base)
    with pytest.raises(IntegrityError), transaction.atomic():
        PlanSignOff.objects.create(role="auditor", signer=users["auditor"], signer_name="x", **base)
    # Superseded rows do not take the slot.
    PlanSignOff.objects.filter(role="sre-lead").update(superseded_at=timezone.now())
    PlanSignOff.objects.create(role="sre-lead", signer=users["sre-lead"], signer_name="sre-lead", **base)


# --- Plan versions ------------------------------------------------------------------------------------------


def _change_thresholds(rollout, users):
    rollout_services.rollout_update_plan(
        rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="Tighter SLA", latency_sla_ms=1800
    )


def _change_guardrail(rollout, users):
    rollout_services.rollout_update_plan(
        rollout=rollout,
        actor=users[Role.ROLLOUT_ADMIN],
        reason="Stricter guardrail",
        guardrail_compensation_threshold=Decimal("0.04"),
    )


def _change_calendar(rollout, users):
    canary = rollout.phases.get(kind=PhaseKind.CANARY)
    rollout_services.rollout_update_plan(
        rollout=rollout,
        actor=users[Role.ROLLOUT_ADMIN],
        reason="Canary a day later",
        planned_starts={PhaseKind.CANARY: canary.planned_start + dt.timedelta(days=1)},
    )


def _change_cohort(rollout, users):
    internal = rollout.cohorts.get(kind=CohortKind.INTERNAL)
    rollout_services.cohort_set_tenants(
        cohort=internal,
        tenants=[Tenant.objects.get(name="Internal A")],
        actor=users[Role.ROLLOUT_ADMIN],
        reason="Internal B is not ready",
    )


def _change_escalation(rollout, users):
    rows = [rollout_services.EscalationRow("sev1", "SRE on-call", "Incident commander", "Pager")]
    rollout_services.escalation_matrix_replace(
        rollout=rollout, rows=rows, actor=users[Role.ROLLOUT_ADMIN], reason="One contact"
    )


def _change_criterion_quietly(rollout, users):
    # The evaluations app sends plan_changed; this checks the version even without it.
    criterion = SuccessCriterion.objects.get(rollout=rollout, metric="task_success_rate")
    criterion.threshold = 0.9
    save_tracked(criterion, actor=users[Role.ROLLOUT_ADMIN], reason="Raise the bar")


@pytest.mark.parametrize(
    "change",
    [_change_thresholds, _change_guardrail, _change_calendar, _change_cohort, _change_escalation],
    ids=["sla", "guardrail", "calendar", "cohort-members", "escalation-matrix"],
)
def test_a_plan_change_supersedes_sign_offs_which_stop_counting(rollout, users, change):
    sign_all(rollout, users)
    old = plan_hash(rollout)
    assert sign_off_gate(rollout).passed
    change(rollout, users)
    new = plan_hash(rollout)
    assert new != old
    signoffs = list(PlanSignOff.objects.filter(rollout=rollout))
    assert len(signoffs) == 4  # kept
    assert all(s.superseded_at is not None and s.superseded_by_hash == new and s.plan_hash == old for s in signoffs)
    gate = sign_off_gate(rollout)
    assert not gate.passed
    assert gate.detail.startswith("plan signed 0/4")
    state = sign_off_state(rollout)
    assert state.current == {} and len(state.superseded) == 4
    supersede_entries = AuditEvent.objects.filter(action="signoff.supersede", rollout_id=rollout.pk)
    assert supersede_entries.count() == 4
    assert all(e.actor_name == "rollout-admin" and e.reason.startswith("Plan changed: ") for e in supersede_entries)
    # The same leads may sign the new version.
    sign(rollout, users[Role.SRE_LEAD], Role.SRE_LEAD)
    assert sign_off_gate(rollout).detail.startswith("plan signed 1/4")


def test_a_success_criterion_change_voids_sign_offs_even_without_the_signal(rollout, users):
    sign_all(rollout, users)
    _change_criterion_quietly(rollout, users)
    assert not sign_off_gate(rollout).passed
    assert sign_off_state(rollout).current == {}
    # The next sign-off marks the stale ones superseded before recording itself.
    sign(rollout, users[Role.SRE_LEAD], Role.SRE_LEAD)
    assert PlanSignOff.objects.filter(rollout=rollout, superseded_at__isnull=False).count() == 4
    assert PlanSignOff.objects.filter(rollout=rollout, superseded_at__isnull=True).get().role == "sre-lead"


def test_changes_outside_the_plan_keep_the_version(rollout, users):
    old = plan_hash(rollout)
    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    rollout_services.kill_switch_set(rollout=rollout, on=True, actor=users[Role.ROLLOUT_ADMIN], reason="drill")
    # Saving the plan unchanged is no new version either.
    rollout_services.rollout_update_plan(
        rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="no-op", latency_sla_ms=rollout.latency_sla_ms
    )
    assert plan_hash(rollout) == old


def test_the_version_does_not_depend_on_how_a_decimal_was_written(rollout, users):
    old = plan_hash(rollout)
    rollout.guardrail_compensation_threshold = Decimal("0.05")  # in memory only; the hash reads the database
    assert plan_hash(rollout) == old
    assert Cohort.objects.filter(rollout=rollout).count() == 3


@pytest.mark.parametrize(
    "change",
    [None, _change_thresholds, _change_guardrail, _change_calendar, _change_cohort, _change_escalation],
    ids=["as-created", "sla", "guardrail", "calendar", "cohort-members", "escalation-matrix"],
)
def test_the_rollout_page_hashes_the_plan_it_loaded_as_a_fresh_read_does(rollout, users, change, tenants):
    """The page's selector prefetches phases, cohorts, escalation contacts and success criteria; the plan content
    built from them (one query, the members) equals the six-query read a service makes, so sign-offs count on the
    page exactly as in the gates."""
    from governance.selectors import plan_content
    from rollout.models import EscalationContact, Severity
    from rollout.selectors import rollout_detail

    # More than one contact per severity, out of order, so that the matrix's order is what is compared.
    for severity, order, contact in [(Severity.SEV2, 2, "b@example.com"), (Severity.SEV2, 1, "a@example.com")]:
        EscalationContact.objects.create(
            rollout=rollout, severity=severity, order=order, contact=contact, role="x", channel="Pager"
        )
    if change is not None:
        sign_all(rollout, users)
        change(rollout, users)
    loaded = rollout_detail(rollout.slug).rollout
    fresh = type(rollout).objects.get(pk=rollout.pk)
    content = plan_content(fresh)
    assert content["cohorts"] and content["escalation_matrix"] and content["success_criteria"]
    assert plan_content(loaded) == content
    assert plan_hash(loaded) == plan_hash(fresh)
