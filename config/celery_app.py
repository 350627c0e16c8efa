import contextlib
import hashlib
import logging
import os
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("rollout_dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)


def _guard_restore_unacked() -> None:
    """Keep a broker outage from killing the worker (kombu 5.7 with Redis).

    When the connection drops, the worker closes it and kombu tries to push the
    unacknowledged messages back to the queue over that dead connection; the
    AttributeError this raises is not one of the connection errors Celery
    ignores, so the worker stopped with "Unrecoverable error" (the fault suite's
    Redis scenario shows it). The messages are still in Redis's unacked index,
    and the visibility timeout restores them; so the failed restore is logged
    and skipped.
    """
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.restore_unacked
    if getattr(original, "_guarded", False):
        return

    def restore_unacked(self, client=None):
        try:
            return original(self, client)
        except Exception as exc:
            log.warning("could not restore unacknowledged messages (%r); the visibility timeout will", exc)
            return None

    restore_unacked._guarded = True
    kombu_redis.QoS.restore_unacked = restore_unacked

    # The same for an acknowledgement of a task that finished after the connection was closed: the message
    # stays unacked and is delivered again after the visibility timeout (every task is safe to run twice).
    original_ack = kombu_redis.QoS.ack

    def ack(self, delivery_tag):
        try:
            return original_ack(self, delivery_tag)
        except AttributeError as exc:
            log.warning("could not acknowledge a message on a closed connection (%r); it will be redelivered", exc)
            return None

    kombu_redis.QoS.ack = ack


_guard_restore_unacked()


class Scheduler(PersistentScheduler):
    """Celery's file-backed beat scheduler that creates the schedule file's folder first.

    A fresh deployment has no ``var/`` (only the Makefile creates it); the stock
    scheduler then dies on ``FileNotFoundError`` and no job ever runs. Used by
    ``celery beat`` and ``celery worker -B`` alike (``CELERY_BEAT_SCHEDULER``).
    """

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()


# Seconds a beat that does not hold the lock waits before trying again.
FOLLOWER_POLL_SECONDS = 5.0
BEAT_LOCK_KEY = int.from_bytes(hashlib.sha256(b"rgd:celery-beat").digest()[:8], "big", signed=True)


class LeaderScheduler(Scheduler):
    """Beat's scheduler, sending only while this process holds a PostgreSQL session advisory lock.

    Two beats started by mistake (or a second one for failover) never send a
    job twice per period: the second waits, and takes over when the first dies
    (the server drops the lock with its connection). The lock lives on a
    connection of its own, checked before every tick, so a terminated
    connection demotes the beat before it sends anything. On SQLite (``make
    run``) there is one beat and no lock.
    """

    def __init__(self, *args, **kwargs):
        self._lock_conn = None
        super().__init__(*args, **kwargs)

    def _holds_lock(self) -> bool:
        from django.conf import settings

        if not settings.USING_POSTGRES:
            return True
        import psycopg

        if self._lock_conn is not None:
            try:
                self._lock_conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                log.warning("beat: lost the connection holding the beat lock; standing by")
                self._drop_lock_conn()
        db = settings.DATABASES["default"]
        try:
            conn = psycopg.connect(
                dbname=db["NAME"],
                user=db.get("USER") or None,
                password=db.get("PASSWORD") or None,
                host=db.get("HOST") or None,
                port=db.get("PORT") or None,
                autocommit=True,
                connect_timeout=5,
                application_name="celery-beat-lock",
            )
            acquired = conn.execute("SELECT pg_try_advisory_lock(%s)", [BEAT_LOCK_KEY]).fetchone()[0]
        except psycopg.Error as exc:
            log.warning("beat: cannot reach PostgreSQL for the beat lock: %s", exc)
            return False
        if not acquired:
            conn.close()
            return False
        log.info("beat: holds the beat lock; sending the schedule")
        self._lock_conn = conn
        return True

    def _drop_lock_conn(self) -> None:
        with contextlib.suppress(Exception):  # already broken
            self._lock_conn.close()
        self._lock_conn = None

    def tick(self, *args, **kwargs):
        if not self._holds_lock():
            return FOLLOWER_POLL_SECONDS
        return super().tick(*args, **kwargs)

    def close(self):
        super().close()
        if self._lock_conn is not None:
            self._drop_lock_conn()
