"""Governance demo data: the main rollout enters canary through the real process, and work is left waiting.

``enter_canary`` is handed to ``rollout.demo.seed_demo``: the four leads sign
the plan, the rollout admin requests canary, the product and SRE leads approve,
and the admin applies. ``seed_governance`` then leaves an open limited-beta
request and half-signed second plan so "My work" has content, and
``seed_compliance`` gives the compliance pages something to show. Idempotent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from rollout.demo import MAIN_SLUG, SECOND_SLUG, SeedResult
from rollout.models import PhaseKind, Rollout
from rollout.roles import Role

from . import jobs, records, reports, retention, reviews, services
from .models import (
    AuditEvent,
    ChangeStatus,
    Decision,
    Job,
    JobRun,
    JobTrigger,
    LegalHold,
    PlanSignOff,
    RecordChange,
    ScheduledReview,
    TransitionRequest,
)

# Above this many ledger entries seed_demo does not verify the chain itself (see seed_compliance).
DEMO_VERIFY_MAX_ENTRIES = 10_000

SIGN_OFF_COMMENTS = {
    Role.PRODUCT_LEAD: "Success criteria and calendar match what we agreed with customers.",
    Role.SUPPORT_LEAD: "Escalation matrix and support contacts confirmed.",
    Role.COMPLIANCE_LEAD: "Data-processing records updated for the new telemetry fields.",
    Role.SRE_LEAD: "SLA thresholds and rollback triggers reviewed; dashboards and alerts in place.",
}


def _sign(rollout: Rollout, users: dict, roles, at: datetime | None = None) -> None:
    for n, role in enumerate(roles):
        services.plan_sign_off(
            rollout=rollout,
            role=role,
            decision=Decision.APPROVE,
            comment=SIGN_OFF_COMMENTS[role],
            actor=users[role],
            now=at - timedelta(hours=8 - n) if at else None,
        )


def enter_canary(rollout: Rollout, users: dict, at: datetime) -> None:
    """Sign-offs by the four leads, then a transition request approved by product and SRE and applied at ``at``.

    Each step is dated in the hours before ``at``, so the ledger's story reads in order."""
    _sign(rollout, users, (Role.PRODUCT_LEAD, Role.SUPPORT_LEAD, Role.COMPLIANCE_LEAD, Role.SRE_LEAD), at=at)
    admin = users[Role.ROLLOUT_ADMIN]
    request = services.transition_request_create(
        rollout=rollout,
        justification="Readiness checklist complete, plan signed by all four leads, pre-launch announcement sent.",
        actor=admin,
        now=at - timedelta(hours=3),
    )
    for hours, (role, comment) in enumerate(
        ((Role.PRODUCT_LEAD, "Go for internal QA."), (Role.SRE_LEAD, "On-call briefed; dashboards green.")), start=1
    ):
        services.transition_decide(
            request=request,
            role=role,
            decision=Decision.APPROVE,
            comment=comment,
            actor=users[role],
            now=at - timedelta(hours=3 - hours),
        )
    services.transition_apply(request=request, actor=admin, reason="Demo: canary started", now=at)


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


# --- Compliance (issue 5) -----------------------------------------------------------------------------------------

TELEMETRY_CONFIRMED = {
    "run_metric:task_success_rate": "Aggregate ratio, no personal data.",
    "run_metric:latency_p95_ms": "Aggregate latency, no personal data.",
    "run_output:transcript_excerpt": "Covered by DPIA-14: excerpts only, purged after the retention period.",
}


def seed_compliance(users: dict, result: SeedResult) -> None:
    """Records with some changes decided, reviews (one overdue, one completed), a week of daily delta reports,
    a legal hold on the second rollout, and one run of the ledger verification and of a retention dry run."""
    reviewer = users[Role.COMPLIANCE_REVIEWER]
    if not RecordChange.objects.exists():
        records.update_compliance_records(now=timezone.now() + records.SETTLE)
        for change in RecordChange.objects.filter(status=ChangeStatus.PENDING, subject__in=TELEMETRY_CONFIRMED):
            records.change_decide(
                change=change, confirm=True, comment=TELEMETRY_CONFIRMED[change.subject], actor=reviewer
            )
        result.created.append("data-processing records with pending changes")
    if not ScheduledReview.objects.exists():
        today = timezone.now().date()
        reviews.check_scheduled_reviews(today=today - timedelta(days=14))
        reviews.check_scheduled_reviews(today=today)
        done = ScheduledReview.objects.filter(kind="weekly_evaluation").order_by("period_start").first()
        reviews.review_complete(
            review=done,
            actor=users[Role.PRODUCT_LEAD],
            notes="Reflection data reviewed with the evaluation team; candidate ahead on task success.",
            tool_scoring_adjustments="orders.lookup weight 0.40 -> 0.35; payments.refund 0.20 -> 0.25",
        )
        result.created.append("scheduled reviews (one overdue)")
    main = Rollout.objects.filter(slug=MAIN_SLUG).first()
    if main is not None and not main.daily_delta_reports.exists():
        today = timezone.now().date()
        for days in range(6, 0, -1):
            reports.generate_daily_delta_reports(report_date=today - timedelta(days=days))
        result.created.append("daily delta reports of the last 6 days")
    second = Rollout.objects.filter(slug=SECOND_SLUG).first()
    if second is not None and not LegalHold.objects.filter(rollout=second).exists():
        retention.legal_hold_place(
            rollout=second, reason="Customer audit request CA-2291: keep all evaluation outputs.", actor=reviewer
        )
        result.created.append(f"legal hold on {SECOND_SLUG}")
    if not JobRun.objects.filter(trigger=JobTrigger.COMMAND).exists():
        # The demo shows one verification; on a ledger that is already big (a restored or benchmark database) that
        # would be a full scan at every first start, so it is left to the nightly job there.
        if not AuditEvent.objects.filter(sequence__gt=DEMO_VERIFY_MAX_ENTRIES).exists():
            jobs.run_job(Job.VERIFY_AUDIT_LOG, trigger=JobTrigger.COMMAND, requested_by_name="seed_demo")
        jobs.run_job(
            Job.ENFORCE_RETENTION, trigger=JobTrigger.COMMAND, options={"dry_run": True}, requested_by_name="seed_demo"
        )
        result.created.append("a ledger verification and a retention dry run")
