"""Scheduled reviews: UTC periods, one review per kind and period (also after a gap), completion by the assigned
role with the kind's own answer, reassignment, and the daily delta reports."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance import reports, reviews
from governance.models import AuditEvent, DailyDeltaReport, ReviewKind, ScheduledReview
from rollout.errors import ActionNotAllowed
from rollout.roles import Role
from tests.conftest import make_user
from tests.factories import advance_to, complete_readiness

from .compliance_helpers import runs_with_outputs

pytestmark = pytest.mark.django_db

W, M, Q = ReviewKind.WEEKLY_EVALUATION, ReviewKind.MONTHLY_GUARDRAIL_DRILL, ReviewKind.QUARTERLY_SECURITY_PRIVACY


@pytest.mark.parametrize(
    ("kind", "day", "start", "end", "label"),
    [
        (W, dt.date(2025, 6, 11), dt.date(2025, 6, 9), dt.date(2025, 6, 16), "2025-W24"),
        (W, dt.date(2025, 6, 9), dt.date(2025, 6, 9), dt.date(2025, 6, 16), "2025-W24"),
        (W, dt.date(2025, 6, 15), dt.date(2025, 6, 9), dt.date(2025, 6, 16), "2025-W24"),
        (W, dt.date(2024, 12, 31), dt.date(2024, 12, 30), dt.date(2025, 1, 6), "2025-W01"),  # ISO year
        (W, dt.date(2026, 1, 1), dt.date(2025, 12, 29), dt.date(2026, 1, 5), "2026-W01"),
        (M, dt.date(2024, 2, 29), dt.date(2024, 2, 1), dt.date(2024, 3, 1), "2024-02"),
        (M, dt.date(2025, 12, 31), dt.date(2025, 12, 1), dt.date(2026, 1, 1), "2025-12"),
        (Q, dt.date(2025, 3, 31), dt.date(2025, 1, 1), dt.date(2025, 4, 1), "2025-Q1"),
        (Q, dt.date(2025, 11, 2), dt.date(2025, 10, 1), dt.date(2026, 1, 1), "2025-Q4"),
    ],
)
def test_periods_are_utc_calendar_weeks_months_and_quarters(kind, day, start, end, label):
    period = reviews.period_of(kind, day)
    assert (period.start, period.end, period.label) == (start, end, label)
    assert period.due_at == dt.datetime.combine(end, dt.time.min, tzinfo=dt.UTC)


def test_the_daily_check_creates_each_period_once(db):
    day = dt.date(2025, 6, 11)
    created = reviews.check_scheduled_reviews(today=day)
    assert sorted((r.kind, r.label, r.assigned_role) for r in created) == [
        (M, "2025-06", Role.SRE_LEAD),
        (Q, "2025-Q2", Role.COMPLIANCE_LEAD),
        (W, "2025-W24", Role.PRODUCT_LEAD),
    ]
    for later in (day, day + dt.timedelta(days=1), dt.date(2025, 6, 15)):
        assert reviews.check_scheduled_reviews(today=later) == []
    assert [r.label for r in reviews.check_scheduled_reviews(today=dt.date(2025, 6, 16))] == ["2025-W25"]
    assert ScheduledReview.objects.count() == 4
    assert AuditEvent.objects.filter(action="review.create").count() == 4
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduledReview.objects.create(
            kind=W,
            period_start=dt.date(2025, 6, 16),
            period_end=dt.date(2025, 6, 23),
            label="dup",
            assigned_role=Role.PRODUCT_LEAD,
            due_at=timezone.now(),
            created_at=timezone.now(),
        )


def test_a_check_after_a_gap_creates_the_missed_periods_once(db):
    reviews.check_scheduled_reviews(today=dt.date(2025, 6, 11))
    created = reviews.check_scheduled_reviews(today=dt.date(2025, 8, 5))
    assert [r.label for r in created if r.kind == W] == [f"2025-W{n}" for n in range(25, 33)]
    assert [r.label for r in created if r.kind == M] == ["2025-07", "2025-08"]
    assert [r.label for r in created if r.kind == Q] == ["2025-Q3"]
    assert reviews.check_scheduled_reviews(today=dt.date(2025, 8, 5)) == []


@pytest.fixture
def open_reviews(db):
    reviews.check_scheduled_reviews(today=timezone.now().date())
    return {r.kind: r for r in ScheduledReview.objects.all()}


def test_only_a_member_of_the_assigned_role_completes_and_each_kind_asks_its_question(open_reviews, users):
    drill = open_reviews[M]
    for role in (Role.PRODUCT_LEAD, Role.COMPLIANCE_REVIEWER, Role.AUDITOR):
        with pytest.raises(ActionNotAllowed):
            reviews.review_complete(review=drill, actor=users[role.value], notes="x", compensations_as_designed=True)
    sre = users[Role.SRE_LEAD.value]
    with pytest.raises(reviews.InvalidReview, match="notes"):
        reviews.review_complete(review=drill, actor=sre, notes=" ", compensations_as_designed=True)
    with pytest.raises(reviews.InvalidReview, match="yes or no"):
        reviews.review_complete(review=drill, actor=sre, notes="Ran scenario 4")
    with pytest.raises(reviews.InvalidReview, match="RBAC"):
        reviews.review_complete(
            review=drill, actor=sre, notes="x", compensations_as_designed=True, rbac_changes="removed admin"
        )
    done = reviews.review_complete(
        review=drill, actor=sre, notes="Scenario 4: refund loop", compensations_as_designed=False
    )
    assert (done.status, done.completed_by_name, done.compensations_as_designed) == ("completed", "sre-lead", False)
    with pytest.raises(reviews.ReviewClosed):
        reviews.review_complete(review=drill, actor=sre, notes="again", compensations_as_designed=True)
    [entry] = AuditEvent.objects.filter(action="review.complete")
    assert (entry.actor_name, entry.reason, entry.after["compensations_as_designed"]) == (
        "sre-lead",
        "Scenario 4: refund loop",
        False,
    )

    quarterly = open_reviews[Q]
    lead = users[Role.COMPLIANCE_LEAD.value]
    with pytest.raises(reviews.InvalidReview, match="RBAC"):
        reviews.review_complete(review=quarterly, actor=lead, notes="Risk register updated")
    with pytest.raises(reviews.InvalidReview, match="guardrail drill"):
        reviews.review_complete(
            review=quarterly, actor=lead, notes="x", rbac_changes="none", compensations_as_designed=True
        )
    reviews.review_complete(review=quarterly, actor=lead, notes="Risk register updated", rbac_changes="none")

    weekly = open_reviews[W]
    product = users[Role.PRODUCT_LEAD.value]
    done = reviews.review_complete(
        review=weekly, actor=product, notes="Reflections reviewed", tool_scoring_adjustments="search 0.4 -> 0.35"
    )
    assert done.tool_scoring_adjustments == "search 0.4 -> 0.35"


def test_a_compliance_reviewer_reassigns_an_open_review(open_reviews, users):
    weekly = open_reviews[W]
    with pytest.raises(ActionNotAllowed):
        reviews.review_reassign(review=weekly, role=Role.SRE_LEAD, actor=users[Role.PRODUCT_LEAD.value], reason="x")
    reviewer = users[Role.COMPLIANCE_REVIEWER.value]
    with pytest.raises(reviews.InvalidReview):
        reviews.review_reassign(review=weekly, role=Role.AUDITOR, actor=reviewer, reason="auditors change nothing")
    reviews.review_reassign(review=weekly, role=Role.SRE_LEAD, actor=reviewer, reason="Product lead on leave")
    weekly.refresh_from_db()
    assert weekly.assigned_role == Role.SRE_LEAD
    with pytest.raises(ActionNotAllowed):
        reviews.review_complete(review=weekly, actor=users[Role.PRODUCT_LEAD.value], notes="x")
    both = make_user("both", Role.SRE_LEAD, Role.PRODUCT_LEAD)
    reviews.review_complete(review=weekly, actor=both, notes="Done")
    assert AuditEvent.objects.filter(action="review.reassign").get().reason == "Product lead on leave"


# --- Daily delta reports ----------------------------------------------------------------------------------------


@pytest.fixture
def in_canary(rollout, users):
    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    return advance_to(rollout, "canary", users[Role.ROLLOUT_ADMIN])


def _runs(rollout, day: dt.date, values: dict[str, list[float]]) -> None:
    phase = rollout.phases.get(kind="canary")
    at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    for arm, rates in values.items():
        created = runs_with_outputs(
            rollout, [at + dt.timedelta(minutes=i) for i in range(len(rates))], arm=arm, phase=phase
        )
        for run, rate in zip(created, rates, strict=True):
            type(run).objects.filter(pk=run.pk).update(task_success_rate=rate)


def test_a_report_per_rollout_and_day_with_the_day_over_day_change(in_canary, rollout):
    d1, d2 = dt.date(2025, 6, 10), dt.date(2025, 6, 11)
    _runs(in_canary, d1, {"baseline": [0.80, 0.82], "candidate": [0.85, 0.87]})
    _runs(in_canary, d2, {"baseline": [0.80, 0.82], "candidate": [0.90, 0.92]})
    [first], skipped = reports.generate_daily_delta_reports(report_date=d1)
    [second], _ = reports.generate_daily_delta_reports(report_date=d2)
    assert skipped == 0
    assert (first.baseline_runs, first.candidate_runs, second.baseline_runs, second.candidate_runs) == (2, 2, 4, 4)
    assert first.through == dt.datetime(2025, 6, 11, tzinfo=dt.UTC)
    rate = {m["metric"]: m for m in first.metrics}["task_success_rate"]
    assert (
        rate["delta"] == pytest.approx(0.05)
        and rate["baseline"]["n"] == 2
        and rate["verdict"]
        in (
            "improved",
            "no clear change",
        )
    )
    rows = {m["metric"]: m for m in reports.day_over_day(second, first)}
    assert rows["task_success_rate"]["delta"] == pytest.approx(0.075)
    assert rows["task_success_rate"]["delta_change"] == pytest.approx(0.025)
    assert rows["latency_p95_ms"]["delta"] is None and rows["latency_p95_ms"]["delta_change"] is None
    # Again the same day: nothing new, nothing changed.
    assert reports.generate_daily_delta_reports(report_date=d2) == ([], 1)
    assert DailyDeltaReport.objects.count() == 2


def test_only_rollouts_in_progress_get_reports(rollout, users):
    assert reports.generate_daily_delta_reports(report_date=dt.date(2025, 6, 10)) == ([], 0)  # a draft


def test_the_job_reports_the_previous_utc_day(in_canary):
    from governance import jobs
    from governance.models import Job

    run = jobs.run_job(Job.DAILY_DELTA_REPORTS)
    report = DailyDeltaReport.objects.get()
    assert report.report_date == run.scheduled_for.date() - dt.timedelta(days=1)
    assert run.summary == f"Reports of {report.report_date:%Y-%m-%d}: 1 stored ({in_canary.slug})."


# --- Segregation of duties (issue 9 seam 5) ---------------------------------------------------------------------------


def test_a_review_is_not_reassigned_to_a_role_the_reassigner_holds(open_reviews, users, client_for):
    weekly = open_reviews[W]
    dual = make_user("dual", Role.COMPLIANCE_REVIEWER, Role.SRE_LEAD)
    before = AuditEvent.objects.count()
    with pytest.raises(reviews.DutiesNotSegregated) as caught:
        reviews.review_reassign(review=weekly, role=Role.SRE_LEAD, actor=dual, reason="I will do it myself")
    assert caught.value.message == (
        "You hold SRE lead: a review is not reassigned to a role of the person reassigning it."
    )
    weekly.refresh_from_db()
    assert (weekly.assigned_role, weekly.reassigned_by_id) == (Role.PRODUCT_LEAD, None)
    assert AuditEvent.objects.count() == before
    # The page does not offer the reassigner's own roles, and a forged post is refused with the message.
    client = client_for(Role.COMPLIANCE_REVIEWER)
    client.force_login(dual)
    page = client.get(weekly.get_absolute_url()).content.decode()
    assert 'value="sre-lead"' not in page.split('data-form="reassign"')[1] and 'value="support-lead"' in page
    response = client.post(f"/compliance/reviews/{weekly.pk}/reassign/", {"role": "sre-lead", "reason": "me"})
    weekly.refresh_from_db()
    assert weekly.assigned_role == Role.PRODUCT_LEAD
    assert response.status_code == 302


def test_whoever_reassigned_a_review_cannot_complete_it(open_reviews, users):
    monthly = open_reviews[M]
    reviewer = make_user("reviewer-and-support", Role.COMPLIANCE_REVIEWER, Role.SUPPORT_LEAD)
    reviews.review_reassign(review=monthly, role=Role.PRODUCT_LEAD, actor=reviewer, reason="SRE lead away")
    monthly.refresh_from_db()
    assert (monthly.reassigned_by, monthly.reassigned_by_name) == (reviewer, "reviewer-and-support")
    # Later the reviewer gains the role it was handed to: still not the one who completes it.
    reviewer.groups.add(*type(reviewer.groups.first()).objects.filter(name=Role.PRODUCT_LEAD))
    reviewer = type(reviewer).objects.get(pk=reviewer.pk)
    with pytest.raises(reviews.DutiesNotSegregated):
        reviews.review_complete(review=monthly, actor=reviewer, notes="done", compensations_as_designed=True)
    monthly.refresh_from_db()
    assert monthly.status == "open"
    reviews.review_complete(
        review=monthly, actor=users[Role.PRODUCT_LEAD.value], notes="Drill run", compensations_as_designed=True
    )
    monthly.refresh_from_db()
    assert (monthly.status, monthly.completed_by_name) == ("completed", Role.PRODUCT_LEAD.value)


def test_the_database_refuses_a_review_completed_by_its_reassigner(open_reviews, users):
    weekly = open_reviews[W]
    lead = users[Role.PRODUCT_LEAD.value]
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduledReview.objects.filter(pk=weekly.pk).update(
            reassigned_by=lead, completed_by=lead, status="completed", completed_at=timezone.now(), notes="x"
        )


def test_the_review_page_tells_the_reassigner_someone_else_completes_it(open_reviews, client_for):
    weekly = open_reviews[W]
    dual = make_user("dual2", Role.COMPLIANCE_REVIEWER)
    reviews.review_reassign(review=weekly, role=Role.SRE_LEAD, actor=dual, reason="away")
    dual.groups.add(*type(dual.groups.first()).objects.filter(name=Role.SRE_LEAD))
    client = client_for(Role.AUDITOR)
    client.force_login(dual)
    page = client.get(weekly.get_absolute_url()).content.decode()
    assert 'data-form="complete-review"' not in page
    assert "You reassigned this review, so another member of SRE lead completes it" in page
    assert client.post(weekly.get_absolute_url(), {"notes": "mine"}).status_code == 403


def test_the_compliance_lead_assigns_a_review_to_the_compliance_reviewers(open_reviews, users, client_for):
    # A compliance reviewer may not hand a review to their own role, so without the lead nobody but a superuser
    # could ever give one to the reviewers.
    weekly = open_reviews[W]
    reviewer = users[Role.COMPLIANCE_REVIEWER.value]
    with pytest.raises(reviews.DutiesNotSegregated):
        reviews.review_reassign(review=weekly, role=Role.COMPLIANCE_REVIEWER, actor=reviewer, reason="mine")
    client = client_for(Role.COMPLIANCE_LEAD)
    page = client.get(weekly.get_absolute_url()).content.decode()
    form = page.split('data-form="reassign"')[1].split("</form>")[0]
    assert 'value="compliance-reviewer"' in form and 'value="compliance-lead"' not in form
    response = client.post(
        f"/compliance/reviews/{weekly.pk}/reassign/", {"role": "compliance-reviewer", "reason": "Product lead away"}
    )
    assert response.status_code == 302
    weekly.refresh_from_db()
    assert weekly.assigned_role == Role.COMPLIANCE_REVIEWER
    lead = users[Role.COMPLIANCE_LEAD.value]
    assert weekly.reassigned_by_id == lead.pk
    entry = AuditEvent.objects.filter(action="review.reassign").get()
    assert (entry.actor_name, entry.reason) == (lead.username, "Product lead away")
    # A reviewer completes it; the lead who assigned it cannot (they do not hold the role, and they reassigned it).
    done = reviews.review_complete(review=weekly, actor=reviewer, notes="Reflections reviewed")
    assert done.status == "completed"
