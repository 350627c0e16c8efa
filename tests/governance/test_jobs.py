"""The job runner, its locks and schedule, "run now", the task options, and the daily ledger verification."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.core import mail
from django.db import connection, connections
from django.utils import timezone

from governance import jobs, tasks
from governance.models import AuditEvent, Job, JobLock, JobRun, JobStatus, JobTrigger
from rollout.errors import ActionNotAllowed
from rollout.roles import Role

from .compliance_helpers import tamper_with_ledger

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def test_every_job_is_on_the_beat_schedule_in_utc_with_limits_below_the_visibility_timeout():
    visibility = 3600  # settings.CELERY_BROKER_TRANSPORT_OPTIONS for Redis
    assert settings.CELERY_TIMEZONE == "UTC" and settings.CELERY_ENABLE_UTC
    for name, spec in jobs.JOBS.items():
        entry = settings.CELERY_BEAT_SCHEDULE[spec.beat_entry]
        assert entry["task"] == f"governance.tasks.{name}"
        assert isinstance(entry["schedule"], crontab)
        assert jobs.describe_schedule(entry["schedule"]).startswith("daily at ")
        task = getattr(tasks, name)
        assert task.name == entry["task"]
        assert (task.acks_late, task.reject_on_worker_lost) == (True, True)
        assert task.soft_time_limit < task.time_limit < visibility
    assert jobs.describe_schedule(settings.CELERY_BEAT_SCHEDULE["governance-enforce-retention"]["schedule"]) == (
        "daily at 02:00 UTC"
    )


@pytest.mark.parametrize(
    ("now", "slot"),
    [
        (dt.datetime(2025, 6, 11, 1, 59, tzinfo=UTC), dt.datetime(2025, 6, 10, 2, 0, tzinfo=UTC)),
        (dt.datetime(2025, 6, 11, 2, 0, tzinfo=UTC), dt.datetime(2025, 6, 11, 2, 0, tzinfo=UTC)),
        (dt.datetime(2025, 6, 11, 2, 0, 30, tzinfo=UTC), dt.datetime(2025, 6, 11, 2, 0, tzinfo=UTC)),
        (dt.datetime(2025, 6, 11, 23, 0, tzinfo=UTC), dt.datetime(2025, 6, 11, 2, 0, tzinfo=UTC)),
        # The slot is in UTC whatever offset "now" is written in.
        (
            dt.datetime(2025, 3, 30, 3, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2025, 3, 30, 2, 0, tzinfo=UTC) - dt.timedelta(days=1),
        ),
    ],
)
def test_a_scheduled_run_belongs_to_the_latest_beat_slot(now, slot):
    assert jobs.last_slot(Job.ENFORCE_RETENTION, now) == slot


def test_a_scheduled_run_records_its_slot_and_outcome(db):
    run = jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS)
    assert (run.trigger, run.status, run.requested_by_name) == (JobTrigger.SCHEDULE, JobStatus.SUCCEEDED, "beat")
    assert run.scheduled_for == jobs.last_slot(Job.CHECK_SCHEDULED_REVIEWS, run.queued_at)
    assert run.started_at <= run.finished_at and run.summary.startswith("Created ")


@contextlib.contextmanager
def lock_held_elsewhere(job: str):
    """Another process's hold on ``job``'s lock: an advisory lock on a second connection, or a live lease row."""
    if connection.vendor == "postgresql":
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [jobs.advisory_key(f"job:{job}")])
            yield
        finally:
            # Unlock before closing: a closed session's locks are released by the server a moment
            # later, and the next run in this test may ask before that (seen under load).
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [jobs.advisory_key(f"job:{job}")])
            other.close()
    else:
        JobLock.objects.create(name=job, holder="other", expires_at=timezone.now() + dt.timedelta(hours=1))
        yield
        JobLock.objects.filter(name=job).delete()


def test_a_run_while_another_holds_the_lock_is_skipped_and_does_nothing(db):
    from governance.models import ScheduledReview

    with lock_held_elsewhere(Job.CHECK_SCHEDULED_REVIEWS):
        run = jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS)
    assert run.status == JobStatus.SKIPPED and "another run" in run.summary
    assert not ScheduledReview.objects.exists()
    assert jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS).status == JobStatus.SUCCEEDED
    assert ScheduledReview.objects.count() == 3
    assert not JobLock.objects.exists()  # a lease (SQLite) is released after the run


def test_an_expired_lease_does_not_block(db):
    # SQLite's lease outlives a killed holder until it expires (PostgreSQL drops the lock with the connection).
    JobLock.objects.create(
        name=Job.CHECK_SCHEDULED_REVIEWS, holder="killed", expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    with jobs.job_lock(Job.CHECK_SCHEDULED_REVIEWS) as acquired:
        assert acquired


def test_a_message_for_a_finished_run_is_a_no_op_and_dead_runs_are_marked(db):
    done = jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS)
    assert jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS, job_run_id=done.pk) is None
    done.refresh_from_db()
    assert done.status == JobStatus.SUCCEEDED
    now = timezone.now()
    dead = JobRun.objects.create(
        job=Job.CHECK_SCHEDULED_REVIEWS, trigger="schedule", status="running", scheduled_for=now, queued_at=now
    )
    lost = JobRun.objects.create(
        job=Job.CHECK_SCHEDULED_REVIEWS,
        trigger="manual",
        scheduled_for=now - dt.timedelta(days=1),
        queued_at=now - dt.timedelta(days=1),
    )
    jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS)
    dead.refresh_from_db()
    lost.refresh_from_db()
    assert (dead.status, lost.status) == (JobStatus.INTERRUPTED, JobStatus.INTERRUPTED)
    assert "killed or its worker lost" in dead.summary and "message was lost" in lost.summary


def test_a_redelivered_message_restarts_its_run_after_a_lost_worker(db):
    now = timezone.now()
    run = JobRun.objects.create(
        job=Job.CHECK_SCHEDULED_REVIEWS, trigger="manual", status="running", scheduled_for=now, queued_at=now
    )
    again = jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS, job_run_id=run.pk)
    assert again.pk == run.pk and again.status == JobStatus.SUCCEEDED and again.result["restarted"] is True


def test_a_failing_job_is_recorded_failed(db, monkeypatch):
    from governance import reviews

    def boom(run):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(reviews, "run_check", boom)
    run = jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS)
    assert (run.status, run.summary) == (JobStatus.FAILED, "RuntimeError: disk on fire")


def test_run_now_queues_a_task_for_reviewers_only(users, django_capture_on_commit_callbacks):
    with pytest.raises(ActionNotAllowed):
        jobs.job_request(job=Job.VERIFY_AUDIT_LOG, actor=users[Role.AUDITOR])
    with pytest.raises(jobs.InvalidJobOptions):
        jobs.job_request(job=Job.VERIFY_AUDIT_LOG, actor=users[Role.COMPLIANCE_REVIEWER], options={"dry_run": True})
    with pytest.raises(jobs.UnknownJob):
        jobs.job_request(job="rm_rf", actor=users[Role.COMPLIANCE_REVIEWER])
    assert not JobRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = jobs.job_request(job=Job.VERIFY_AUDIT_LOG, actor=users[Role.COMPLIANCE_REVIEWER], reason="audit prep")
    # Nothing runs in the request: the task is sent on commit.
    assert (run.status, run.trigger, run.requested_by_name) == (
        JobStatus.QUEUED,
        JobTrigger.MANUAL,
        "compliance-reviewer",
    )
    assert len(callbacks) == 1
    [entry] = AuditEvent.objects.filter(action="job.request")
    assert (entry.actor_name, entry.reason, entry.after) == (
        "compliance-reviewer",
        "audit prep",
        {"job": "verify_audit_log", "options": {}},
    )
    callbacks[0]()  # eager in tests: the worker's part
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED and run.task_id


def test_the_command_rejects_a_bad_slot(db):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="future"):
        call_command("enforce_retention", "--scheduled-for", "2999-01-01T00:00Z")
    with pytest.raises(CommandError, match="not an ISO 8601"):
        call_command("enforce_retention", "--scheduled-for", "yesterday")
    with pytest.raises(CommandError, match="UTC offset"):
        call_command("enforce_retention", "--scheduled-for", "2025-01-01T00:00")
    assert not JobRun.objects.exists()


# --- Ledger verification ---------------------------------------------------------------------------------------


def _set_emails(users) -> None:
    for role in Role:
        users[role.value].email = f"{role.value}@example.com"
        users[role.value].save(update_fields=["email"])


def test_an_intact_ledger_verifies_quietly(rollout, users, client_for, django_capture_on_commit_callbacks):
    _set_emails(users)
    with django_capture_on_commit_callbacks(execute=True):
        run = jobs.run_job(Job.VERIFY_AUDIT_LOG)
    assert (run.status, run.alert) == (JobStatus.SUCCEEDED, False)
    assert run.result["ok"] is True and run.summary.startswith("Audit ledger intact:")
    assert AuditEvent.objects.filter(action="audit.verify").count() == 1
    assert mail.outbox == []
    assert 'id="ledger-alert"' not in client_for(Role.PRODUCT_LEAD).get("/").content.decode()


def test_a_broken_chain_raises_the_banner_everywhere_and_mails_reviewers_and_auditors(
    rollout, users, client, django_capture_on_commit_callbacks
):
    _set_emails(users)
    tamper_with_ledger(3)
    with django_capture_on_commit_callbacks(execute=True):
        run = jobs.run_job(Job.VERIFY_AUDIT_LOG)
    assert (run.status, run.alert, run.result["broken_at"]) == (JobStatus.SUCCEEDED, True, 3)
    [message] = mail.outbox
    assert message.subject == "[Audit ledger] Hash chain verification failed"
    assert sorted(message.to) == ["auditor@example.com", "compliance-reviewer@example.com"]
    assert "BROKEN at sequence 3" in message.body
    for role in (Role.PRODUCT_LEAD, Role.AUDITOR, Role.ROLLOUT_ADMIN):
        client.force_login(users[role.value])
        for path in ("/", f"/rollouts/{rollout.slug}/", "/evaluations/", "/compliance/reviews/"):
            page = client.get(path).content.decode()
            assert 'id="ledger-alert"' in page and "broken at entry #3" in page, (role, path)
    client.logout()
    assert 'id="ledger-alert"' not in client.get("/login/").content.decode()


def test_the_banner_follows_the_latest_verification(rollout, users, client_for):
    tamper_with_ledger(2)
    jobs.run_job(Job.VERIFY_AUDIT_LOG)
    assert 'id="ledger-alert"' in client_for(Role.AUDITOR).get("/").content.decode()
    # A verification that failed to run says nothing about the chain: the alert stays.
    now = timezone.now()
    JobRun.objects.create(
        job=Job.VERIFY_AUDIT_LOG, trigger="manual", status="failed", scheduled_for=now, queued_at=now, finished_at=now
    )
    assert 'id="ledger-alert"' in client_for(Role.AUDITOR).get("/").content.decode()
    JobRun.objects.filter(job=Job.VERIFY_AUDIT_LOG, alert=True).update(alert=False)  # e.g. the entry was restored
    assert 'id="ledger-alert"' not in client_for(Role.AUDITOR).get("/").content.decode()
