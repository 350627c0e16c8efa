"""Scheduled reviews (playbook section 6): created for each period once by a daily check, completed by their role.

Periods are UTC calendar periods: ISO weeks (Monday to Monday), months and
quarters. A review is due when its period ends and is overdue after that while
open. The daily check creates the review of the current period of each kind,
and any period missed since the last one it created (a check that did not run
for a while); the unique constraint on (kind, period start) makes every period
get exactly one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from rollout.errors import ActionNotAllowed, DomainError
from rollout.history import actor_name, save_tracked
from rollout.roles import Role, has_role, require_perm

from .jobs import Outcome
from .models import AuditEvent, JobRun, ReviewKind, ReviewStatus, ScheduledReview

# The most periods one check backfills (a year of weeks).
MAX_BACKFILL = 60


@dataclass(frozen=True)
class ReviewSpec:
    kind: str
    period: str  # "week", "month" or "quarter"
    role: str
    what: str


REVIEW_SPECS: dict[str, ReviewSpec] = {
    spec.kind: spec
    for spec in (
        ReviewSpec(
            ReviewKind.WEEKLY_EVALUATION,
            "week",
            Role.PRODUCT_LEAD,
            "Review the evaluation dashboards and adjust tool-scoring weights based on reflection data.",
        ),
        ReviewSpec(
            ReviewKind.MONTHLY_GUARDRAIL_DRILL,
            "month",
            Role.SRE_LEAD,
            "Run a guardrail scenario drill and check that compensations execute as designed.",
        ),
        ReviewSpec(
            ReviewKind.QUARTERLY_SECURITY_PRIVACY,
            "quarter",
            Role.COMPLIANCE_LEAD,
            "Reassess the risk posture and update the RBAC policies.",
        ),
    )
}
ROLE_LABELS: dict[str, str] = {r.value: r.label for r in Role}
# Auditors change nothing (design section 1), so no review is assigned to them.
ASSIGNABLE_ROLES: tuple[str, ...] = tuple(r.value for r in Role if r != Role.AUDITOR)


class ReviewClosed(DomainError):
    code = "review-closed"
    status = 409
    title = "The review is already completed"


class DutiesNotSegregated(DomainError):
    """Segregation of duties: one person does not both hand a review to a role and complete it."""

    code = "duties-not-segregated"
    status = 403
    title = "Whoever reassigns a review neither takes it nor completes it"


class InvalidReview(DomainError):
    code = "invalid-review"
    status = 422
    title = "The review cannot be completed like this"


# --- Periods ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: dt.date
    end: dt.date  # exclusive
    label: str

    @property
    def due_at(self) -> dt.datetime:
        return dt.datetime.combine(self.end, dt.time.min, tzinfo=dt.UTC)


def period_of(kind: str, day: dt.date) -> Period:
    """The period of ``kind`` that contains ``day`` (a UTC date)."""
    period = REVIEW_SPECS[kind].period
    if period == "week":
        start = day - dt.timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return Period(start, start + dt.timedelta(days=7), f"{year}-W{week:02d}")
    if period == "month":
        start = day.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
        return Period(start, end, f"{start:%Y-%m}")
    quarter = (day.month - 1) // 3
    start = dt.date(day.year, 3 * quarter + 1, 1)
    end = dt.date(day.year + 1, 1, 1) if quarter == 3 else dt.date(day.year, 3 * quarter + 4, 1)
    return Period(start, end, f"{day.year}-Q{quarter + 1}")


def periods_between(kind: str, after: dt.date | None, today: dt.date) -> list[Period]:
    """Periods of ``kind`` starting after ``after`` (or just the current one), up to the one containing ``today``."""
    current = period_of(kind, today)
    if after is None:
        return [current]
    periods: list[Period] = []
    period = period_of(kind, after)
    while period.start < current.start and len(periods) < MAX_BACKFILL:
        period = period_of(kind, period.end)
        periods.append(period)
    return periods[-MAX_BACKFILL:]


# --- The daily check --------------------------------------------------------------------------------------------------


def check_scheduled_reviews(*, today: dt.date | None = None) -> list[ScheduledReview]:
    """Create the reviews due to exist by ``today`` (UTC); returns the ones it created. Safe to run twice."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    created = []
    for kind, spec in REVIEW_SPECS.items():
        latest = ScheduledReview.objects.filter(kind=kind, period_start__lte=today).order_by("-period_start").first()
        for period in periods_between(kind, latest.period_start if latest else None, today):
            review = ScheduledReview(
                kind=kind,
                period_start=period.start,
                period_end=period.end,
                label=period.label,
                assigned_role=spec.role,
                due_at=period.due_at,
                created_at=timezone.now(),
            )
            try:
                with transaction.atomic():
                    save_tracked(review, action="review.create", actor=None, reason=f"Scheduled: {spec.what}")
            except IntegrityError:  # the constraint: this period already has its review
                continue
            created.append(review)
    return created


