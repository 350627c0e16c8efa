"""Issue 9, seam 3: after a rollback the rollout comes back through a governed re-entry request."""

from __future__ import annotations

import pytest
from django.utils import timezone

from evaluations.services import evaluate_triggers, ingest_runs
from governance import services
from governance.errors import GateNotMet, RequestClosed
from governance.models import RequestKind, RequestStatus
from governance.selectors import gates_for, rollout_governance
from rollout import services as rollout_services
from rollout.models import FlagExposure, FlagKey, IncidentStatus, PhasePeriod, PhaseStatus, RolloutStatus
from rollout.roles import Role
from tests.evaluations.conftest import run

from .helpers import approve, sign_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def rolled_back(approved_canary, users):
    """In canary through the governed path, then rolled back by the guardrail trigger."""
    services.transition_apply(request=approved_canary, actor=users[Role.ROLLOUT_ADMIN])
    rollout = approved_canary.rollout
    now = timezone.now()
    ingest_runs(payload={"runs": [run(rollout.slug, guardrail_compensations=6, finished=now) for _ in range(2)]})
    firing = evaluate_triggers(rollout_id=rollout.pk)
    assert firing is not None
    rollout.refresh_from_db()
    return rollout


def _close_incident(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    incident = rollout.incidents.get(status=IncidentStatus.OPEN)
    for step in incident.steps.filter(done_at__isnull=True):
        rollout_services.incident_tick_step(step=step, actor=admin)
    return rollout_services.incident_close(
        incident=incident, actor=admin, retrospective="The planner looped on refunds."
    )


def _flags(rollout, key) -> dict[str, bool]:
    return dict(
        FlagExposure.objects.filter(flag__rollout=rollout, flag__key=key).values_list("tenant__name", "enabled")
    )


def _failing(rollout, target="canary") -> list[str]:
    return [g.key for g in gates_for(rollout, target, kind=RequestKind.REENTRY) if not g.passed]


def test_after_a_rollback_the_next_step_is_a_re_entry_request_with_its_own_gates(rolled_back, users):
    gov = rollout_governance(rolled_back)
    assert (gov.next_target, gov.next_kind, gov.next_step_label) == (
        "canary",
        RequestKind.REENTRY,
        "re-entry into Canary (internal QA)",
    )
    assert [g.key for g in gov.next_gates] == ["state", "incident_closed", "retrospective", "sign_off"]
    assert _failing(rolled_back) == ["incident_closed", "retrospective"]
    _close_incident(rolled_back, users)
    assert _failing(rolled_back) == []


def test_re_entry_is_requested_approved_by_the_canary_roles_applied_and_brings_the_flags_back(rolled_back, users):
    admin = users[Role.ROLLOUT_ADMIN]
    assert _flags(rolled_back, FlagKey.AGENT_V1_FALLBACK) == {"Internal A": True, "Internal B": True}
    request = services.transition_request_create(
        rollout=rolled_back, justification="Planner prompt fixed and verified offline.", actor=admin
    )
    assert (request.kind, request.from_phase, request.target, request.step_label) == (
        RequestKind.REENTRY,
        "canary",
        "canary",
        "re-entry into Canary (internal QA)",
    )
    approve(request, users)  # the roles that approve entering canary: product and SRE leads
    assert set(request.approvals.values_list("role", flat=True)) == {"product-lead", "sre-lead"}
    with pytest.raises(GateNotMet) as refused:
        services.transition_apply(request=request, actor=admin)
    assert [g.key for g in refused.value.gates] == ["incident_closed", "retrospective"]
    incident = _close_incident(rolled_back, users)

    services.transition_apply(request=request, actor=admin)
    request.refresh_from_db()
    rolled_back.refresh_from_db()
    canary = rolled_back.phases.get(kind="canary")
    assert (request.status, rolled_back.status, canary.status) == (
        RequestStatus.APPLIED,
        RolloutStatus.IN_PROGRESS,
        PhaseStatus.ACTIVE,
    )
    periods = list(PhasePeriod.objects.filter(phase=canary).order_by("ordinal"))
    assert [(p.ordinal, p.ended) for p in periods] == [(1, "rolled_back"), (2, "")]
    assert canary.entered_at == periods[1].entered_at > incident.closed_at
    assert _flags(rolled_back, FlagKey.AGENT_V1_FALLBACK) == {"Internal A": False, "Internal B": False}
    assert _flags(rolled_back, FlagKey.REACT_LOOP) == {"Internal A": True, "Internal B": True}
    # The soak and the "no trigger in canary" gate count from the new entry only.
    beta = {g.key: g for g in gates_for(rolled_back, "limited_beta")}
    assert beta["canary_soak"].detail == f"canary soak 0 h of {rolled_back.canary_soak_hours} h"
    assert beta["no_trigger_in_canary"].passed, beta["no_trigger_in_canary"].detail
    gov = rollout_governance(rolled_back)
    assert (gov.next_target, gov.next_kind) == ("limited_beta", RequestKind.ADVANCE)


def test_re_entry_needs_the_plan_signed_at_its_current_version(rolled_back, users):
    admin = users[Role.ROLLOUT_ADMIN]
    _close_incident(rolled_back, users)
    rollout_services.rollout_update_plan(
        rollout=rolled_back, actor=admin, reason="Stricter SLA after the incident", latency_sla_ms=1800
    )
    assert _failing(rolled_back) == ["sign_off"]
    request = approve(
        services.transition_request_create(rollout=rolled_back, justification="Fixed.", actor=admin), users
    )
    with pytest.raises(GateNotMet):
        services.transition_apply(request=request, actor=admin)
    sign_all(rolled_back, users)
    services.transition_apply(request=request, actor=admin)
    assert rolled_back.phases.get(kind="canary").status == PhaseStatus.ACTIVE


def test_a_rolled_back_rollout_can_still_be_cancelled(rolled_back, users):
    request = services.transition_request_create(
        rollout=rolled_back, justification="Fixed.", actor=users[Role.ROLLOUT_ADMIN]
    )
    rollout_services.rollout_cancel(rollout=rolled_back, actor=users[Role.ROLLOUT_ADMIN], reason="Superseded")
    rolled_back.refresh_from_db()
    assert rolled_back.status == RolloutStatus.CANCELLED
    assert rollout_governance(rolled_back).next_target is None
    # The re-entry request went with it (withdrawn, with its note), so nothing can apply it any more.
    request.refresh_from_db()
    assert request.status == RequestStatus.WITHDRAWN
    with pytest.raises(RequestClosed):
        approve(request, users)
    assert _failing(rolled_back)[0] == "state"


def test_the_rollout_page_offers_re_entry_and_shows_each_period(rolled_back, users, client_for):
    client = client_for(Role.ROLLOUT_ADMIN)
    html = client.get(f"/rollouts/{rolled_back.slug}/").content.decode()
    assert "Next step: re-entry into Canary (internal QA)" in html
    assert "Request re-entry into Canary (internal QA)…" in html
    assert "No next step" not in html
    listing = client.get(f"/rollouts/{rolled_back.slug}/transitions/").content.decode()
    assert "Request re-entry into Canary (internal QA)…</a>" in listing and "Request next phase" not in listing
    form = client.get(f"/rollouts/{rolled_back.slug}/transitions/new/").content.decode()
    assert "Request re-entry into Canary (internal QA)" in form
    assert "<title>Request re-entry · " in form and "Request next phase" not in form
    response = client.post(
        f"/rollouts/{rolled_back.slug}/transitions/new/",
        {"target": "canary", "justification": "Prompt fixed."},
        follow=True,
    )
    request = rolled_back.transition_requests.get(kind=RequestKind.REENTRY)
    assert response.redirect_chain == [(request.get_absolute_url(), 302)]
    detail = response.content.decode()
    assert "Re-entry into Canary (internal QA)" in detail
    assert "Requested the re-entry into Canary (internal QA)." in detail
    _close_incident(rolled_back, users)
    approve(request, users)
    services.transition_apply(request=request, actor=users[Role.ROLLOUT_ADMIN])
    html = client.get(f"/rollouts/{rolled_back.slug}/").content.decode()
    timeline = html[html.index('data-kind="canary"') :]
    timeline = timeline[: timeline.index("Guardrails:")]
    assert timeline.count("data-period=") == 2
    assert "Entered " in timeline and "rolled back " in timeline and "Re-entered " in timeline


def test_the_api_names_the_re_entry_as_the_next_step(rolled_back, api):
    body = api.get(f"/api/v1/rollouts/{rolled_back.slug}/").json()
    assert (body["next_step"], body["next_step_kind"]) == ("canary", "reentry")
    assert [(g["key"], g["passed"]) for g in body["gates"]] == [
        ("state", True),
        ("incident_closed", False),
        ("retrospective", False),
        ("sign_off", True),
    ]


def test_the_transitions_list_labels_a_re_entry_request(rolled_back, users, client_for):
    """Found by the journeys: the list read "Canary (internal QA) → Canary (internal QA)", no word of re-entry."""
    request = services.transition_request_create(
        rollout=rolled_back, justification="Prompt fixed.", actor=users[Role.ROLLOUT_ADMIN]
    )
    html = client_for(Role.AUDITOR).get(f"/rollouts/{rolled_back.slug}/transitions/").content.decode()
    row = html[html.index(f'data-request="{request.pk}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-kind="reentry"' in row
    assert "Re-entry into <strong>Canary (internal QA)</strong>" in row
    first = rolled_back.transition_requests.get(kind=RequestKind.ADVANCE, target="canary")
    advance = html[html.index(f'data-request="{first.pk}"') :]
    advance = advance[: advance.index("</tr>")]
    assert 'data-kind="advance"' in advance and "Re-entry" not in advance
    assert "→ <strong>Canary (internal QA)</strong>" in advance


def test_cancelling_withdraws_the_pending_request_with_a_ledger_entry_and_a_note(rolled_back, users):
    """Found by the journeys: a cancelled rollout kept its approved re-entry request (Approved, Apply…)."""
    from governance.models import AuditEvent
    from governance.selectors import my_work

    admin = users[Role.ROLLOUT_ADMIN]
    request = approve(
        services.transition_request_create(rollout=rolled_back, justification="Fixed.", actor=admin), users
    )
    assert request.status == RequestStatus.APPROVED
    rollout_services.rollout_cancel(rollout=rolled_back, actor=admin, reason="Superseded by the v2 planner")
    request.refresh_from_db()
    note = (
        "Withdrawn because the rollout was cancelled (Superseded by the v2 planner). "
        "A cancelled rollout takes no more transitions."
    )
    assert (request.status, request.close_reason, request.closed_by_name) == (
        RequestStatus.WITHDRAWN,
        note,
        "rollout-admin",
    )
    assert request.closed_at is not None
    entries = AuditEvent.objects.filter(
        action="transition.withdraw", object_type="governance.transitionrequest", object_id=str(request.pk)
    )
    assert [(e.reason, e.actor_name, e.rollout_id) for e in entries] == [(note, "rollout-admin", rolled_back.pk)]
    assert my_work(admin).to_apply == []
    assert rollout_governance(rolled_back).pending is None
