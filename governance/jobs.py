"""The compliance jobs: registry, one-at-a-time locks, the runner every path goes through, and "run now".

A job runs the same way whether beat, the Jobs page's "run now", a management
command or an ingest started it: ``run_job`` takes the job's lock, claims (or
creates) the ``JobRun`` row, runs the job's service and records the outcome.
It is safe to run twice:

* a second run while one holds the lock is recorded as ``skipped`` and does nothing;
* a message delivered again for a run that already finished does nothing;
* a run found ``running`` by a run that holds the lock belonged to a process that
  died (or a message redelivered after its worker was lost); it is marked
  ``interrupted`` and the work, idempotent in every job, simply happens again.

The lock is a PostgreSQL session advisory lock, released by the server when the
process holding it dies; elsewhere (SQLite under ``make run``) a lease row that
expires after the job's hard time limit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from celery.schedules import crontab
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from rollout import outbox
from rollout.context import current_actor, user_actor
from rollout.errors import DomainError
from rollout.retries import DATABASE_ERRORS
from rollout.roles import Role, require_perm

from . import ledger
from .models import FINISHED_JOB_STATUSES, Job, JobLock, JobRun, JobStatus, JobTrigger

log = logging.getLogger(__name__)

# Queued runs older than this never started: their task message was lost (a broker restart without persistence).
LOST_AFTER = dt.timedelta(hours=6)


class UnknownJob(DomainError):
    code = "unknown-job"
    status = 404
    title = "No such job"


class InvalidJobOptions(DomainError):
    code = "invalid-job-options"
    status = 422
    title = "The job's options are not valid"


@dataclass(frozen=True)
class JobSpec:
    job: str
    beat_entry: str
    description: str
    # A run still going when the Redis visibility timeout passes is delivered again; the lock and the task id
    # (see run_job) make that second delivery a no-op.
    soft_time_limit: int
    time_limit: int
    destructive: bool = False

    @property
    def task_name(self) -> str:
        return f"governance.tasks.{self.job}"

    @property
    def label(self) -> str:
        return Job(self.job).label


JOBS: dict[str, JobSpec] = {
    spec.job: spec
    for spec in (
        JobSpec(
            Job.CHECK_SCHEDULED_REVIEWS,
            "governance-check-scheduled-reviews",
            "Creates the weekly evaluation review, the monthly guardrail drill and the quarterly security and "
            "privacy review of each period, once.",
            soft_time_limit=300,
            time_limit=360,
        ),
        JobSpec(
            Job.DAILY_DELTA_REPORTS,
            "governance-daily-delta-reports",
            "Stores, for each rollout in progress, the baseline-vs-candidate deltas of its current phase as of the "
            "end of the previous UTC day.",
            soft_time_limit=900,
            time_limit=1000,
        ),
        JobSpec(
            Job.VERIFY_AUDIT_LOG,
            "governance-verify-audit-log",
            "Recomputes the audit ledger's hash chain; a broken chain raises the banner on every page and mails "
            "the compliance reviewers and auditors.",
            soft_time_limit=2400,
            time_limit=2700,
        ),
        JobSpec(
            Job.ENFORCE_RETENTION,
            "governance-enforce-retention",
            "Deletes raw evaluation outputs older than the retention period, in batches, except under a legal "
            "hold; leaves a receipt and a ledger entry.",
            soft_time_limit=3000,
            time_limit=3300,
            destructive=True,
        ),
        JobSpec(
            Job.UPDATE_COMPLIANCE_RECORDS,
            "governance-update-compliance-records",
            "Records the telemetry fields seen in ingested runs, outputs and monitoring samples and the tenants with "
            "voice transcription exposed; new ones become pending changes on the data-processing records.",
            soft_time_limit=900,
            time_limit=1000,
        ),
    )
}
assert set(JOBS) == set(Job.values)


def spec_of(job: str) -> JobSpec:
    try:
        return JOBS[job]
    except KeyError:
        raise UnknownJob(f"No job named {job!r}.") from None


# --- Schedules --------------------------------------------------------------------------------------------------------


def beat_schedule(job: str) -> Any:
    entry = settings.CELERY_BEAT_SCHEDULE.get(spec_of(job).beat_entry)
    return entry["schedule"] if entry else None


def describe_schedule(schedule: Any) -> str:
    """A crontab or interval in words, for the Jobs page."""
    if schedule is None:
        return "not scheduled"
    if isinstance(schedule, crontab):
        minutes, hours = sorted(schedule.minute), sorted(schedule.hour)
        every_day = (
            len(schedule.day_of_week) == 7 and len(schedule.day_of_month) == 31 and len(schedule.month_of_year) == 12
        )
        if every_day and len(minutes) == 1 and len(hours) == 1:
            return f"daily at {hours[0]:02d}:{minutes[0]:02d} UTC"
        return f"{schedule!r} (UTC)"
    seconds = (
        schedule.total_seconds()
        if isinstance(schedule, dt.timedelta)
        else float(getattr(schedule, "seconds", schedule))
    )
    return f"every {seconds / 60:g} minutes" if seconds < 3600 else f"every {seconds / 3600:g} hours"


def last_slot(job: str, now: dt.datetime) -> dt.datetime:
    """The latest time at or before ``now`` at which beat fires ``job`` (``now`` for interval schedules).

    Runs for the same slot (two beats, a redelivery) get the same scheduled time,
    hence the same retention cutoff.
    """
    schedule = beat_schedule(job)
    now = now.astimezone(dt.UTC)
    if not isinstance(schedule, crontab):
        return now
    # Step through the crontab's fire times from a day before (the compliance jobs are daily).
    slot = None
    probe = now - dt.timedelta(days=1, seconds=1)
    while (fire := _next_fire(schedule, probe)) <= now:
        slot, probe = fire, fire
    return slot or now


def _next_fire(schedule: Any, after: dt.datetime) -> dt.datetime:
    """The first fire time of a crontab strictly after ``after`` (UTC, to the minute)."""
    moment = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    for _ in range(60 * 24 * 32):
        if (
            moment.minute in schedule.minute
            and moment.hour in schedule.hour
            and moment.day in schedule.day_of_month
            and moment.month in schedule.month_of_year
            and (moment.isoweekday() % 7) in schedule.day_of_week
        ):
            return moment
        moment += dt.timedelta(minutes=1)
    raise ValueError("crontab never fires")


# --- Locks ------------------------------------------------------------------------------------------------------------


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_*advisory_lock`` from a name."""
    return int.from_bytes(hashlib.sha256(f"rgd:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def job_lock(job: str) -> Iterator[bool]:
    """Yield whether this process holds ``job``'s lock; only one holder at a time."""
    if connection.vendor == "postgresql":
        key = advisory_key(f"job:{job}")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            acquired = bool(cursor.fetchone()[0])
        try:
            yield acquired
        finally:
            if acquired:
                # A lost connection took the lock with it.
                with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    token = uuid.uuid4().hex
    now = timezone.now()
    with transaction.atomic():
        lease = JobLock.objects.select_for_update().filter(name=job).first()
        acquired = lease is None or lease.expires_at <= now
        if acquired:
            JobLock.objects.update_or_create(
                name=job,
                defaults={"holder": token, "expires_at": now + dt.timedelta(seconds=spec_of(job).time_limit + 60)},
            )
    try:
        yield acquired
    finally:
        if acquired:
            JobLock.objects.filter(name=job, holder=token).delete()


# --- Running ----------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a job's service hands back to the runner."""

    summary: str
    result: dict[str, Any] = field(default_factory=dict)
    alert: bool = False


def _body(job: str) -> Callable[[JobRun], Outcome]:
    # Imported here: those modules import ``Outcome`` from this one.
    from . import records, reports, retention, reviews

    return {
        Job.CHECK_SCHEDULED_REVIEWS: reviews.run_check,
        Job.DAILY_DELTA_REPORTS: reports.run_daily,
        Job.VERIFY_AUDIT_LOG: run_verify_audit_log,
        Job.ENFORCE_RETENTION: retention.run_enforce,
        Job.UPDATE_COMPLIANCE_RECORDS: records.run_update,
    }[job]


def _parse_when(value: str | dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = (
            value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        )
    except ValueError:
        raise InvalidJobOptions(f"{value!r} is not an ISO 8601 date-time.", field="scheduled_for") from None
    if timezone.is_naive(moment):
        raise InvalidJobOptions("The scheduled time needs a UTC offset.", field="scheduled_for")
    if moment > now + dt.timedelta(minutes=1):
        # A future slot would move the retention cutoff forward and delete outputs still inside the window.
        raise InvalidJobOptions("The scheduled time cannot be in the future.", field="scheduled_for")
    return moment


def _finish(run: JobRun, status: str, outcome: Outcome | None = None, error: str = "") -> JobRun:
    run.status = status
    run.finished_at = timezone.now()
    if run.started_at is None:
        run.started_at = run.finished_at
    if outcome is not None:
        run.summary, run.result, run.alert = outcome.summary, outcome.result, outcome.alert
    elif error:
        run.summary = error[:2000]
    run.save(update_fields=["status", "started_at", "finished_at", "summary", "result", "alert"])
    return run


def _mark_dead_runs(job: str, current: JobRun, now: dt.datetime) -> int:
    """Under the job's lock: other ``running`` runs belong to dead processes; long-queued ones were lost."""
    dead = (
        JobRun.objects.filter(job=job, status=JobStatus.RUNNING)
        .exclude(pk=current.pk)
        .update(
            status=JobStatus.INTERRUPTED,
            finished_at=now,
            summary="Interrupted: found unfinished by a later run (its process was killed or its worker lost).",
        )
    )
    lost = (
        JobRun.objects.filter(job=job, status=JobStatus.QUEUED, queued_at__lt=now - LOST_AFTER)
        .exclude(pk=current.pk)
        .update(status=JobStatus.INTERRUPTED, finished_at=now, summary="Never started: its task message was lost.")
    )
    return dead + lost


def run_job(
    job: str,
    *,
    job_run_id: int | None = None,
    trigger: str = JobTrigger.SCHEDULE,
    options: dict[str, Any] | None = None,
    scheduled_for: str | dt.datetime | None = None,
    task_id: str = "",
    requested_by_name: str = "",
) -> JobRun | None:
    """Run ``job`` once under its lock. Returns the run, or ``None`` for a duplicate message of a finished run."""
    spec = spec_of(job)
    now = timezone.now()
    when = _parse_when(scheduled_for, now)
    with job_lock(job) as acquired:
        if job_run_id is None and task_id:
            # A message redelivered (its worker died, or the visibility timeout passed) keeps its task id:
            # it continues the run it started instead of starting another.
            job_run_id = JobRun.objects.filter(job=job, task_id=task_id).values_list("pk", flat=True).first()
        if job_run_id is not None:
            run = JobRun.objects.filter(pk=job_run_id, job=job).first()
            if run is None or run.status in FINISHED_JOB_STATUSES:
                log.info("job run %s of %s already finished or unknown; nothing to do", job_run_id, job)
                return None
            if not acquired and run.status == JobStatus.RUNNING:
                return None  # the same run, delivered twice, is being worked on by the lock's holder
        else:
            run = JobRun.objects.create(
                job=job,
                trigger=trigger,
                options=options or {},
                scheduled_for=when or (last_slot(job, now) if trigger == JobTrigger.SCHEDULE else now),
                queued_at=now,
                requested_by_name=requested_by_name or ("beat" if trigger == JobTrigger.SCHEDULE else _actor_name()),
            )
        if not acquired:
            return _finish(
                run, JobStatus.SKIPPED, Outcome("Skipped: another run of this job was in progress (it holds the lock).")
            )
        _mark_dead_runs(job, run, now)
        resumed = run.status == JobStatus.RUNNING
        run.status, run.started_at, run.task_id = JobStatus.RUNNING, timezone.now(), task_id or run.task_id
        if when is not None:
            run.scheduled_for = when
        run.save(update_fields=["status", "started_at", "task_id", "scheduled_for"])
        try:
            outcome = _body(job)(run)
        except SoftTimeLimitExceeded:
            log.warning("%s hit its soft time limit (%s s)", job, spec.soft_time_limit)
            return _finish(
                run, JobStatus.INTERRUPTED, error=f"Stopped at the soft time limit ({spec.soft_time_limit} s)."
            )
        except DomainError as exc:
            return _finish(run, JobStatus.FAILED, error=exc.message)
        except DATABASE_ERRORS:
            # The connection was lost: the run stays running and the task retries (same task id), resuming it.
            raise
        except Exception as exc:
            log.exception("%s failed", job)
            return _finish(run, JobStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        if resumed:
            outcome.result = {**outcome.result, "restarted": True}
        return _finish(run, JobStatus.SUCCEEDED, outcome)


def _actor_name() -> str:
    actor = current_actor()
    return actor.name if actor else "beat"


@transaction.atomic
def job_request(
    *, job: str, actor: Any, reason: str = "", options: dict[str, Any] | None = None, trigger: str = JobTrigger.MANUAL
) -> JobRun:
    """Queue ``job`` to run now on a worker (never in the caller's process); the task starts on commit.

    Users need ``governance.run_job``; ``None`` is the system (an ingest bringing a new telemetry field).
    """
    spec = spec_of(job)
    require_perm(actor, "governance.run_job", "Your roles do not allow running compliance jobs.")
    options = dict(options or {})
    unknown = set(options) - ({"dry_run"} if job == Job.ENFORCE_RETENTION else set())
    if unknown:
        raise InvalidJobOptions(f"{spec.label} takes no option {', '.join(sorted(unknown))}.")
    now = timezone.now()
    name = actor.get_username() if actor is not None else _actor_name()
    run = JobRun.objects.create(
        job=job,
        trigger=trigger,
        options=options,
        requested_by=actor if getattr(actor, "is_authenticated", False) else None,
        requested_by_name=name[:150],
        scheduled_for=now,
        queued_at=now,
        task_id=str(uuid.uuid4()),
    )
    if actor is not None:
        ledger.append(
            action="job.request",
            object_type=ledger.object_type_of(JobRun),
            object_id=run.pk,
            object_repr=f"{spec.label} queued to run now",
            after={"job": job, "options": options},
            reason=reason.strip() or f"{spec.label}: run now",
            actor=user_actor(actor),
        )
    # Through the outbox, in this transaction: the run is queued even if the broker is down at commit time.
    outbox.enqueue(spec.task_name, kwargs={"job_run_id": run.pk}, task_id=run.task_id)
    return run


def queued_recently(job: str, within: dt.timedelta = dt.timedelta(hours=1)) -> bool:
    """A run of ``job`` waits for a worker already (to debounce event-triggered runs)."""
    return JobRun.objects.filter(job=job, status=JobStatus.QUEUED, queued_at__gte=timezone.now() - within).exists()


# --- The ledger verification job --------------------------------------------------------------------------------------

ALERT_ROLES: tuple[str, ...] = (Role.COMPLIANCE_REVIEWER, Role.AUDITOR)


def alert_recipients() -> list[str]:
    return sorted(
        set(
            get_user_model()
            .objects.filter(groups__name__in=[str(r) for r in ALERT_ROLES], is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    )


def run_verify_audit_log(run: JobRun) -> Outcome:
    """Recompute the whole chain; record the result in the ledger; on a break, mail the reviewers and auditors."""
    result = ledger.verify_database()
    details = {
        "ok": result.ok,
        "entries": result.entries,
        "first": list(result.first) if result.first else None,
        "last": list(result.last) if result.last else None,
        "broken_at": result.broken_at,
        "problem": result.problem,
    }
    with transaction.atomic():
        ledger.append(
            action="audit.verify",
            object_type="governance.auditevent",
            object_repr="Audit ledger verification",
            after=details,
            reason=result.summary(),
        )
        if not result.ok:
            recipients = alert_recipients()
            details["mailed"] = recipients
            summary = result.summary()
            transaction.on_commit(lambda: _mail_broken_chain(summary, recipients))
    return Outcome(summary=result.summary(), result=details, alert=not result.ok)


def _mail_broken_chain(summary: str, recipients: list[str]) -> None:
    if not recipients:
        log.error("audit ledger broken and no compliance reviewer or auditor has an email address: %s", summary)
        return
    send_mail(
        subject="[Audit ledger] Hash chain verification failed",
        message=(
            f"{summary}\n\nThe daily verification of the audit ledger found the chain broken: an entry was altered, "
            "removed or inserted outside the application. Compare with an earlier export or the last hash you kept, "
            f"and see the Jobs page: {settings.DASHBOARD_URL.rstrip('/')}/compliance/jobs/\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=recipients,
    )
