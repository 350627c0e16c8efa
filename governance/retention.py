"""Retention of raw evaluation outputs (design section 5): the purge, its receipts, and legal holds.

An output expires when its run finished more than ``RETENTION_DAYS`` x 24 h
before the run's scheduled time, counted in UTC: local time zones and their DST
changes play no part. It is deleted unless its rollout is under an active legal
hold; nothing else deletes outputs (on PostgreSQL a trigger refuses any other
DELETE, migration 0005). Run summaries, the ledger, approvals and compliance
records are never touched.

The purge works in batches of ``RETENTION_BATCH_SIZE`` rows, walking the
``(run_finished_at, id)`` index: each batch selects its rows ``FOR UPDATE SKIP
LOCKED``, deletes them by primary key, marks runs whose outputs are all gone,
and adds its counts to the receipt, all in one short transaction. So:

* a killed run leaves whole batches behind it and a receipt, still ``running``,
  that counts exactly what was deleted; the next run marks it ``interrupted``
  (with a ledger entry) and deletes the rest;
* two runs at once are serialized by the job lock (``jobs.run_job``), and even
  without it every row is deleted and counted by one of them only;
* a legal hold placed while a purge runs is seen by the next batch: batches hold
  a shared advisory lock that placing a hold takes exclusively.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from evaluations.models import EvaluationRun, RunOutput
from rollout.errors import DomainError
from rollout.history import actor_name, save_tracked
from rollout.models import Rollout
from rollout.roles import require_perm

from . import ledger
from .jobs import Outcome, advisory_key
from .models import JobRun, LegalHold, ReceiptStatus, RetentionReceipt

HOLD_LOCK = advisory_key("legal-holds")
# The transaction-local setting the PostgreSQL delete guard on evaluations_runoutput reads.
GUARD_SETTING = "rgd.retention_cutoff"


class InvalidRetentionRun(DomainError):
    code = "invalid-retention-run"
    status = 422
    title = "The retention run cannot start"


class HoldAlreadyActive(DomainError):
    code = "hold-already-active"
    status = 409
    title = "The rollout is already under a legal hold"


class HoldNotActive(DomainError):
    code = "hold-not-active"
    status = 409
    title = "The legal hold was already released"


class ReasonRequired(DomainError):
    code = "reason-required"
    status = 422
    title = "A reason is required"


# --- Policy -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    days: int
    batch_size: int
    pause_seconds: float

    def cutoff(self, scheduled_for: dt.datetime) -> dt.datetime:
        """Outputs of runs finished before this are expired.

        Converted to UTC first: subtracting days from a ``ZoneInfo``-aware time is
        wall-clock arithmetic, which across a DST change is an hour off 90 x 24 h.
        """
        return scheduled_for.astimezone(dt.UTC) - dt.timedelta(days=self.days)


def policy() -> Policy:
    return Policy(
        days=settings.RETENTION_DAYS,
        batch_size=settings.RETENTION_BATCH_SIZE,
        pause_seconds=settings.RETENTION_BATCH_PAUSE_SECONDS,
    )


# --- Reads the purge and the Retention page share ---------------------------------------------------------------------


def active_hold_rollout_ids() -> list[int]:
    return list(LegalHold.objects.filter(released_at__isnull=True).values_list("rollout_id", flat=True))


def _held(rollout_ids: list[int]) -> Exists:
    return Exists(EvaluationRun.objects.filter(pk=OuterRef("run_id"), rollout_id__in=rollout_ids))


def expired_outputs(cutoff: dt.datetime, held_rollout_ids: list[int]) -> QuerySet[RunOutput]:
    """Expired outputs not under a hold (what a purge with this cutoff deletes)."""
    qs = RunOutput.objects.filter(run_finished_at__lt=cutoff)
    return qs.exclude(_held(held_rollout_ids)) if held_rollout_ids else qs


def held_outputs(cutoff: dt.datetime, held_rollout_ids: list[int]) -> QuerySet[RunOutput]:
    """Expired outputs that a legal hold keeps."""
    if not held_rollout_ids:
        return RunOutput.objects.none()
    return RunOutput.objects.filter(run_finished_at__lt=cutoff).filter(_held(held_rollout_ids))


# --- The purge --------------------------------------------------------------------------------------------------------


def _enter_batch(cutoff: dt.datetime) -> None:
    """Inside a batch's transaction: wait out a hold being placed, and tell the delete guard the cutoff."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [HOLD_LOCK])
            cursor.execute("SELECT set_config(%s, %s, true)", [GUARD_SETTING, cutoff.isoformat()])


