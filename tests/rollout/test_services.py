"""The rollout core's services: the playbook template, flags and the voice rule, checklists, plan, comms."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from evaluations.models import SuccessCriterion
from rollout import services
from rollout.errors import (
    ActionNotAllowed,
    ChecklistItemStateError,
    CohortOverlap,
    InvalidPlan,
    VoiceIngestionNotConfirmed,
)
from rollout.models import (
    ChecklistItem,
    Cohort,
    CommunicationKind,
    FlagExposure,
    FlagKey,
    PhaseKind,
    Rollout,
)
from rollout.roles import Role
from rollout.signals import plan_changed
from tests.factories import advance_to


def test_create_from_playbook_lays_down_everything_in_one_go(users, tenants):
    admin = users[Role.ROLLOUT_ADMIN]
    rollout = services.rollout_create_from_playbook(
        name="ReAct + multi-agent", owner=admin, start_date=dt.date(2026, 12, 1), expected_impacts="Faster."
    )
    assert rollout.slug == "react-multi-agent"
    assert rollout.status == "draft"
    assert list(rollout.phases.values_list("kind", "status", "planned_start")) == [
        ("preparation", "active", dt.date(2026, 12, 1)),
        ("canary", "pending", dt.date(2026, 12, 15)),
        ("limited_beta", "pending", dt.date(2026, 12, 22)),
        ("general_availability", "pending", dt.date(2027, 1, 12)),
    ]
    readiness = rollout.checklist_items.filter(kind="readiness")
    assert readiness.count() == 12
    assert set(readiness.values_list("key", flat=True)) >= {
        "migrations-skill-workflows",
        "migrations-conversation-reflections",
        "migrations-telemetry-tables",
        "flag-voice-insights",
        "runbooks-published",
        "dashboards-published",
        "alert-routing-latency",
        "alert-routing-cost",
        "alert-routing-guardrail",
    }
    assert rollout.checklist_items.filter(kind="exit").count() == 4
    assert sorted(rollout.flags.values_list("key", flat=True)) == sorted(FlagKey.values)
    assert not FlagExposure.objects.filter(flag__rollout=rollout).exists()
    members = {
        kind: set(Cohort.objects.get(rollout=rollout, kind=kind).memberships.values_list("tenant__name", flat=True))
        for kind in ("internal", "beta", "general")
    }
    assert members == {
        "internal": {"Internal A", "Internal B"},
        "beta": {"Beta A", "Beta B"},
        "general": {"General A", "General B"},
    }
    assert rollout.guardrail_compensation_threshold == Decimal("0.0500")
    assert (rollout.guardrail_breach_runs, rollout.latency_breach_intervals, rollout.canary_soak_hours) == (2, 3, 48)
    assert rollout.ga_consecutive_runs == 5
    assert rollout.escalation_contacts.count() == 5
    assert dict(SuccessCriterion.objects.filter(rollout=rollout).values_list("metric", "comparator")) == {
        "task_success_rate": "gte",
        "guardrail_compensation_rate": "lte",
        "latency_p95_ms": "lte",
        "cost_per_conversation_usd": "lte",
        "tool_call_accuracy": "gte",
        "critic_revision_rate": "lte",
    }
    # History says who and why.
    record = rollout.history.get()
    assert record.history_user == admin
    assert record.history_change_reason == "Created from the playbook template"


def test_create_is_all_or_nothing(users, tenants, monkeypatch):
    # The last step fails (NOT NULL channel): nothing before it may remain.
    monkeypatch.setattr("rollout.playbook.DEFAULT_ESCALATION_MATRIX", (("sev1", "x", "y", None),))
    with pytest.raises(Exception):  # noqa: B017 - any failure must roll back everything
        services.rollout_create_from_playbook(name="Half", owner=users[Role.ROLLOUT_ADMIN])
    assert not Rollout.objects.filter(name="Half").exists()
    assert not ChecklistItem.objects.exists()


def test_create_needs_the_permission_and_a_free_slug(users, tenants):
    with pytest.raises(ActionNotAllowed):
        services.rollout_create_from_playbook(name="Nope", owner=users[Role.AUDITOR])
    services.rollout_create_from_playbook(name="Same", owner=users[Role.ROLLOUT_ADMIN])
    second = services.rollout_create_from_playbook(name="Same", owner=users[Role.ROLLOUT_ADMIN])
    assert second.slug == "same-2"
    with pytest.raises(InvalidPlan, match="taken"):
        services.rollout_create_from_playbook(name="Other", slug="same", owner=users[Role.ROLLOUT_ADMIN])
    with pytest.raises(InvalidPlan, match="needs a name"):
        services.rollout_create_from_playbook(name="   ", owner=users[Role.ROLLOUT_ADMIN])


def test_voice_insights_refused_for_tenants_without_confirmed_ingestion(rollout, users, tenants):
    admin = users[Role.ROLLOUT_ADMIN]
    voice = rollout.flags.get(key=FlagKey.VOICE_INSIGHTS)
    with pytest.raises(VoiceIngestionNotConfirmed) as excinfo:
        services.flag_set_exposure(
            flag=voice, tenants=[tenants["Beta A"], tenants["Beta B"]], enabled=True, actor=admin, reason="beta"
        )
    assert excinfo.value.message == (
        "Voice insights can only be exposed to tenants with confirmed transcript ingestion; not confirmed: Beta B."
    )
    assert not FlagExposure.objects.filter(flag=voice).exists()  # nothing half-written
    assert services.flag_set_exposure(flag=voice, tenants=[tenants["Beta A"]], enabled=True, actor=admin, reason="ok")
    assert list(FlagExposure.objects.filter(flag=voice, enabled=True).values_list("tenant__name", flat=True)) == [
        "Beta A"
    ]
    # Other flags are not restricted; turning voice *off* for anyone is always allowed.
    react = rollout.flags.get(key=FlagKey.REACT_LOOP)
    assert services.flag_set_exposure(flag=react, tenants=[tenants["Beta B"]], enabled=True, actor=admin, reason="x")
    assert services.flag_set_exposure(flag=voice, tenants=[tenants["Beta A"]], enabled=False, actor=admin, reason="y")


def test_withdrawing_transcript_ingestion_turns_voice_off(rollout, users, tenants):
    admin = users[Role.ROLLOUT_ADMIN]
    advance_to(rollout, PhaseKind.CANARY, admin)
    voice = FlagExposure.objects.get(flag__rollout=rollout, flag__key=FlagKey.VOICE_INSIGHTS, tenant__name="Internal A")
    assert voice.enabled
    tenant = tenants["Internal A"]
    tenant.transcript_ingestion_confirmed = False
    services.tenant_save(tenant=tenant, actor=admin, reason="ingestion path broken")
    voice.refresh_from_db()
    assert not voice.enabled
    assert voice.history.first().history_change_reason == "Transcript ingestion withdrawn: ingestion path broken"


def test_kill_switch_is_break_glass_with_a_reason(rollout, users, tenants):
    admin = users[Role.ROLLOUT_ADMIN]
    with pytest.raises(InvalidPlan, match="needs a reason"):
        services.kill_switch_set(rollout=rollout, on=True, actor=admin, reason=" ")
    with pytest.raises(ActionNotAllowed):
        services.kill_switch_set(rollout=rollout, on=True, actor=users[Role.PRODUCT_LEAD], reason="stop")
    assert services.kill_switch_set(rollout=rollout, on=True, actor=admin, reason="critical regression") == 6
    fallback = FlagExposure.objects.filter(flag__rollout=rollout, flag__key=FlagKey.AGENT_V1_FALLBACK)
    assert fallback.filter(enabled=True).count() == 6
    record = fallback.first().history.first()
    assert (record.history_user, record.history_change_reason) == (admin, "critical regression")
    assert services.kill_switch_set(rollout=rollout, on=True, actor=admin, reason="again") == 0  # nothing changes
    assert services.kill_switch_set(rollout=rollout, on=False, actor=admin, reason="fixed") == 6
    assert not fallback.filter(enabled=True).exists()
    with pytest.raises(InvalidPlan, match="kill switch"):
        services.flag_set_exposure(
            flag=rollout.flags.get(key=FlagKey.AGENT_V1_FALLBACK),
            tenants=list(tenants.values()),
            enabled=True,
            actor=admin,
            reason="sneaky",
        )


def test_checklist_tick_needs_evidence_and_records_who(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    item = rollout.checklist_items.get(key="runbooks-published")
    with pytest.raises(ChecklistItemStateError, match="evidence"):
        services.checklist_item_tick(item=item, actor=admin, evidence_url="")
    with pytest.raises(ActionNotAllowed):
        services.checklist_item_tick(item=item, actor=users[Role.AUDITOR], evidence_url="https://x.example.com")
    services.checklist_item_tick(item=item, actor=admin, evidence_url="https://wiki.example.com/runbooks")
    item.refresh_from_db()
    assert (item.completed_by, item.evidence_url) == (admin, "https://wiki.example.com/runbooks")
    assert item.completed_at is not None
    with pytest.raises(ChecklistItemStateError, match="already ticked"):
        services.checklist_item_tick(item=item, actor=admin, evidence_url="https://other.example.com")
    services.checklist_item_untick(item=item, actor=admin, reason="runbook withdrawn")
    item.refresh_from_db()
    assert item.completed_at is None and item.completed_by is None


def test_cohorts_hold_a_tenant_once_per_rollout(rollout, users, tenants):
    admin = users[Role.ROLLOUT_ADMIN]
    beta = rollout.cohorts.get(kind="beta")
    with pytest.raises(CohortOverlap, match=r"General A \(All other tenants\)"):
        services.cohort_set_tenants(
            cohort=beta, tenants=[tenants["Beta A"], tenants["General A"]], actor=admin, reason="x"
        )
    assert set(beta.memberships.values_list("tenant__name", flat=True)) == {"Beta A", "Beta B"}
    received = []
    plan_changed.connect(lambda **kw: received.append(kw["rollout"].pk), weak=False, dispatch_uid="t-cohort")
    try:
        services.cohort_set_tenants(cohort=beta, tenants=[tenants["Beta A"]], actor=admin, reason="Beta B paused")
    finally:
        plan_changed.disconnect(dispatch_uid="t-cohort")
    assert set(beta.memberships.values_list("tenant__name", flat=True)) == {"Beta A"}
    assert received == [rollout.pk]


def test_plan_update_validates_the_calendar_and_announces_the_change(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    with pytest.raises(InvalidPlan, match="follow the phase order"):
        services.rollout_update_plan(
            rollout=rollout,
            actor=admin,
            reason="oops",
            planned_starts={"canary": dt.date(2030, 1, 1), "limited_beta": dt.date(2029, 1, 1)},
        )
    with pytest.raises(InvalidPlan, match="Not part of the plan"):
        services.rollout_update_plan(rollout=rollout, actor=admin, reason="x", name="Renamed")
    received = []
    plan_changed.connect(lambda **kw: received.append(kw["reason"]), weak=False, dispatch_uid="t-plan")
    try:
        services.rollout_update_plan(rollout=rollout, actor=admin, reason="tighter SLA", latency_sla_ms=1500)
        services.rollout_update_plan(rollout=rollout, actor=admin, reason="no-op", latency_sla_ms=1500)
    finally:
        plan_changed.disconnect(dispatch_uid="t-plan")
    rollout.refresh_from_db()
    assert rollout.latency_sla_ms == 1500
    assert received == ["tighter SLA"]


def test_prelaunch_draft_holds_calendar_impacts_and_escalation_matrix(users, tenants):
    from rollout.selectors import prelaunch_draft

    rollout = services.rollout_create_from_playbook(
        name="Launch", owner=users[Role.ROLLOUT_ADMIN], start_date=dt.date(2027, 3, 1), expected_impacts="Brief blips."
    )
    title, body = prelaunch_draft(rollout)
    assert title == "Pre-launch announcement: Launch"
    assert "| Canary (internal QA) | 2027-03-15 |" in body
    assert "Brief blips." in body
    assert "| SEV1 (critical) | SRE on-call | Incident commander | Pager, then #ai-assistant-triage |" in body


def test_communications_drafts_are_editable_until_published(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    comm = services.communication_create(
        rollout=rollout, kind=CommunicationKind.STATUS_UPDATE, title="Day 1", body="All good", actor=admin
    )
    assert comm.is_draft
    services.communication_update(communication=comm, title="Day 1", body="All good, really", actor=admin)
    services.communication_publish(communication=comm, actor=admin)
    with pytest.raises(InvalidPlan, match="cannot be edited"):
        services.communication_update(communication=comm, title="Edited", body="later", actor=admin)
    with pytest.raises(InvalidPlan, match="Retrospectives"):
        services.communication_create(
            rollout=rollout, kind=CommunicationKind.RETROSPECTIVE, title="r", body="b", actor=admin
        )


def test_markdown_is_rendered_safely():
    from rollout.templatetags.rollout_tags import render_markdown

    html = render_markdown("**bold** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>")
    assert "<strong>bold</strong>" in html
    assert "<script" not in html and "onerror" not in html and "javascript:" not in html


def test_phase_feedback_only_once_a_phase_started(rollout, users):
    support = users[Role.SUPPORT_LEAD]
    canary = rollout.phases.get(kind=PhaseKind.CANARY)
    with pytest.raises(InvalidPlan, match="once a phase has started"):
        services.phase_feedback_add(phase=canary, actor=support, severity="low", text="early")
    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])
    canary.refresh_from_db()
    feedback = services.phase_feedback_add(phase=canary, actor=support, severity="high", text="Loops on refunds")
    assert (feedback.author, feedback.severity) == (support, "high")
    with pytest.raises(ActionNotAllowed):
        services.phase_feedback_add(phase=canary, actor=users[Role.AUDITOR], severity="low", text="x")
