"""The retention purge (P8): 1M expired raw outputs of 3M (x --scale), against one ``DELETE`` (plus the runs update)
on an identical copy of the two tables, alternated in the same run. The demo's legal hold stays in place (its
rollout's expired outputs are kept): both sides delete exactly the same rows.

``seed_bench`` loads 1M runs and 3M outputs over 135 days, so a third are past the 90-day retention. The figure is
the purge through the job runner (job lock, receipt, batches of ``RETENTION_BATCH_SIZE`` walking the
``(run_finished_at, id)`` index with the delete guard trigger, runs marked ``outputs_purged_at``, ledger entry),
for one fixed scheduled time. The reference copies ``evaluations_runoutput`` and ``evaluations_evaluationrun``
into tables of the same definition and indexes (``LIKE ... INCLUDING ALL``) and runs, in one transaction, one
``DELETE`` of every output older than the same cutoff and one ``UPDATE`` stamping the runs left without outputs.

Between samples (outside the clock) the deleted rows are put back from a snapshot of the expired rows, the runs'
stamps are cleared, and both the product's and the copy's tables are vacuumed and analysed: each sample starts from
the same state. The row fails when the purge's longest batch (``RetentionReceipt.longest_batch_ms``) reaches 500 ms.
"""

from __future__ import annotations

import datetime as dt
import time

from django.db import connection

from .rows import Row, alternate, row

OUTPUTS = "evaluations_runoutput"
RUNS = "evaluations_evaluationrun"
COPY_OUTPUTS = "bench_copy_runoutput"
COPY_RUNS = "bench_copy_evaluationrun"
EXPIRED = "bench_expired_runoutput"


def _sql(*statements: str, params: list | None = None) -> int:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)
        return cursor.rowcount


def _vacuum() -> None:
    # VACUUM runs outside a transaction: the benchmark runs in autocommit.
    for table in (OUTPUTS, RUNS, COPY_OUTPUTS, COPY_RUNS):
        _sql(f"VACUUM (ANALYZE) {table}")


def _copies(cutoff: dt.datetime, held: list[int]) -> None:
    _sql(
        f"CREATE TABLE {COPY_OUTPUTS} (LIKE {OUTPUTS} INCLUDING ALL)",
        f"INSERT INTO {COPY_OUTPUTS} SELECT * FROM {OUTPUTS}",  # noqa: S608 - constant table names
        f"CREATE TABLE {COPY_RUNS} (LIKE {RUNS} INCLUDING ALL)",
        f"INSERT INTO {COPY_RUNS} SELECT * FROM {RUNS}",  # noqa: S608
    )
    # What the purge deletes: expired, and not of a rollout under a legal hold (the demo data holds one).
    _sql(
        f"CREATE TABLE {EXPIRED} AS SELECT o.* FROM {OUTPUTS} o JOIN {RUNS} r ON r.id = o.run_id "  # noqa: S608
        "WHERE o.run_finished_at < %s AND r.rollout_id <> ALL(%s)",
        params=[cutoff, held],
    )


def _restore(outputs: str, runs: str) -> None:
    _sql(
        f"INSERT INTO {outputs} SELECT * FROM {EXPIRED}",  # noqa: S608 - constant table names
        f"UPDATE {runs} SET outputs_purged_at = NULL WHERE outputs_purged_at IS NOT NULL",  # noqa: S608
    )


def run(args) -> dict:
    from django.db import transaction

    from evaluations.models import RunOutput
    from governance import jobs, retention
    from governance.benchdata import seed_bench
    from governance.models import Job, JobTrigger

    runs = max(100, int(1_000_000 * args.scale))
    seeded = seed_bench(runs=runs, ledger_entries=0, outputs=3 * runs, expired_fraction=1 / 3)
    scheduled_for = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cutoff = retention.policy().cutoff(scheduled_for)
    held = retention.active_hold_rollout_ids()
    _copies(cutoff, held)
    held_outputs = retention.held_outputs(cutoff, held).count()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {EXPIRED}")  # noqa: S608 - constant table name
        expired = cursor.fetchone()[0]
    total = RunOutput.objects.count()
    receipts, marked = [], []

    def purge() -> float:
        _vacuum()
        started = time.perf_counter()
        job_run = jobs.run_job(Job.ENFORCE_RETENTION, trigger=JobTrigger.COMMAND, scheduled_for=scheduled_for)
        seconds = time.perf_counter() - started
        assert job_run.status == "succeeded", job_run.summary
        receipt = job_run.receipts.get()
        assert receipt.rows_deleted == expired, (receipt.rows_deleted, expired)
        receipts.append(receipt)
        _restore(OUTPUTS, RUNS)
        return seconds

    def one_delete() -> float:
        _vacuum()
        started = time.perf_counter()
        with transaction.atomic():
            deleted = _sql(
                f"DELETE FROM {COPY_OUTPUTS} o USING {COPY_RUNS} r WHERE r.id = o.run_id "  # noqa: S608
                "AND o.run_finished_at < %s AND r.rollout_id <> ALL(%s)",
                params=[cutoff, held],
            )
            marked.append(
                _sql(
                    f"UPDATE {COPY_RUNS} r SET outputs_purged_at = now() WHERE r.outputs_purged_at IS NULL "  # noqa: S608
                    f"AND r.finished_at < %s AND r.rollout_id <> ALL(%s) "
                    f"AND NOT EXISTS (SELECT 1 FROM {COPY_OUTPUTS} o WHERE o.run_id = r.id)",
                    params=[cutoff, held],
                )
            )
        seconds = time.perf_counter() - started
        assert deleted == expired, (deleted, expired)
        _restore(COPY_OUTPUTS, COPY_RUNS)
        return seconds

    measured, references = alternate(args.repeats, purge, one_delete)
    longest = max(r.longest_batch_ms for r in receipts)
    rows: list[Row] = [
        row(
            "P8",
            f"retention purge of {expired:,} expired of {total:,} outputs ({held_outputs:,} more held)",
            measured,
            references,
            unit="s",
            target="<= 1.5x; longest batch < 500 ms",
            reference_what="one DELETE plus the runs update on an identical copy",
            check=lambda _f, _r, ratio: ratio is not None and ratio <= 1.5 and longest < 500,
        )
    ]
    _sql(*(f"DROP TABLE {t}" for t in (COPY_OUTPUTS, COPY_RUNS, EXPIRED)))
    from django.conf import settings

    return {
        "database": connection.vendor,
        "runs": seeded.runs,
        "outputs": total,
        "expired_outputs": expired,
        "held_outputs": held_outputs,
        "seed_seconds": seeded.seconds,
        "batch_size": settings.RETENTION_BATCH_SIZE,
        "batches": [r.batches for r in receipts],
        "longest_batch_ms": [r.longest_batch_ms for r in receipts],
        "mean_batch_ms": [round(1000 * s / max(1, r.batches), 1) for s, r in zip(measured, receipts, strict=True)],
        "runs_marked": [r.runs_marked for r in receipts],
        "runs_marked_by_reference": marked,
        "rows": [r.as_dict() for r in rows],
    }