def _ledger(receipt: RetentionReceipt, action: str, reason: str) -> int:
    event = ledger.append(
        action=action,
        object_type=ledger.object_type_of(RetentionReceipt),
        object_id=receipt.pk,
        object_repr=str(receipt),
        after={
            "status": receipt.status,
            "dry_run": receipt.dry_run,
            "scheduled_for": receipt.scheduled_for,
            "cutoff": receipt.cutoff,
            "retention_days": receipt.retention_days,
            "rows_matched": receipt.rows_matched,
            "rows_deleted": receipt.rows_deleted,
            "rows_held": receipt.rows_held,
            "runs_marked": receipt.runs_marked,
            "batches": receipt.batches,
            "held_rollouts": receipt.held_rollouts,
            "job_run": receipt.job_run_id,
        },
        reason=reason,
    )
    RetentionReceipt.objects.filter(pk=receipt.pk).update(ledger_sequence=event.sequence)
    receipt.ledger_sequence = event.sequence
    return event.sequence


def interrupt_unfinished(now: dt.datetime | None = None) -> list[RetentionReceipt]:
    """Receipts left ``running`` by a killed process become ``interrupted``, each with a ledger entry.

    Only call this holding the retention job's lock: then no other run is alive.
    """
    now = now or timezone.now()
    done = []
    for receipt in RetentionReceipt.objects.filter(status=ReceiptStatus.RUNNING).order_by("id"):
        with transaction.atomic():
            receipt.status, receipt.finished_at = ReceiptStatus.INTERRUPTED, now
            receipt.error = "The run stopped between batches (killed or lost); the next run deleted the rest."
            receipt.save(update_fields=["status", "finished_at", "error"])
            _ledger(
                receipt,
                "retention.interrupted",
                f"Retention run interrupted after {receipt.rows_deleted} outputs in {receipt.batches} batches",
            )
        done.append(receipt)
    return done


def enforce_retention(
    *,
    scheduled_for: dt.datetime,
    dry_run: bool = False,
    job_run: JobRun | None = None,
    batch_size: int | None = None,
    pause_seconds: float | None = None,
) -> RetentionReceipt:
    """Purge (or with ``dry_run`` count) expired outputs; returns the receipt. Call it under the job lock."""
    rules = policy()
    batch_size = batch_size or rules.batch_size
    pause = rules.pause_seconds if pause_seconds is None else pause_seconds
    now = timezone.now()
    if timezone.is_naive(scheduled_for):
        raise InvalidRetentionRun("The scheduled time needs a time zone.")
    if scheduled_for > now + dt.timedelta(minutes=1):
        raise InvalidRetentionRun("A retention run cannot be scheduled in the future: it would delete younger outputs.")
    if batch_size < 1:
        raise InvalidRetentionRun("The batch size must be at least 1.")
    interrupt_unfinished(now)
    cutoff = rules.cutoff(scheduled_for)
    try:
        receipt = RetentionReceipt.objects.create(
            job_run=job_run,
            scheduled_for=scheduled_for,
            cutoff=cutoff,
            retention_days=rules.days,
            dry_run=dry_run,
            batch_size=batch_size,
            started_at=now,
        )
    except IntegrityError as exc:  # another run is running: the job lock should have prevented it
        raise InvalidRetentionRun("Another retention run is in progress.") from exc
    try:
        if dry_run:
            held_ids = active_hold_rollout_ids()
            receipt.rows_matched = expired_outputs(cutoff, held_ids).count()
        else:
            _purge(receipt, cutoff, batch_size, pause)
            receipt.refresh_from_db()
            held_ids = active_hold_rollout_ids()
        with transaction.atomic():
            receipt.rows_held = held_outputs(cutoff, held_ids).count()
            receipt.held_rollouts = sorted(Rollout.objects.filter(pk__in=held_ids).values_list("slug", flat=True))
            receipt.status, receipt.finished_at = ReceiptStatus.COMPLETED, timezone.now()
            receipt.save()
            verb = "would delete" if dry_run else "deleted"
            _ledger(
                receipt,
                "retention.dry_run" if dry_run else "retention.purge",
                f"Retention ({rules.days} days, cutoff {cutoff:%Y-%m-%d %H:%M:%S} UTC): {verb} "
                f"{receipt.rows_matched} outputs, {receipt.rows_held} held back",
            )
    except BaseException as exc:
        # A kill (SIGKILL) runs no code: its receipt stays "running" until the next run marks it interrupted.
        # A time limit or a shutdown stops between batches like a kill would, but can say so now.
        stopped = isinstance(exc, SoftTimeLimitExceeded | KeyboardInterrupt | SystemExit)
        receipt.refresh_from_db()
        receipt.status = ReceiptStatus.INTERRUPTED if stopped else ReceiptStatus.FAILED
        receipt.finished_at = timezone.now()
        receipt.error = f"{type(exc).__name__}: {exc}"[:2000]
        receipt.save(update_fields=["status", "finished_at", "error"])
        _ledger(
            receipt,
            f"retention.{receipt.status}",
            f"Retention run {receipt.status} after {receipt.rows_deleted} outputs: {receipt.error}",
        )
        raise
    return receipt


