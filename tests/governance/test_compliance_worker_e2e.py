"""The compliance jobs end to end through a real Celery worker on Redis and PostgreSQL: retention (boundary in a DST
week, holds, dry run, a second run, two deliveries at once, receipts and ledger entries), the reviews check and the
records job (an ingest with a new telemetry field queues it), and the ledger verification."""

from __future__ import annotations

import datetime as dt

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections
from django.utils import timezone

from evaluations.models import RunOutput
from evaluations.services import api_token_create
from governance import jobs, retention, tasks
from governance.models import (
    AuditEvent,
    Job,
    JobRun,
    JobStatus,
    RecordChange,
    RetentionReceipt,
    ScheduledReview,
    TelemetryField,
)
from rollout.roles import Role
from rollout.services import rollout_create_from_playbook
from tests.evaluations.conftest import run as run_payload
from tests.evaluations.test_worker_e2e import wait_for
from tests.factories import advance_to, complete_readiness

from .compliance_helpers import runs_with_outputs, surviving

DAY = dt.timedelta(days=1)
# A slot in the EU spring-forward week, as beat would fire it (02:00 UTC), written with its local offset.
SLOT = dt.datetime(2025, 3, 31, 4, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def _close_worker_connections(**kwargs) -> None:
    connections.close_all()


def finished_runs(job: str, count: int) -> list[JobRun] | None:
    """The first ``count`` runs of ``job`` once all of them have finished, in order."""
    runs = list(JobRun.objects.filter(job=job).order_by("id")[:count])
    return runs if len(runs) == count and all(r.finished_at for r in runs) else None


def finished(run_id: int) -> JobRun:
    return wait_for(lambda: JobRun.objects.filter(pk=run_id, finished_at__isnull=False).first())


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_compliance_jobs_through_a_real_worker(client, users, tenants):
    from config.celery_app import app

    reviewer = users[Role.COMPLIANCE_REVIEWER]
    admin = users[Role.ROLLOUT_ADMIN]
    main = rollout_create_from_playbook(name="Worker rollout", owner=admin)
    held = rollout_create_from_playbook(name="Held rollout", owner=admin)
    slot_utc = SLOT.astimezone(dt.UTC)
    cutoff = slot_utc - 90 * DAY
    boundary = {
        "89d": slot_utc - 89 * DAY,
        "90d-1s": cutoff + dt.timedelta(seconds=1),
        "90d": cutoff,
        "wall-clock trap": cutoff + dt.timedelta(minutes=30),
        "90d+1s": cutoff - dt.timedelta(seconds=1),
        "91d": slot_utc - 91 * DAY,
    }
    main_runs = runs_with_outputs(main, boundary.values())
    label = {r.run_id: name for r, name in zip(main_runs, boundary, strict=True)}
    held_runs = runs_with_outputs(held, [slot_utc - 120 * DAY, slot_utc - 100 * DAY])

    app.conf.task_always_eager = False
    app.control.purge()
    task_postrun.connect(_close_worker_connections, weak=False, dispatch_uid="compliance-e2e-close")
    try:
        with start_worker(
            app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
        ):
            # A dry run queued from the Jobs page: counts, deletes nothing.
            dry = finished(jobs.job_request(job=Job.ENFORCE_RETENTION, actor=reviewer, options={"dry_run": True}).pk)
            assert dry.status == JobStatus.SUCCEEDED and dry.task_id
            assert RunOutput.objects.count() == 16
            assert dry.receipts.get().rows_matched == 16  # every row is past a cutoff of "now"

            # The hold, then the slot's purge delivered twice at once (two beats, a redelivery) to a worker with
            # two threads: the work is done once.
            retention.legal_hold_place(rollout=held, reason="Regulator request R-12", actor=reviewer)
            for _ in range(2):
                tasks.enforce_retention.apply_async(kwargs={"scheduled_for": SLOT.isoformat()})
            pair = wait_for(lambda: (runs := finished_runs(Job.ENFORCE_RETENTION, 3)) and runs[1:])
            assert {r.status for r in pair} <= {JobStatus.SUCCEEDED, JobStatus.SKIPPED}
            assert all(r.trigger == "schedule" and r.scheduled_for == slot_utc for r in pair)
            purges = list(RetentionReceipt.objects.filter(job_run__in=pair, dry_run=False))
            assert sum(r.rows_deleted for r in purges) == 4 and all(r.cutoff == cutoff for r in purges)
            assert {label[r] for r in surviving(main_runs)} == {"89d", "90d-1s", "90d", "wall-clock trap"}
            assert surviving(held_runs) == {r.run_id for r in held_runs}
            assert max(r.rows_held for r in purges) == 4 and purges[0].held_rollouts == [held.slug]

            # A second run for the same slot changes nothing.
            tasks.enforce_retention.apply_async(kwargs={"scheduled_for": SLOT.isoformat()})
            [again] = wait_for(lambda: (runs := finished_runs(Job.ENFORCE_RETENTION, 4)) and runs[3:])
            assert again.status == JobStatus.SUCCEEDED and again.receipts.get().rows_deleted == 0
            assert RunOutput.objects.count() == 12

            # Released: the first run after it purges the held outputs.
            retention.legal_hold_release(hold=held.legal_holds.get(), reason="Closed", actor=reviewer)
            after = finished(jobs.job_request(job=Job.ENFORCE_RETENTION, actor=reviewer).pk)
            assert after.status == JobStatus.SUCCEEDED
            assert surviving(held_runs) == set() and RunOutput.objects.count() == 0
            purge_entries = len(purges) + 2  # the pair's, the second run's, the one after the release
            assert (
                list(
                    AuditEvent.objects.filter(action__startswith="retention.")
                    .order_by("sequence")
                    .values_list("action", flat=True)
                )
                == ["retention.dry_run"] + ["retention.purge"] * purge_entries
            )

            # Reviews: two checks at once still make one review per kind and period.
            for _ in range(2):
                tasks.check_scheduled_reviews.delay()
            wait_for(
                lambda: JobRun.objects.filter(job=Job.CHECK_SCHEDULED_REVIEWS, finished_at__isnull=False).count() == 2
            )
            assert ScheduledReview.objects.count() == 3

            # Records: an ingest with fields the inventory does not know queues the job; its proposals come once.
            complete_readiness(main, admin)
            advance_to(main, "canary", admin)
            _token, raw = api_token_create(name="harness", scopes=["ingest"], actor=None)
            body = {"runs": [run_payload(main.slug, outputs=[{"conversation_id": "c1", "transcript_excerpt": "hi"}])]}
            response = client.post(
                "/api/v1/evaluation-runs/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
            )
            assert response.status_code == 201
            event_run = wait_for(
                lambda: JobRun.objects.filter(job=Job.UPDATE_COMPLIANCE_RECORDS, finished_at__isnull=False).first()
            )
            assert (event_run.trigger, event_run.status) == ("event", JobStatus.SUCCEEDED)
            assert TelemetryField.objects.filter(source="run_output", name="transcript_excerpt").exists()
            proposals = RecordChange.objects.count()
            assert RecordChange.objects.filter(subject="run_output:transcript_excerpt").count() == 1
            second = finished(jobs.job_request(job=Job.UPDATE_COMPLIANCE_RECORDS, actor=reviewer).pk)
            assert second.status == JobStatus.SUCCEEDED and RecordChange.objects.count() == proposals

            verify = finished(jobs.job_request(job=Job.VERIFY_AUDIT_LOG, actor=reviewer).pk)
            assert (verify.status, verify.alert) == (JobStatus.SUCCEEDED, False)
            assert verify.summary.startswith("Audit ledger intact:")
    finally:
        task_postrun.disconnect(dispatch_uid="compliance-e2e-close")
        app.conf.task_always_eager = True
    assert timezone.now() > slot_utc
