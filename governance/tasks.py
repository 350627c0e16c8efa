"""Celery tasks of the compliance jobs: thin wrappers over ``jobs.run_job``, by id, safe to run twice.

Beat sends each with no arguments (a scheduled run); "run now" and an ingest
send the id of the ``JobRun`` they queued. Every job's effect is idempotent, so
the message is acknowledged late and requeued if its worker is lost; the job's
lock makes a second delivery that arrives while the first still runs a no-op.
A run outlasting the broker's visibility timeout is delivered again; its task id and the lock make that a no-op.
"""

from __future__ import annotations

from celery import shared_task

from rollout.retries import DATABASE_RETRY

from . import denials
from .jobs import JOBS, run_job
from .models import Job, JobTrigger


def _options(job: str) -> dict:
    spec = JOBS[job]
    return {
        **DATABASE_RETRY,
        "bind": True,
        "name": spec.task_name,
        "ignore_result": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "soft_time_limit": spec.soft_time_limit,
        "time_limit": spec.time_limit,
    }


def _run(task, job: str, job_run_id: int | None, scheduled_for: str | None = None, **options) -> str | None:
    run = run_job(
        job,
        job_run_id=job_run_id,
        trigger=JobTrigger.SCHEDULE,
        scheduled_for=scheduled_for,
        options=options,
        task_id=task.request.id or "",
    )
    return run.status if run else None


@shared_task(**_options(Job.CHECK_SCHEDULED_REVIEWS))
def check_scheduled_reviews(self, job_run_id: int | None = None) -> str | None:
    return _run(self, Job.CHECK_SCHEDULED_REVIEWS, job_run_id)


@shared_task(**_options(Job.DAILY_DELTA_REPORTS))
def daily_delta_reports(self, job_run_id: int | None = None) -> str | None:
    return _run(self, Job.DAILY_DELTA_REPORTS, job_run_id)


@shared_task(**_options(Job.VERIFY_AUDIT_LOG))
def verify_audit_log(self, job_run_id: int | None = None) -> str | None:
    return _run(self, Job.VERIFY_AUDIT_LOG, job_run_id)


@shared_task(**_options(Job.ENFORCE_RETENTION))
def enforce_retention(
    self, job_run_id: int | None = None, dry_run: bool = False, scheduled_for: str | None = None
) -> str | None:
    """``scheduled_for`` (ISO 8601 with offset, not in the future) re-runs a past slot with its cutoff."""
    return _run(self, Job.ENFORCE_RETENTION, job_run_id, scheduled_for, **({"dry_run": True} if dry_run else {}))


@shared_task(**_options(Job.UPDATE_COMPLIANCE_RECORDS))
def update_compliance_records(self, job_run_id: int | None = None) -> str | None:
    return _run(self, Job.UPDATE_COMPLIANCE_RECORDS, job_run_id)


@shared_task(
    **DATABASE_RETRY, name="governance.tasks.summarise_denials", ignore_result=True, soft_time_limit=60, time_limit=90
)
def summarise_denials() -> int:
    """Summarise the closed denial windows no later denial has closed (``governance.denials``); safe to run twice:
    each window is locked (SKIP LOCKED), summarised once and deleted."""
    return denials.summarise_closed()
