"""Issue 9 seam 4: every decision form carries the version it showed; a changed one is refused and writes nothing."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from governance import services
from governance.errors import StaleVersion
from governance.models import Decision, PlanSignOff, RequestStatus, TransitionApproval
from governance.selectors import plan_hash, request_version, transition_view
from rollout import services as rollout_services
from rollout.models import PhaseKind
from rollout.roles import Role

from .helpers import Snapshot, approve

pytestmark = pytest.mark.django_db
ADMIN = Role.ROLLOUT_ADMIN


def last_message(response) -> str:
    return [str(m) for m in get_messages(response.wsgi_request)][-1]


def test_a_sign_off_on_a_plan_version_changed_since_is_refused_and_writes_nothing(rollout, users, client_for):
    client = client_for(Role.SUPPORT_LEAD)
    page = client.get(rollout.get_absolute_url()).content.decode()
    seen = plan_hash(rollout)
    assert f'<input type="hidden" name="version" value="{seen}">' in page
    # A rollout admin changes the SLA while the lead reads the plan.
    rollout_services.rollout_update_plan(rollout=rollout, actor=users[ADMIN], reason="Tighter", latency_sla_ms=900)
    now = plan_hash(rollout)
    assert now != seen
    snapshot = Snapshot()
    response = client.post(
        f"/rollouts/{rollout.slug}/sign-off/", {"role": "support-lead", "decision": "approve", "version": seen}
    )
    assert response.status_code == 302
    assert last_message(response) == (
        f"The plan changed since you loaded it: you saw version {seen[:12]}…, it is now {now[:12]}…. "
        "Nothing was recorded; read the current plan and sign again."
    )
    assert snapshot.unchanged() and not PlanSignOff.objects.exists()
    # The page then shows the new version, and signing it works.
    assert f'value="{now}"' in client.get(rollout.get_absolute_url()).content.decode()
    response = client.post(
        f"/rollouts/{rollout.slug}/sign-off/", {"role": "support-lead", "decision": "approve", "version": now}
    )
    assert PlanSignOff.objects.get().plan_hash == now


def test_the_service_names_the_stale_plan_version(rollout, users):
    with pytest.raises(StaleVersion) as caught:
        services.plan_sign_off(
            rollout=rollout,
            role=Role.SRE_LEAD,
            decision=Decision.APPROVE,
            comment="",
            actor=users["sre-lead"],
            version="4bd69cad" + "0" * 56,
        )
    assert (caught.value.code, caught.value.status, caught.value.current) == ("stale-version", 409, plan_hash(rollout))


def test_a_decision_on_a_request_whose_decisions_were_voided_since_is_refused(canary_request, users, client_for):
    client = client_for(Role.SRE_LEAD)
    url = canary_request.get_absolute_url()
    seen = transition_view(canary_request).version
    assert f'name="version" value="{seen}"' in client.get(url).content.decode()
    services.transition_decide(
        request=canary_request, role="product-lead", decision="approve", comment="", actor=users["product-lead"]
    )
    snapshot = Snapshot()
    response = client.post(f"{url}decide/", {"role": "sre-lead", "decision": "approve", "version": seen})
    canary_request.refresh_from_db()
    current = transition_view(canary_request).version
    assert last_message(response) == (
        f"Request #{canary_request.pk} changed since you loaded it (now open, 1 approval(s) in force; "
        f"version {current[:12]}…, you saw {seen[:12]}…). Nothing was recorded; review it again."
    )
    assert snapshot.unchanged()
    assert not TransitionApproval.objects.filter(role="sre-lead").exists()
    response = client.post(f"{url}decide/", {"role": "sre-lead", "decision": "approve", "version": current})
    assert last_message(response) == "Recorded: SRE lead approves."


def test_an_apply_of_a_request_reopened_since_the_page_loaded_is_refused(approved_canary, users, client_for):
    client = client_for(ADMIN)
    apply_url = f"{approved_canary.get_absolute_url()}apply/"
    seen = transition_view(approved_canary).version
    page = client.get(apply_url).content.decode()
    assert (
        f'name="version" value="{seen}"' in page
        and "disabled" not in page.split('data-action="confirm-apply"')[0][-80:]
    )
    # The approving roles change: decisions voided, the request reopened, then approved again by others.
    services.approvers_set(
        rollout=approved_canary.rollout,
        roles_by_target={"canary": ["product-lead", "compliance-lead"]},
        actor=users[ADMIN],
        reason="Compliance must see this one",
    )
    approve(approved_canary, users)
    assert approved_canary.status == RequestStatus.APPROVED
    current = transition_view(approved_canary).version
    assert current != seen
    snapshot = Snapshot()
    response = client.post(apply_url, {"note": "Go", "version": seen})
    assert response["Location"] == apply_url
    assert last_message(response).startswith(f"Request #{approved_canary.pk} changed since you loaded it (now approved")
    assert snapshot.unchanged()
    approved_canary.refresh_from_db()
    assert approved_canary.status == RequestStatus.APPROVED
    assert approved_canary.rollout.phases.get(kind=PhaseKind.CANARY).status == "pending"
    assert f'value="{current}"' in client.get(apply_url).content.decode()
    response = client.post(apply_url, {"note": "Go", "version": current})
    approved_canary.refresh_from_db()
    assert approved_canary.status == RequestStatus.APPLIED


def test_request_version_changes_with_status_and_decisions(canary_request, users):
    v0 = request_version(canary_request, [])
    approval = services.transition_decide(
        request=canary_request, role="product-lead", decision="approve", comment="", actor=users["product-lead"]
    )
    assert request_version(canary_request, [approval]) != v0
    assert request_version(canary_request, [approval]) == transition_view(canary_request).version
