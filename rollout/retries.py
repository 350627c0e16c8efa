"""Celery options that make a task retry when its database connection is lost (a PostgreSQL restart, a failover,
``pg_terminate_backend``): ``@shared_task(**DATABASE_RETRY)``.

Every task is safe to run twice, so the retry (same task id, after 1, 2, 4, ... s, at most 30 s apart) is the
whole recovery: the failed connection is closed after the task (Celery's Django fix-up) and the retry opens a
new one, checked by ``CONN_HEALTH_CHECKS``. Without it the task failed, its message was acknowledged, and its
effect waited for the next sweep or schedule.
"""

from django.db import InterfaceError, OperationalError

DATABASE_ERRORS = (OperationalError, InterfaceError)

DATABASE_RETRY = {
    "autoretry_for": DATABASE_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": False,
    "max_retries": 8,
}
