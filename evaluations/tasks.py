"""Celery tasks of the evaluations app: thin, by id, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task
from django.core.cache import cache

from rollout.context import Actor, acting_as
from rollout.models import Rollout, RolloutStatus
from rollout.retries import DATABASE_RETRY

from . import services

log = logging.getLogger(__name__)

SWEEP_LOCK = "evaluations:sweep-triggers"


@shared_task(**DATABASE_RETRY, ignore_result=True, soft_time_limit=120, time_limit=180)
def evaluate_triggers(rollout_id: int) -> int | None:
    """Scheduled on commit of every ingest; the rollout row lock serialises concurrent runs."""
    with acting_as(Actor(kind="task", name="evaluations.evaluate_triggers")):
        firing = services.evaluate_triggers(rollout_id=rollout_id)
    return firing.pk if firing else None


@shared_task(**DATABASE_RETRY, ignore_result=True, soft_time_limit=540, time_limit=600)
def sweep_triggers() -> int:
    """Evaluate every rollout in progress, so a lost ``evaluate_triggers`` is caught. One sweep at a time."""
    if not cache.add(SWEEP_LOCK, "1", timeout=600):
        log.info("trigger sweep already running; skipped")
        return 0
    fired = 0
    try:
        with acting_as(Actor(kind="task", name="evaluations.sweep_triggers")):
            for rollout_id in Rollout.objects.filter(status=RolloutStatus.IN_PROGRESS).values_list("pk", flat=True):
                if services.evaluate_triggers(rollout_id=rollout_id):
                    fired += 1
    finally:
        cache.delete(SWEEP_LOCK)
    return fired
