"""Issue 9, seam 2: a rollback (by a trigger or by hand) withdraws every open or approved request of the rollout."""

from __future__ import annotations

import pytest
from django.utils import timezone

from evaluations.services import evaluate_triggers, ingest_runs
from governance import services
from governance.models import AuditEvent, RequestStatus, TransitionRequest
from governance.selectors import my_work, rollout_governance
from rollout.models import IncidentKind
from rollout.roles import Role
from rollout.services import rollout_rollback
from tests.evaluations.conftest import run

from .helpers import approve

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_canary(approved_canary, users):
    services.transition_apply(request=approved_canary, actor=users[Role.ROLLOUT_ADMIN])
    return approved_canary.rollout


def _beta_request(rollout, users, *, approved: bool) -> TransitionRequest:
    request = services.transition_request_create(
        rollout=rollout, justification="Canary healthy so far.", actor=users[Role.ROLLOUT_ADMIN]
    )
    return approve(request, users) if approved else request


def test_a_trigger_rollback_withdraws_the_approved_request_with_a_ledger_entry_and_a_note(in_canary, users):
    request = _beta_request(in_canary, users, approved=True)
    assert request.status == RequestStatus.APPROVED
    assert [r.pk for r in my_work(users[Role.ROLLOUT_ADMIN]).to_apply] == [request.pk]

    now = timezone.now()
    ingest_runs(payload={"runs": [run(in_canary.slug, guardrail_compensations=6, finished=now) for _ in range(2)]})
    firing = evaluate_triggers(rollout_id=in_canary.pk)
    assert firing is not None

    request.refresh_from_db()
    incident = firing.incident
    note = (
        f"Withdrawn by the rollback of Canary (internal QA) (incident #{incident.pk}: {incident.title}). "
        "A rollback voids every pending transition request; request again once the incident is closed."
    )
    assert (request.status, request.close_reason, request.closed_by_name) == (
        RequestStatus.WITHDRAWN,
        note,
        "automatic rollback",
    )
    entries = list(AuditEvent.objects.filter(action="transition.withdraw", object_id=str(request.pk)))
    assert [(e.reason, e.actor_kind, e.rollout_id) for e in entries] == [(note, "system", in_canary.pk)]
    # Out of "My work", no Apply button on the rollout page.
    assert my_work(users[Role.ROLLOUT_ADMIN]).to_apply == []
    assert rollout_governance(in_canary).pending is None


def test_a_manual_rollback_withdraws_an_open_request_and_names_who_rolled_back(in_canary, users):
    request = _beta_request(in_canary, users, approved=False)
    sre = users[Role.SRE_LEAD]
    incident = rollout_rollback(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="Refund loop seen")
    assert incident.kind == IncidentKind.MANUAL
    request.refresh_from_db()
    assert request.status == RequestStatus.WITHDRAWN
    assert request.closed_by_name == "rollout-admin"
    assert f"incident #{incident.pk}" in request.close_reason
    assert AuditEvent.objects.filter(action="transition.withdraw", object_id=str(request.pk)).count() == 1
    assert my_work(sre).decisions == []


def test_a_rollback_leaves_closed_requests_alone(in_canary, users, approved_canary):
    rejected = _beta_request(in_canary, users, approved=False)
    services.transition_decide(
        request=rejected, role=Role.PRODUCT_LEAD, decision="reject", comment="Not yet", actor=users[Role.PRODUCT_LEAD]
    )
    rollout_rollback(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="Refund loop seen")
    statuses = dict(TransitionRequest.objects.filter(rollout=in_canary).values_list("pk", "status"))
    assert statuses == {approved_canary.pk: RequestStatus.APPLIED, rejected.pk: RequestStatus.REJECTED}
    assert not AuditEvent.objects.filter(action="transition.withdraw").exists()


def test_cancelling_withdraws_the_open_request_and_leaves_closed_ones_alone(in_canary, users, approved_canary):
    """Found by the journeys: cancelling kept the open request (and it stayed in the leads' "My work")."""
    from rollout.services import rollout_cancel

    request = _beta_request(in_canary, users, approved=False)
    assert [r.pk for r, _roles in my_work(users[Role.SRE_LEAD]).decisions] == [request.pk]
    rollout_cancel(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="Product dropped")
    statuses = dict(TransitionRequest.objects.filter(rollout=in_canary).values_list("pk", "status"))
    assert statuses == {approved_canary.pk: RequestStatus.APPLIED, request.pk: RequestStatus.WITHDRAWN}
    request.refresh_from_db()
    assert request.close_reason.startswith("Withdrawn because the rollout was cancelled (Product dropped).")
    entries = AuditEvent.objects.filter(action="transition.withdraw")
    assert [(e.object_id, e.actor_name) for e in entries] == [(str(request.pk), "rollout-admin")]
    assert my_work(users[Role.SRE_LEAD]).decisions == []
