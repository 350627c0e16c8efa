"""Retention on PostgreSQL with real concurrency: two runs at once delete each row once, and a run killed between
batches (SIGKILL of a real process) leaves consistent data that the next run finishes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from evaluations.models import RunOutput
from governance import jobs, retention
from governance.models import AuditEvent, Job, JobRun, JobStatus, JobTrigger, ReceiptStatus, RetentionReceipt

from .compliance_helpers import database_url, runs_with_outputs
from .helpers import run_threads, threaded

pytestmark = [pytest.mark.postgres, threaded]

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.timedelta(days=1)


@pytest.fixture
def expired(rollout):
    """1,000 expired outputs (500 runs) and 20 young ones."""
    now = timezone.now()
    old = runs_with_outputs(rollout, [now - 100 * DAY + i * dt.timedelta(minutes=1) for i in range(500)])
    young = runs_with_outputs(rollout, [now - DAY] * 10)
    return old, young


def expired_left(cutoff_days: int = 90) -> int:
    return RunOutput.objects.filter(run_finished_at__lt=timezone.now() - cutoff_days * DAY).count()


def test_two_runs_at_once_do_the_work_once(expired):
    def run(_i: int) -> JobRun:
        return jobs.run_job(
            Job.ENFORCE_RETENTION, trigger=JobTrigger.COMMAND, options={"batch_size": 100, "pause_seconds": 0.05}
        )

    results = run_threads(2, run)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(r.status for r in results) == [JobStatus.SKIPPED, JobStatus.SUCCEEDED]
    winner = next(r for r in results if r.status == JobStatus.SUCCEEDED)
    loser = next(r for r in results if r.status == JobStatus.SKIPPED)
    assert "another run of this job was in progress" in loser.summary
    [receipt] = RetentionReceipt.objects.all()  # the skipped run never got as far as a receipt
    assert (receipt.job_run_id, receipt.rows_deleted, receipt.batches) == (winner.pk, 1000, 10)
    assert expired_left() == 0 and RunOutput.objects.count() == 20
    assert AuditEvent.objects.filter(action="retention.purge").count() == 1


def test_without_the_lock_two_purges_still_delete_and_count_each_row_once(expired):
    now = timezone.now()
    cutoff = now - 90 * DAY
    receipts = [
        RetentionReceipt.objects.create(
            scheduled_for=now, cutoff=cutoff, retention_days=90, batch_size=25, started_at=now, status=status
        )
        for status in (ReceiptStatus.RUNNING, ReceiptStatus.FAILED)  # one may be running; the other is a stand-in
    ]

    def purge(i: int) -> None:
        retention._purge(receipts[i], cutoff, 25, 0)

    results = run_threads(2, purge)
    assert results == [None, None]
    counts = [r.rows_deleted for r in RetentionReceipt.objects.order_by("pk")]
    assert sum(counts) == 1000, counts
    assert expired_left() == 0 and RunOutput.objects.count() == 20


def _wait(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _lock_free() -> bool:
    key = jobs.advisory_key(f"job:{Job.ENFORCE_RETENTION}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        got = cursor.fetchone()[0]
        if got:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
    return got


def test_a_run_killed_between_batches_is_finished_by_the_next_run(expired):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(),
        "DJANGO_ENV": "development",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "enforce_retention", "--batch-size", "100", "--pause", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        receipt = _wait(lambda: RetentionReceipt.objects.filter(batches__gte=1).first())
        # It now sleeps 30 s before its second batch: kill it there, with no chance to clean up.
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    _wait(_lock_free)  # the server saw the connection drop and released the session's advisory lock

    receipt.refresh_from_db()
    killed_run = receipt.job_run
    assert (receipt.status, receipt.rows_deleted, receipt.batches) == (ReceiptStatus.RUNNING, 100, 1)
    assert killed_run.status == JobStatus.RUNNING and killed_run.trigger == JobTrigger.COMMAND
    # Consistent: exactly the first batch is gone, every run it emptied says so.
    assert expired_left() == 900
    assert RunOutput.objects.count() == 920

    run = jobs.run_job(Job.ENFORCE_RETENTION, trigger=JobTrigger.COMMAND)
    assert run.status == JobStatus.SUCCEEDED
    receipt.refresh_from_db()
    killed_run.refresh_from_db()
    assert receipt.status == ReceiptStatus.INTERRUPTED and killed_run.status == JobStatus.INTERRUPTED
    new = RetentionReceipt.objects.exclude(pk=receipt.pk).get()
    assert (new.status, new.rows_deleted) == (ReceiptStatus.COMPLETED, 900)
    assert expired_left() == 0 and RunOutput.objects.count() == 20
    actions = list(
        AuditEvent.objects.filter(action__startswith="retention.")
        .order_by("sequence")
        .values_list("action", "object_id")
    )
    assert actions == [("retention.interrupted", str(receipt.pk)), ("retention.purge", str(new.pk))]
