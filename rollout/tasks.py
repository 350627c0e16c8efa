"""Celery tasks of the rollout core: notifications. Thin, by id, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from . import notifications, outbox
from .context import Actor, acting_as
from .models import DeliveryStatus
from .retries import DATABASE_RETRY


@shared_task(**DATABASE_RETRY, ignore_result=True, soft_time_limit=60, time_limit=90)
def send_rollback_email(incident_id: int) -> int:
    with acting_as(Actor(kind="task", name="rollout.send_rollback_email")):
        return notifications.send_rollback_email(incident_id=incident_id)


@shared_task(**DATABASE_RETRY, ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_webhook(delivery_id: int) -> str | None:
    """One attempt per run; after a failed one the next is scheduled with exponential backoff.

    The attempt count lives in the database (not in Celery's retry state), so a
    redelivered or duplicated message never exceeds WEBHOOK_MAX_ATTEMPTS.
    """
    with acting_as(Actor(kind="task", name="rollout.deliver_webhook")):
        delivery = notifications.attempt_delivery(delivery_id=delivery_id)
    if delivery is None:
        return None
    if delivery.status == DeliveryStatus.PENDING and delivery.attempt_count < settings.WEBHOOK_MAX_ATTEMPTS:
        # Through the outbox: held there until due, so neither a broker outage nor Redis's visibility timeout
        # (which redelivers countdown messages early) changes the backoff.
        outbox.enqueue(
            "rollout.tasks.deliver_webhook",
            args=[delivery_id],
            countdown=notifications.retry_countdown(delivery.attempt_count),
        )
    return delivery.status


@shared_task(**DATABASE_RETRY, ignore_result=True, soft_time_limit=50, time_limit=60)
def relay_outbox() -> int:
    """Send the outbox rows the on-commit attempt could not (broker down) or that became due (a backoff)."""
    sent, _failed = outbox.relay_pending()
    return sent