def _purge(receipt: RetentionReceipt, cutoff: dt.datetime, batch_size: int, pause: float) -> None:
    after: tuple[dt.datetime, int] | None = None
    while True:
        started = time.perf_counter()
        with transaction.atomic():
            _enter_batch(cutoff)
            held_ids = active_hold_rollout_ids()
            if connection.vendor == "postgresql":
                deleted, marked, last = _delete_batch(cutoff, held_ids, after, batch_size)
            else:
                deleted, marked, last = _delete_batch_orm(cutoff, held_ids, after, batch_size)
            if not deleted:
                break
            elapsed_ms = round((time.perf_counter() - started) * 1000)
            RetentionReceipt.objects.filter(pk=receipt.pk).update(
                rows_matched=F("rows_matched") + deleted,
                rows_deleted=F("rows_deleted") + deleted,
                runs_marked=F("runs_marked") + marked,
                batches=F("batches") + 1,
                longest_batch_ms=Greatest(F("longest_batch_ms"), elapsed_ms),
            )
        after = last
        if deleted < batch_size:
            break
        if pause:
            time.sleep(pause)


# One batch in one statement: pick the next rows off the (run_finished_at, id) index after the last batch's key
# (locking them, skipping rows another purge holds), delete them by their row address (a TID scan: no primary
# key probe per row; a locked row cannot move), and stamp the runs left without outputs; only three numbers and
# the last key come back. The runs' count of outputs is read from the statement's snapshot,
# which still holds the rows this statement deletes: a run is left without outputs when that count equals the
# rows deleted of it.
_BATCH_SQL = """
WITH picked AS (
    SELECT o.ctid AS tid FROM evaluations_runoutput o
    WHERE o.run_finished_at < %(cutoff)s AND (o.run_finished_at, o.id) > (%(after_at)s, %(after_id)s) {held}
    ORDER BY o.run_finished_at, o.id
    LIMIT %(limit)s
    FOR UPDATE OF o SKIP LOCKED
), gone AS (
    DELETE FROM evaluations_runoutput o WHERE o.ctid = ANY(ARRAY(SELECT tid FROM picked))
    RETURNING o.id, o.run_id, o.run_finished_at
), per_run AS (
    SELECT run_id, count(*) AS n FROM gone GROUP BY run_id
), marked AS (
    UPDATE evaluations_evaluationrun r SET outputs_purged_at = %(now)s
    FROM per_run
    WHERE r.id = per_run.run_id AND r.outputs_purged_at IS NULL
      AND (SELECT count(*) FROM evaluations_runoutput o WHERE o.run_id = r.id) = per_run.n
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM marked), last.run_finished_at, last.id
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT run_finished_at, id FROM gone ORDER BY run_finished_at DESC, id DESC LIMIT 1) last ON true
"""
_NOT_HELD = (
    "AND NOT EXISTS (SELECT 1 FROM evaluations_evaluationrun r WHERE r.id = o.run_id AND r.rollout_id = ANY(%(held)s))"
)


def _delete_batch(
    cutoff: dt.datetime, held_ids: list[int], after: tuple[dt.datetime, int] | None, limit: int
) -> tuple[int, int, tuple[dt.datetime, int] | None]:
    """(outputs deleted, runs marked, last key) of one batch, in one round trip (PostgreSQL)."""
    after_at, after_id = after or (dt.datetime.min.replace(tzinfo=dt.UTC), 0)
    params = {
        "cutoff": cutoff,
        "after_at": after_at,
        "after_id": after_id,
        "limit": limit,
        "now": timezone.now(),
        "held": held_ids,
    }
    with connection.cursor() as cursor:
        cursor.execute(_BATCH_SQL.format(held=_NOT_HELD if held_ids else ""), params)
        deleted, marked, last_at, last_id = cursor.fetchone()
    return deleted, marked, (last_at, last_id) if deleted else None


