"""A governed write (an approval with its history and its ledger entry) in few round trips, with the same
rows, locks and chain as before."""

from __future__ import annotations

import pytest
from django.db import transaction

from governance import ledger, services
from governance.models import AuditEvent, Decision, TransitionApproval, TransitionRequest
from governance.selectors import approver_config
from rollout.models import Rollout
from rollout.roles import Role

pytestmark = pytest.mark.django_db


def _fields(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_the_decision_reads_are_what_the_separate_querysets_give(canary_request, users):
    services.transition_decide(
        request=canary_request,
        role=Role.PRODUCT_LEAD,
        decision=Decision.APPROVE,
        comment="ok",
        actor=users[Role.PRODUCT_LEAD],
    )
    request = canary_request
    with transaction.atomic():
        rollouts, requests, approvals, roles = services._decide_reads(
            [request.rollout_id], [request.pk], [request.pk], [request.rollout_id]
        )
    assert [_fields(r) for r in rollouts] == [_fields(Rollout.objects.get(pk=request.rollout_id))]
    assert [_fields(r) for r in requests] == [_fields(TransitionRequest.objects.get(pk=request.pk))]
    expected = TransitionApproval.objects.filter(request=request, voided_at__isnull=True)
    assert [_fields(a) for a in approvals] == [_fields(a) for a in expected] and len(approvals) == 1
    assert services.approver_config_from(roles) == approver_config(Rollout.objects.get(pk=request.rollout_id))
    assert all(not r._state.adding and r._state.db == "default" for r in [*rollouts, *requests, *approvals])


def test_a_governed_approval_is_seven_statements(canary_request, users, django_assert_num_queries):
    # Inside the test's transaction: a savepoint, the locks and reads (one round trip), the approval, its
    # historical record, the ledger lock with the chain's head (one round trip), the entry, the release.
    before = AuditEvent.objects.order_by("-sequence").first()
    with django_assert_num_queries(7):
        approval = services.transition_decide(
            request=canary_request,
            role=Role.PRODUCT_LEAD,
            decision=Decision.APPROVE,
            comment="Looks right.",
            actor=users[Role.PRODUCT_LEAD],
        )
    entry = AuditEvent.objects.order_by("-sequence").first()
    assert (entry.sequence, entry.prev_hash) == (before.sequence + 1, before.hash)
    assert (entry.action, entry.object_id, entry.reason) == ("transition.approve", str(approval.pk), "Looks right.")
    history = TransitionApproval.history.get(id=approval.pk)
    assert (history.history_type, history.history_user, history.history_change_reason) == (
        "+",
        users[Role.PRODUCT_LEAD],
        "Looks right.",
    )
    assert ledger.verify(ledger.database_records()).ok
