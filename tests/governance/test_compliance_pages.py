"""Compliance pages: who sees what, 403 for the rest (recorded), forms through the pages, and fixed query counts."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from governance import jobs, records, reports, retention, reviews
from governance.models import (
    AuditEvent,
    DailyDeltaReport,
    Job,
    JobRun,
    LegalHold,
    ProcessingRecord,
    RecordChange,
    RetentionReceipt,
    ScheduledReview,
)
from rollout.roles import Role
from rollout.services import rollout_create_from_playbook
from tests.factories import advance_to, complete_readiness

from .compliance_helpers import runs_with_outputs

pytestmark = pytest.mark.django_db

REVIEWER = Role.COMPLIANCE_REVIEWER
DAY = dt.timedelta(days=1)


def last_message(response) -> str:
    return [str(m) for m in get_messages(response.wsgi_request)][-1]


# --- Navigation and visibility ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "nav"),
    [
        (REVIEWER, "compliance"),
        (Role.AUDITOR, "compliance"),
        (Role.COMPLIANCE_LEAD, "compliance"),
        (Role.PRODUCT_LEAD, "reviews"),
        (Role.ROLLOUT_ADMIN, "reviews"),
    ],
)
def test_the_menu_leads_each_role_to_what_it_may_read(db, client_for, role, nav):
    page = client_for(role).get("/").content.decode()
    assert f'data-nav="{nav}"' in page
    assert ('data-nav="compliance"' in page) == (nav == "compliance")


def test_reviewers_see_the_buttons_auditors_read_only(rollout, client_for, users):
    records.update_compliance_records()
    RecordChange.objects.create(
        record=ProcessingRecord.objects.get(key=records.VOICE_RECORD),
        kind="voice_transcription_flow",
        subject="tenant-x",
        label="Tenant X",
        detected_at=timezone.now(),
    )
    retention.legal_hold_place(rollout=rollout, reason="hold", actor=users[REVIEWER])
    reviewer, auditor = client_for(REVIEWER), None
    pages = {
        "/compliance/retention/": [
            'data-form="place-hold"',
            'data-action="release-hold"',
            'data-action="run-retention"',
        ],
        "/compliance/jobs/": ['data-action="run-now"'],
        "/compliance/records/": ['data-action="add-record"'],
        f"/compliance/records/{records.VOICE_RECORD}/": ['data-action="edit-record"', 'data-form="decide-change"'],
    }
    for path, markers in pages.items():
        page = reviewer.get(path).content.decode()
        for marker in markers:
            assert marker in page, (path, marker)
    auditor = client_for(Role.AUDITOR)
    for path, markers in pages.items():
        response = auditor.get(path)
        assert response.status_code == 200, path
        for marker in markers:
            assert marker not in response.content.decode(), (path, marker)


FORBIDDEN = [
    ("get", "/compliance/retention/", Role.PRODUCT_LEAD),
    ("post", "/compliance/retention/", Role.AUDITOR),
    ("get", "/compliance/retention/holds/{hold}/release/", Role.COMPLIANCE_LEAD),
    ("post", "/compliance/retention/holds/{hold}/release/", Role.AUDITOR),
    ("get", "/compliance/jobs/", Role.SRE_LEAD),
    ("post", "/compliance/jobs/verify_audit_log/run/", Role.AUDITOR),
    ("get", "/compliance/jobs/enforce_retention/run/", Role.COMPLIANCE_LEAD),
    ("get", "/compliance/records/", Role.ROLLOUT_ADMIN),
    ("get", "/compliance/records/new/", Role.AUDITOR),
    ("post", "/compliance/records/{record}/edit/", Role.COMPLIANCE_LEAD),
    ("post", "/compliance/records/{record}/changes/{change}/decide/", Role.AUDITOR),
    ("post", "/compliance/reviews/{review}/", Role.AUDITOR),
    ("post", "/compliance/reviews/{review}/", Role.COMPLIANCE_REVIEWER),  # the drill is the SRE lead's
    ("post", "/compliance/reviews/{review}/reassign/", Role.SRE_LEAD),
]


@pytest.mark.parametrize(("method", "path", "role"), FORBIDDEN)
def test_actions_answer_403_to_other_roles_and_the_attempt_is_recorded(rollout, client_for, users, method, path, role):
    records.update_compliance_records()
    reviews.check_scheduled_reviews()
    hold = retention.legal_hold_place(rollout=rollout, reason="hold", actor=users[REVIEWER])
    record = ProcessingRecord.objects.get(key=records.TELEMETRY_RECORD)
    change = RecordChange.objects.create(
        record=record, kind="telemetry_field", subject="run_output:x", label="x", detected_at=timezone.now()
    )
    review = ScheduledReview.objects.get(kind="monthly_guardrail_drill")
    url = path.format(hold=hold.pk, record=record.key, change=change.pk, review=review.pk)
    before = AuditEvent.objects.order_by("-sequence").first().sequence
    data = {
        "reason": "x",
        "comment": "x",
        "decision": "confirm",
        "notes": "x",
        "role": "sre-lead",
        "rollout": rollout.slug,
    }
    response = getattr(client_for(role), method)(url, data if method == "post" else None)
    assert response.status_code == 403
    [entry] = AuditEvent.objects.filter(sequence__gt=before)
    assert (entry.action, entry.actor_name) == ("auth.permission_denied", str(role))
    assert LegalHold.objects.filter(released_at__isnull=True).count() == 1
    assert RecordChange.objects.get(pk=change.pk).status == "pending"
    assert ScheduledReview.objects.get(pk=review.pk).status == "open" and not JobRun.objects.filter(trigger="manual")


# --- Flows through the pages ------------------------------------------------------------------------------------------


def test_a_reviewer_places_and_releases_a_hold_from_the_retention_page(rollout, client_for):
    client = client_for(REVIEWER)
    response = client.post("/compliance/retention/", {"rollout": rollout.slug, "reason": "  "})
    assert response.status_code == 400 and not LegalHold.objects.exists()
    response = client.post(
        "/compliance/retention/", {"rollout": rollout.slug, "reason": "Subpoena 42", "confirmed": "yes"}
    )
    assert response.status_code == 302
    assert last_message(response) == f"Legal hold placed on {rollout.name}: its outputs are kept until released."
    hold = LegalHold.objects.get()
    page = client.get("/compliance/retention/").content.decode()
    assert f'data-hold="{rollout.slug}"' in page and "Subpoena 42" in page
    # The rollout now under a hold is not offered again.
    assert f'<option value="{rollout.slug}"' not in page
    confirm = client.get(f"/compliance/retention/holds/{hold.pk}/release/")
    assert "Release the legal hold on" in confirm.content.decode()
    response = client.post(f"/compliance/retention/holds/{hold.pk}/release/", {"reason": "Closed"})
    assert last_message(response) == f"Legal hold on {rollout.name} released."
    response = client.post(f"/compliance/retention/holds/{hold.pk}/release/", {"reason": "Again"})
    assert last_message(response).startswith("The hold on ")
    assert LegalHold.objects.get().release_reason == "Closed"


def test_run_now_from_the_jobs_page(rollout, client_for, django_capture_on_commit_callbacks):
    runs_with_outputs(rollout, [timezone.now() - 100 * DAY])
    client = client_for(REVIEWER)
    page = client.get("/compliance/jobs/").content.decode()
    for spec in jobs.JOBS.values():
        assert f'data-job="{spec.job}"' in page
    assert "daily at 02:00 UTC" in page and "daily at 00:15 UTC" in page
    confirm = client.get("/compliance/jobs/enforce_retention/run/").content.decode()
    assert "Dry run: count what would be deleted, delete nothing" in confirm and "checked" in confirm
    plain = client.get("/compliance/jobs/verify_audit_log/run/").content.decode()
    assert "Queue it now" in plain and "Dry run" not in plain
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/compliance/jobs/enforce_retention/run/", {"dry_run": "on", "reason": "before audit"})
    assert response.status_code == 302 and "(dry run) queued as run #" in last_message(response)
    receipt = RetentionReceipt.objects.get()  # eager in tests: the worker's part ran on commit
    assert receipt.dry_run and receipt.rows_matched == 2
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/compliance/jobs/enforce_retention/run/", {"reason": ""})
    assert RetentionReceipt.objects.filter(dry_run=False).get().rows_deleted == 2
    assert client.post("/compliance/jobs/nope/run/").status_code == 404
    page = client.get("/compliance/jobs/?job=enforce_retention").content.decode()
    assert page.count('data-run="') == 2


def test_a_reviewer_edits_a_record_and_decides_changes_from_its_page(canary_rollout, client_for, settings):
    records.update_compliance_records()
    client = client_for(REVIEWER)
    record = ProcessingRecord.objects.get(key=records.TELEMETRY_RECORD)
    settings.RETENTION_DAYS = 30
    page = client.get(record.get_absolute_url()).content.decode()
    assert 'id="retention-mismatch"' in page
    assert 'data-flag="retention-mismatch"' in client.get("/compliance/records/").content.decode()
    form = client.get(f"/compliance/records/{record.key}/edit/").context["form"]
    data = {**{k: v for k, v in form.initial.items() if k in form.fields}, "retention_period_days": 30}
    data["retention_policy_applies"] = "on"
    response = client.post(f"/compliance/records/{record.key}/edit/", {**data, "reason": "Policy is 30 days now"})
    assert response.status_code == 302
    assert 'id="retention-mismatch"' not in client.get(record.get_absolute_url()).content.decode()
    voice = RecordChange.objects.get(kind="voice_transcription_flow")
    url = f"/compliance/records/{records.VOICE_RECORD}/changes/{voice.pk}/decide/"
    assert last_message(client.post(url, {"decision": "confirm", "comment": ""})).startswith("Comment:")
    response = client.post(url, {"decision": "confirm", "comment": "Covered by DPIA-14"})
    assert last_message(response) == f"Confirmed: {voice.label}."
    page = client.get(f"/compliance/records/{records.VOICE_RECORD}/").content.decode()
    assert 'id="confirmed-flows"' in page and "Covered by DPIA-14" in page


@pytest.fixture
def canary_rollout(rollout, users):
    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    return advance_to(rollout, "canary", users[Role.ROLLOUT_ADMIN])


def test_a_new_record_through_the_page(db, client_for):
    client = client_for(REVIEWER)
    data = {
        "key": "support-tickets",
        "name": "Support tickets",
        "controller": "Us",
        "purpose": "Support",
        "data_subject_categories": "Customers",
        "personal_data_categories": "Names",
        "recipients": "Support",
        "transfers": "None",
        "retention_period_days": "365",
        "security_measures": "RBAC",
        "reason": "New processing",
    }
    assert client.post("/compliance/records/new/", {**data, "key": "new"}).status_code == 400
    response = client.post("/compliance/records/new/", data)
    assert response.status_code == 302 and response["Location"] == "/compliance/records/support-tickets/"


def test_a_review_is_completed_by_its_role_from_its_page(db, client_for, users):
    reviews.check_scheduled_reviews()
    drill = ScheduledReview.objects.get(kind="monthly_guardrail_drill")
    page = client_for(Role.PRODUCT_LEAD).get(drill.get_absolute_url()).content.decode()
    assert 'data-form="complete-review"' not in page and "Waiting for a member of SRE lead" in page
    client = client_for(Role.SRE_LEAD)
    page = client.get(drill.get_absolute_url()).content.decode()
    assert 'data-form="complete-review"' in page and "Did guardrail compensations execute as designed?" in page
    assert "Tool-scoring" not in page and "RBAC changes" not in page
    response = client.post(
        drill.get_absolute_url(), {"notes": "Drill 6", "compensations_as_designed": "", "confirmed": "yes"}
    )
    assert response.status_code == 400 and "yes or no" in response.content.decode()
    response = client.post(
        drill.get_absolute_url(), {"notes": "Drill 6", "compensations_as_designed": "yes", "confirmed": "yes"}
    )
    assert response.status_code == 302
    page = client.get(drill.get_absolute_url()).content.decode()
    assert 'data-testid="as-designed">yes<' in page


def test_a_reviewer_reassigns_from_the_review_page(db, client_for):
    reviews.check_scheduled_reviews()
    weekly = ScheduledReview.objects.get(kind="weekly_evaluation")
    client = client_for(REVIEWER)
    assert 'data-form="reassign"' in client.get(weekly.get_absolute_url()).content.decode()
    response = client.post(f"/compliance/reviews/{weekly.pk}/reassign/", {"role": "sre-lead", "reason": "Leave"})
    assert last_message(response) == f"{weekly} assigned to SRE lead."
    response = client.post(f"/compliance/reviews/{weekly.pk}/reassign/", {"role": "auditor", "reason": "x"})
    assert last_message(response).startswith("Role: Select a valid choice")


def test_overdue_reviews_are_highlighted_on_the_home_page_for_everyone(db, client_for):
    reviews.check_scheduled_reviews(today=timezone.now().date() - dt.timedelta(days=40))
    reviews.check_scheduled_reviews()
    overdue = ScheduledReview.objects.filter(due_at__lte=timezone.now()).order_by("due_at")
    assert overdue.exists()
    for role in (Role.AUDITOR, Role.PRODUCT_LEAD, REVIEWER):
        page = client_for(role).get("/").content.decode()
        assert 'id="overdue-reviews"' in page, role
        for review in overdue[:10]:
            assert f'data-review="{review.pk}"' in page
    product = client_for(Role.PRODUCT_LEAD).get("/").content.decode()
    current_weekly = ScheduledReview.objects.filter(kind="weekly_evaluation", due_at__gt=timezone.now()).get()
    assert 'id="my-reviews"' in product and f'data-review="{current_weekly.pk}"' in product
    page = client_for(Role.AUDITOR).get("/compliance/reviews/?status=overdue").content.decode()
    assert page.count('data-overdue="true"') == overdue.count()


def test_the_reviewer_home_panel_counts_their_work(canary_rollout, client_for, settings):
    records.update_compliance_records()
    settings.RETENTION_DAYS = 45
    page = client_for(REVIEWER).get("/").content.decode()
    assert f'data-testid="pending-changes">{RecordChange.objects.filter(status="pending").count()}<' in page
    assert 'data-testid="mismatched">2<' in page
    assert 'id="compliance-panel"' not in client_for(Role.AUDITOR).get("/").content.decode()


def test_daily_delta_reports_pages(canary_rollout, client_for):
    rollout = canary_rollout
    phase = rollout.phases.get(kind="canary")
    for day in (dt.date(2025, 6, 9), dt.date(2025, 6, 10)):
        at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        runs_with_outputs(rollout, [at, at + dt.timedelta(minutes=1)], arm="baseline", phase=phase)
        runs_with_outputs(rollout, [at, at + dt.timedelta(minutes=1)], arm="candidate", phase=phase)
        reports.generate_daily_delta_reports(report_date=day)
    client = client_for(Role.SUPPORT_LEAD)
    page = client.get(f"/rollouts/{rollout.slug}/delta-reports/").content.decode()
    assert page.count('data-report="') == 2
    assert 'data-report="2025-06-10"' in page
    detail = client.get(f"/rollouts/{rollout.slug}/delta-reports/2025-06-10/")
    assert detail.status_code == 200 and "Compared with" in detail.content.decode()
    assert client.get(f"/rollouts/{rollout.slug}/delta-reports/2025-13-10/").status_code == 404
    assert client.get(f"/rollouts/{rollout.slug}/delta-reports/2025-06-11/").status_code == 404
    rollout_page = client.get(rollout.get_absolute_url()).content.decode()
    assert 'data-link="delta-reports"' in rollout_page and "2025-06-10" in rollout_page


# --- Query counts at two data sizes ---------------------------------------------------------------------------------


def _grow(users, n: int):
    """``n`` of everything the compliance pages list."""
    reviewer = users[REVIEWER]
    admin = users[Role.ROLLOUT_ADMIN]
    now = timezone.now()
    rollouts = [rollout_create_from_playbook(name=f"R{i}", owner=admin) for i in range(n)]
    complete_readiness(rollouts[0], admin)
    advance_to(rollouts[0], "canary", admin)  # the one rollout in progress: the daily reports are its
    for r in rollouts:
        retention.legal_hold_place(rollout=r, reason=f"hold {r.slug}", actor=reviewer)
    for r in rollouts[: n // 2]:
        retention.legal_hold_release(hold=r.legal_holds.get(), reason="done", actor=reviewer)
    for i in range(n):
        RetentionReceipt.objects.create(
            scheduled_for=now,
            cutoff=now - 90 * DAY,
            retention_days=90,
            batch_size=10,
            started_at=now,
            status="completed",
        )
        JobRun.objects.create(
            job=Job.ENFORCE_RETENTION, trigger="manual", status="succeeded", scheduled_for=now, queued_at=now
        )
        records.record_save(
            record=ProcessingRecord(),
            values={
                "key": f"rec-{i}",
                "name": f"Record {i}",
                "controller": "c",
                "purpose": "p",
                "data_subject_categories": "d",
                "personal_data_categories": "d",
                "recipients": "r",
                "transfers": "t",
                "retention_period_days": 90 + i,
                "security_measures": "s",
            },
            actor=reviewer,
            reason="grow",
        )
    records.update_compliance_records()
    telemetry = ProcessingRecord.objects.get(key=records.TELEMETRY_RECORD)
    for i in range(n):
        RecordChange.objects.create(
            record=telemetry, kind="telemetry_field", subject=f"run_output:f{i}", label=f"f{i}", detected_at=now
        )
    reviews.check_scheduled_reviews(today=now.date() - dt.timedelta(days=7 * n))
    reviews.check_scheduled_reviews()
    main = rollouts[0]
    phase = main.phases.get(kind="canary")
    for d in range(n):
        day = dt.date(2025, 1, 1) + dt.timedelta(days=d)
        at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        runs_with_outputs(main, [at], arm="baseline", phase=phase)
        runs_with_outputs(main, [at], arm="candidate", phase=phase)
        reports.generate_daily_delta_reports(report_date=day)
    return main


PAGE_QUERIES = {
    # Session, user, permissions and the ledger-alert banner come first on every page.
    # Lists are keyset pages (rollout.tables): no COUNT(*) before the rows.
    "/": 10,
    "/compliance/retention/": 13,
    "/compliance/jobs/": 9,
    "/compliance/records/": 7,
    f"/compliance/records/{records.TELEMETRY_RECORD}/": 10,
    "/compliance/reviews/": 7,
    "/compliance/reviews/?status=overdue": 7,
    "/compliance/reviews/{review}/": 7,
    "/rollouts/{slug}/delta-reports/": 10,
    "/rollouts/{slug}/delta-reports/2025-01-02/": 9,
}


@pytest.mark.parametrize("n", [2, 30])
def test_compliance_pages_run_a_fixed_number_of_queries(users, client_for, django_assert_num_queries, n):
    main = _grow(users, n)
    review = ScheduledReview.objects.filter(kind="monthly_guardrail_drill").first()
    client = client_for(REVIEWER)
    for path, count in PAGE_QUERIES.items():
        url = path.format(slug=main.slug, review=review.pk)
        with django_assert_num_queries(count):
            assert client.get(url).status_code == 200, url
    assert DailyDeltaReport.objects.count() == n