def run_check(run: JobRun) -> Outcome:
    today = run.scheduled_for.astimezone(dt.UTC).date()
    created = check_scheduled_reviews(today=today)
    overdue = ScheduledReview.objects.filter(status=ReviewStatus.OPEN, due_at__lte=timezone.now()).count()
    labels = [str(r) for r in created]
    return Outcome(
        summary=(f"Created {', '.join(labels)}" if labels else "Every period already has its reviews")
        + f"; {overdue} overdue.",
        result={"created": labels, "overdue": overdue},
    )


# --- Completing and reassigning ---------------------------------------------------------------------------------------


@transaction.atomic
def review_complete(
    *,
    review: ScheduledReview,
    actor: Any,
    notes: str,
    tool_scoring_adjustments: str = "",
    compensations_as_designed: bool | None = None,
    rbac_changes: str = "",
) -> ScheduledReview:
    """A member of the assigned role completes the review with notes and the kind's own answer."""
    review = ScheduledReview.objects.select_for_update().get(pk=review.pk)
    if actor is None or not has_role(actor, review.assigned_role):
        raise ActionNotAllowed(f"Only a member of {ROLE_LABELS[review.assigned_role]} completes this review.")
    if review.status != ReviewStatus.OPEN:
        raise ReviewClosed(f"{review} was already completed by {review.completed_by_name}.")
    if _reassigned_by(review, actor):
        raise DutiesNotSegregated(
            f"You reassigned {review}, so another member of {ROLE_LABELS[review.assigned_role]} completes it."
        )
    if not notes.strip():
        raise InvalidReview("Completing a review needs notes.", field="notes")
    if review.kind == ReviewKind.MONTHLY_GUARDRAIL_DRILL:
        if compensations_as_designed is None:
            raise InvalidReview(
                "Say whether compensations executed as designed (yes or no).", field="compensations_as_designed"
            )
    elif compensations_as_designed is not None:
        raise InvalidReview("Only a guardrail drill records whether compensations executed as designed.")
    if review.kind == ReviewKind.QUARTERLY_SECURITY_PRIVACY and not rbac_changes.strip():
        raise InvalidReview("Note the RBAC changes decided (or “none”).", field="rbac_changes")
    if review.kind != ReviewKind.WEEKLY_EVALUATION and tool_scoring_adjustments.strip():
        raise InvalidReview("Tool-scoring weight adjustments belong to the weekly evaluation review.")
    if review.kind != ReviewKind.QUARTERLY_SECURITY_PRIVACY and rbac_changes.strip():
        raise InvalidReview("RBAC changes belong to the quarterly security and privacy review.")
    review.status, review.completed_at = ReviewStatus.COMPLETED, timezone.now()
    review.completed_by = actor
    review.completed_by_name = actor_name(actor)
    review.notes = notes.strip()
    review.tool_scoring_adjustments = tool_scoring_adjustments.strip()
    review.compensations_as_designed = compensations_as_designed
    review.rbac_changes = rbac_changes.strip()
    return save_tracked(review, action="review.complete", actor=actor, reason=notes.strip())


@transaction.atomic
def review_reassign(*, review: ScheduledReview, role: str, actor: Any, reason: str) -> ScheduledReview:
    """A compliance reviewer (or the compliance lead) hands an open review to another role."""
    require_perm(
        actor,
        "governance.reassign_scheduledreview",
        "Only compliance reviewers and the compliance lead assign reviews.",
    )
    if role not in ASSIGNABLE_ROLES:
        raise InvalidReview(f"A review cannot be assigned to {role!r}.", field="role")
    if not reason.strip():
        raise InvalidReview("Reassigning a review needs a reason.", field="reason")
    review = ScheduledReview.objects.select_for_update().get(pk=review.pk)
    if review.status != ReviewStatus.OPEN:
        raise ReviewClosed(f"{review} is completed; it keeps its role.")
    if review.assigned_role == role:
        raise InvalidReview(f"{review} is already assigned to {ROLE_LABELS[role]}.", field="role")
    if actor is not None and has_role(actor, role):
        raise DutiesNotSegregated(
            f"You hold {ROLE_LABELS[role]}: a review is not reassigned to a role of the person reassigning it.",
            field="role",
        )
    review.assigned_role = role
    if actor is not None:
        review.reassigned_by, review.reassigned_by_name = actor, actor_name(actor)
    return save_tracked(review, action="review.reassign", actor=actor, reason=reason.strip())


def _reassigned_by(review: ScheduledReview, actor: Any) -> bool:
    """Whether ``actor`` reassigned this review, now or at any earlier reassignment (the ledger remembers)."""
    if actor is None:
        return False
    if review.reassigned_by_id == actor.pk:
        return True
    return AuditEvent.objects.filter(
        action="review.reassign",
        object_type="governance.scheduledreview",
        object_id=str(review.pk),
        actor_user_id=actor.pk,
    ).exists()
