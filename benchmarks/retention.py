"""Retention purge throughput: 1,000,000 expired raw outputs (x --scale) on the configured database.

Besides the expired rows, 5% as many expired outputs belong to a rollout under a
legal hold and 5% as many are younger than the cutoff, so every batch runs the
hold filter and stops at the window. Outputs are loaded with COPY on PostgreSQL
(``bulk_create`` elsewhere), 10 per run. Figures: the dry run's seconds (two
counts), the purge through the job runner (lock, receipt, batches of
``RETENTION_BATCH_SIZE`` with the delete guard trigger, ledger entry): rows/s,
batches, mean and longest batch; then the same purge with the guard trigger off,
to show what the guard costs; and the records job's first scan over every output
left (jsonb keys).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time

OUTPUTS_PER_RUN = 10
_loads = itertools.count()


def _runs(rollout, phase, finished: list[dt.datetime]) -> list[int]:
    from evaluations.models import EvaluationRun

    load = next(_loads)
    runs = EvaluationRun.objects.bulk_create(
        [
            EvaluationRun(
                run_id=f"ret-bench-{load}-{i}",
                rollout=rollout,
                phase=phase,
                arm="candidate" if i % 2 else "baseline",
                started_at=at - dt.timedelta(minutes=20),
                finished_at=at,
                conversations=200,
                guardrail_compensations=3,
                harness_version="bench-1",
                content_hash="0" * 64,
                output_count=OUTPUTS_PER_RUN,
                task_success_rate=0.87,
            )
            for i, at in enumerate(finished)
        ],
        batch_size=5000,
    )
    return [r.pk for r in runs]


def _outputs(run_ids: list[int], finished: list[dt.datetime]) -> None:
    from django.db import connection

    from evaluations.models import RunOutput

    data = {"transcript_excerpt": "User: refund? Assistant: done.", "tool_calls": [{"tool": "x", "ok": True}], "k": 1}
    if connection.vendor != "postgresql":
        RunOutput.objects.bulk_create(
            [
                RunOutput(run_id=r, conversation_id=f"c{k}", data=data, run_finished_at=at)
                for r, at in zip(run_ids, finished, strict=True)
                for k in range(OUTPUTS_PER_RUN)
            ],
            batch_size=5000,
        )
        return
    blob = json.dumps(data)
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        sql = "COPY evaluations_runoutput (run_id, conversation_id, data, run_finished_at) FROM STDIN"
        with cursor.copy(sql) as copy:
            for run_id, at in zip(run_ids, finished, strict=True):
                for k in range(OUTPUTS_PER_RUN):
                    copy.write_row((run_id, f"c{k}", blob, at))


def _load(rollout, count: int, start: dt.datetime, span: dt.timedelta) -> None:
    phase = rollout.phases.get(kind="preparation")
    runs = max(1, count // OUTPUTS_PER_RUN)
    finished = [start + span * i / runs for i in range(runs)]
    _outputs(_runs(rollout, phase, finished), finished)


def _guard(on: bool) -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            state = "ENABLE" if on else "DISABLE"
            cursor.execute(f"ALTER TABLE evaluations_runoutput {state} TRIGGER runoutput_retention_guard")


def _purge() -> tuple[float, object]:
    from governance import jobs
    from governance.models import Job, JobTrigger

    started = time.perf_counter()
    run = jobs.run_job(Job.ENFORCE_RETENTION, trigger=JobTrigger.COMMAND)
    seconds = time.perf_counter() - started
    assert run.status == "succeeded", run.summary
    return seconds, run.receipts.get()


def run(args) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from evaluations.models import RunOutput
    from governance import records, retention
    from rollout.services import rollout_create_from_playbook

    expired = int(1_000_000 * args.scale)
    owner = get_user_model().objects.create_superuser("bench-ret", "bench@example.com", "bench")
    free = rollout_create_from_playbook(name="Retention bench", owner=owner)
    held = rollout_create_from_playbook(name="Retention bench held", owner=owner)
    second = rollout_create_from_playbook(name="Retention bench second pass", owner=owner)
    now = timezone.now()

    started = time.perf_counter()
    _load(free, expired, now - dt.timedelta(days=180), dt.timedelta(days=85))
    _load(held, expired // 20, now - dt.timedelta(days=150), dt.timedelta(days=30))
    _load(free, expired // 20, now - dt.timedelta(days=80), dt.timedelta(days=70))
    load_s = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE evaluations_runoutput; ANALYZE evaluations_evaluationrun")
    retention.legal_hold_place(rollout=held, reason="bench", actor=None)

    started = time.perf_counter()
    dry = retention.enforce_retention(scheduled_for=timezone.now(), dry_run=True)
    dry_s = time.perf_counter() - started
    assert dry.rows_matched == expired and dry.rows_held == expired // 20, (dry.rows_matched, dry.rows_held)

    purge_s, receipt = _purge()
    assert receipt.rows_deleted == expired and receipt.rows_held == expired // 20

    # The same again with the PostgreSQL delete guard off: what the guard costs per batch.
    _load(second, expired // 4, now - dt.timedelta(days=180), dt.timedelta(days=85))
    _guard(False)
    try:
        unguarded_s, unguarded = _purge()
    finally:
        _guard(True)
    _load(second, expired // 4, now - dt.timedelta(days=180), dt.timedelta(days=85))
    guarded_s, guarded = _purge()

    left = RunOutput.objects.count()
    started = time.perf_counter()
    scan = records.update_compliance_records(now=timezone.now() + records.SETTLE)
    scan_s = time.perf_counter() - started
    return {
        "database": connection.vendor,
        "batch_size": settings.RETENTION_BATCH_SIZE,
        "expired_outputs": expired,
        "held_outputs": expired // 20,
        "young_outputs": expired // 20,
        "load_seconds": round(load_s, 1),
        "dry_run_seconds": round(dry_s, 2),
        "purge_seconds": round(purge_s, 2),
        "purge_rows_per_s": round(receipt.rows_deleted / purge_s),
        "batches": receipt.batches,
        "mean_batch_ms": round(1000 * purge_s / receipt.batches, 1),
        "longest_batch_ms": receipt.longest_batch_ms,
        "quarter_size_purge_rows_per_s_guard_on": round(guarded.rows_deleted / guarded_s),
        "quarter_size_purge_rows_per_s_guard_off": round(unguarded.rows_deleted / unguarded_s),
        "outputs_left_scanned": left,
        "records_first_scan_seconds": round(scan_s, 2),
        "records_fields_seen": scan.fields_seen,
    }
