"""The transactional outbox: Celery tasks that must not be lost when the broker is down at commit time.

``enqueue`` writes an ``OutboxMessage`` in the caller's transaction and, on
commit, tries to publish it at once. If the broker answers, the row is deleted
and nothing else happens. If it does not (Redis down, a timeout), the caller
still succeeds: its data and the row are committed, and ``relay_pending`` (the
``rollout-relay-outbox`` beat entry, every ``OUTBOX_RELAY_SECONDS``) sends the
row once the broker is back. The lag after an outage is therefore at most one
relay period plus the worker's queue.

A row is claimed (``claimed_until``) before it is published and deleted after,
so two relays never send it at the same moment; a process that dies between
publishing and deleting leaves it to be sent again after the claim expires.
Every task sent through here is safe to run twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.utils.imports import symbol_by_name

from .models import OutboxMessage

log = logging.getLogger(__name__)

# A claimed row is sent within this; after it another relay may try again.
CLAIM_SECONDS = 60


def enqueue(
    task: str,
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    countdown: float = 0,
    task_id: str = "",
) -> OutboxMessage:
    """Record ``task`` to be sent once the current transaction commits (now, when there is none)."""
    message = OutboxMessage.objects.create(
        task=task,
        args=list(args),
        kwargs=kwargs or {},
        task_id=task_id,
        not_before=timezone.now() + dt.timedelta(seconds=countdown),
    )
    pk = message.pk
    # robust: a failure to publish is the relay's to handle, never the committed caller's.
    transaction.on_commit(lambda: relay_one(pk), robust=True)
    return message


def _claim(pks: Sequence[int], now: dt.datetime) -> list[OutboxMessage]:
    """Claim those of the given rows that are free; returns the rows this call claimed."""
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    with transaction.atomic():
        rows = list(OutboxMessage.objects.select_for_update(skip_locked=True).filter(free, pk__in=pks).order_by("id"))
        OutboxMessage.objects.filter(pk__in=[r.pk for r in rows]).update(
            claimed_until=now + dt.timedelta(seconds=CLAIM_SECONDS)
        )
    return rows


def _task(message: OutboxMessage) -> Any:
    # The task object (not send_task by name), so CELERY_TASK_ALWAYS_EAGER holds in tests.
    return symbol_by_name(message.task)


def _eager(message: OutboxMessage) -> bool:
    return bool(_task(message).app.conf.task_always_eager)


def _publish(message: OutboxMessage) -> bool:
    """Publish one claimed row; delete it when the broker took it, release it otherwise."""
    options: dict[str, Any] = {"task_id": message.task_id} if message.task_id else {}
    try:
        _task(message).apply_async(args=message.args, kwargs=message.kwargs, **options)
    except Exception as exc:
        if _eager(message):
            raise  # in-process: the task's own error, as the tests expect
        log.warning("outbox: could not send %s (id %s): %s", message.task, message.pk, exc)
        OutboxMessage.objects.filter(pk=message.pk).update(
            claimed_until=None, attempts=message.attempts + 1, last_error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return False
    OutboxMessage.objects.filter(pk=message.pk).delete()
    return True


def relay_one(pk: int) -> bool:
    """Send one row now (the on-commit attempt). False when it stays for the relay (a failure, or not due yet)."""
    now = timezone.now()
    try:
        claimed = _claim([pk], now)
        if not claimed:
            return False
        message = claimed[0]
        if message.not_before > now and not _eager(message):
            # Held back until due: the relay sends it then (a countdown in the broker would be redelivered
            # early by Redis's visibility timeout).
            OutboxMessage.objects.filter(pk=pk).update(claimed_until=None)
            return False
        return _publish(message)
    except DatabaseError as exc:
        log.warning("outbox: could not send row %s now; the relay will: %s", pk, exc)
        return False


def relay_pending(limit: int | None = None) -> tuple[int, int]:
    """Send the due rows left by failed on-commit attempts or held back by a countdown. Returns (sent, failed).

    Stops at the first failure: the broker is most likely still down.
    """
    limit = limit or settings.OUTBOX_RELAY_BATCH
    now = timezone.now()
    # Rows younger than a few seconds are still being sent by their own on-commit attempt.
    settle = now - dt.timedelta(seconds=5)
    pks = list(
        OutboxMessage.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now), not_before__lte=now, created_at__lt=settle
        )
        .order_by("not_before", "id")
        .values_list("pk", flat=True)[:limit]
    )
    claimed = _claim(pks, now)
    sent = failed = 0
    for index, message in enumerate(claimed):
        if _publish(message):
            sent += 1
            continue
        failed += 1
        # The broker is down: the rows not reached go back to the pool.
        OutboxMessage.objects.filter(pk__in=[m.pk for m in claimed[index + 1 :]]).update(claimed_until=None)
        break
    return sent, failed


def pending_count() -> int:
    """Rows waiting to be sent (the status page and the fault suite read it)."""
    return OutboxMessage.objects.count()