def _delete_batch_orm(
    cutoff: dt.datetime, held_ids: list[int], after: tuple[dt.datetime, int] | None, limit: int
) -> tuple[int, int, tuple[dt.datetime, int] | None]:
    """``_delete_batch`` through the ORM (SQLite, the development default: one writer at a time)."""
    candidates = expired_outputs(cutoff, held_ids)
    if after is not None:
        candidates = candidates.filter(run_finished_at__gte=after[0]).filter(
            Q(run_finished_at__gt=after[0]) | Q(id__gt=after[1])
        )
    rows = list(candidates.order_by("run_finished_at", "id").values_list("id", "run_id", "run_finished_at")[:limit])
    if not rows:
        return 0, 0, None
    deleted, _ = RunOutput.objects.filter(pk__in=[r[0] for r in rows]).delete()
    return deleted, _mark_runs({r[1] for r in rows}), (rows[-1][2], rows[-1][0])


def _mark_runs(run_ids: set[int]) -> int:
    """Stamp ``outputs_purged_at`` on runs whose outputs are now all gone (the run page says so)."""
    return (
        EvaluationRun.objects.filter(pk__in=run_ids, outputs_purged_at__isnull=True)
        .exclude(Exists(RunOutput.objects.filter(run_id=OuterRef("pk"))))
        .update(outputs_purged_at=timezone.now())
    )


def run_enforce(run: JobRun) -> Outcome:
    """The job body (``jobs.run_job``). Options: ``dry_run``; from the command, ``batch_size`` and ``pause_seconds``."""
    options = run.options
    receipt = enforce_retention(
        scheduled_for=run.scheduled_for,
        dry_run=bool(options.get("dry_run")),
        job_run=run,
        batch_size=options.get("batch_size"),
        pause_seconds=options.get("pause_seconds"),
    )
    verb = "Would delete" if receipt.dry_run else "Deleted"
    return Outcome(
        summary=(
            f"{verb} {receipt.rows_matched} outputs older than {receipt.cutoff:%Y-%m-%d %H:%M} UTC; "
            f"{receipt.rows_held} held back"
            + (f" ({', '.join(receipt.held_rollouts)})" if receipt.rows_held and receipt.held_rollouts else "")
        ),
        result={
            "receipt": receipt.pk,
            "dry_run": receipt.dry_run,
            "cutoff": receipt.cutoff.isoformat(),
            "rows_matched": receipt.rows_matched,
            "rows_deleted": receipt.rows_deleted,
            "rows_held": receipt.rows_held,
            "batches": receipt.batches,
            "longest_batch_ms": receipt.longest_batch_ms,
        },
    )


# --- Legal holds ------------------------------------------------------------------------------------------------------


def _lock_holds() -> None:
    """Exclusive against purge batches (which hold it shared): a hold is in force for every batch after it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [HOLD_LOCK])


@transaction.atomic
def legal_hold_place(*, rollout: Rollout, reason: str, actor: Any) -> LegalHold:
    """A compliance reviewer puts a rollout's raw outputs on hold: no purge deletes them until it is released."""
    require_perm(actor, "governance.add_legalhold", "Only compliance reviewers place legal holds.")
    if not reason.strip():
        raise ReasonRequired("A legal hold needs a reason (the matter or request it serves).", field="reason")
    Rollout.objects.select_for_update().get(pk=rollout.pk)
    _lock_holds()
    if LegalHold.objects.filter(rollout=rollout, released_at__isnull=True).exists():
        raise HoldAlreadyActive(f"{rollout.name} is already under a legal hold.")
    hold = LegalHold(
        rollout=rollout,
        reason=reason.strip(),
        placed_by=actor,
        placed_by_name=actor_name(actor),
        placed_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            return save_tracked(hold, action="legal_hold.place", actor=actor, reason=reason.strip())
    except IntegrityError as exc:  # the partial unique index: one active hold per rollout
        raise HoldAlreadyActive(f"{rollout.name} is already under a legal hold.") from exc


@transaction.atomic
def legal_hold_release(*, hold: LegalHold, reason: str, actor: Any, auth: dict[str, Any] | None = None) -> LegalHold:
    """Release a hold: the rollout's expired outputs go on the next retention run."""
    require_perm(actor, "governance.release_legalhold", "Only compliance reviewers release legal holds.")
    if not reason.strip():
        raise ReasonRequired("Releasing a legal hold needs a reason.", field="reason")
    Rollout.objects.select_for_update().get(pk=hold.rollout_id)
    _lock_holds()
    hold = LegalHold.objects.select_for_update().select_related("rollout").get(pk=hold.pk)
    if not hold.is_active:
        raise HoldNotActive(f"The hold on {hold.rollout.name} was already released by {hold.released_by_name}.")
    hold.released_at = timezone.now()
    hold.released_by = actor if getattr(actor, "is_authenticated", False) else None
    hold.released_by_name = actor_name(actor)
    hold.release_reason = reason.strip()
    return save_tracked(
        hold,
        action="legal_hold.release",
        actor=actor,
        reason=reason.strip(),
        audit_extra={"auth": auth} if auth else None,
    )
