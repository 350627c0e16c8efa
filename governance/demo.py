"""Governance demo data: the main rollout enters canary through the real process, and work is left waiting.

``enter_canary`` is handed to ``rollout.demo.seed_demo``: the four leads sign
the plan, the rollout admin requests canary, the product and SRE leads approve,
and the admin applies. ``seed_governance`` then leaves an open limited-beta
request and half-signed second plan so "My work" has content. Idempotent.
"""

from __future__ import annotations

from rollout.demo import MAIN_SLUG, SECOND_SLUG, SeedResult
from rollout.models import PhaseKind, Rollout
from rollout.roles import Role

from . import services
from .models import Decision, PlanSignOff, TransitionRequest

SIGN_OFF_COMMENTS = {
    Role.PRODUCT_LEAD: "Success criteria and calendar match what we agreed with customers.",
    Role.SUPPORT_LEAD: "Escalation matrix and support contacts confirmed.",
    Role.COMPLIANCE_LEAD: "Data-processing records updated for the new telemetry fields.",
    Role.SRE_LEAD: "SLA thresholds and rollback triggers reviewed; dashboards and alerts in place.",
}


def _sign(rollout: Rollout, users: dict, roles) -> None:
    for role in roles:
        services.plan_sign_off(
            rollout=rollout,
            role=role,
            decision=Decision.APPROVE,
            comment=SIGN_OFF_COMMENTS[role],
            actor=users[role],
        )


def enter_canary(rollout: Rollout, users: dict) -> None:
    """Sign-offs by the four leads, then a transition request approved by product and SRE and applied."""
    _sign(rollout, users, (Role.PRODUCT_LEAD, Role.SUPPORT_LEAD, Role.COMPLIANCE_LEAD, Role.SRE_LEAD))
    admin = users[Role.ROLLOUT_ADMIN]
    request = services.transition_request_create(
        rollout=rollout,
        justification="Readiness checklist complete, plan signed by all four leads, pre-launch announcement sent.",
        actor=admin,
    )
    for role, comment in (
        (Role.PRODUCT_LEAD, "Go for internal QA."),
        (Role.SRE_LEAD, "On-call briefed; dashboards green."),
    ):
        services.transition_decide(
            request=request, role=role, decision=Decision.APPROVE, comment=comment, actor=users[role]
        )
    services.transition_apply(request=request, actor=admin, reason="Demo: canary started")


def seed_governance(users: dict, result: SeedResult) -> None:
    main = Rollout.objects.filter(slug=MAIN_SLUG).first()
    if main is not None and not TransitionRequest.objects.filter(rollout=main, target=PhaseKind.LIMITED_BETA).exists():
        request = services.transition_request_create(
            rollout=main,
            justification=(
                "Canary metrics look healthy so far; requesting limited beta now so approvals are ready "
                "when the 48 h soak completes."
            ),
            actor=users[Role.ROLLOUT_ADMIN],
        )
        services.transition_decide(
            request=request,
            role=Role.PRODUCT_LEAD,
            decision=Decision.APPROVE,
            comment="Beta customers and account managers are lined up.",
            actor=users[Role.PRODUCT_LEAD],
        )
        result.created.append(f"open limited-beta request on {MAIN_SLUG}")
    second = Rollout.objects.filter(slug=SECOND_SLUG).first()
    if second is not None and not PlanSignOff.objects.filter(rollout=second).exists():
        _sign(second, users, (Role.PRODUCT_LEAD, Role.SRE_LEAD))
        result.created.append(f"plan of {SECOND_SLUG} signed by 2 of 4 leads")
