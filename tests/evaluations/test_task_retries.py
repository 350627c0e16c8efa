"""Tasks survive a lost database connection (``pg_terminate_backend``, a PostgreSQL restart): they retry with the
same task id on a new connection instead of failing with their message acknowledged (issue 11)."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun, task_prerun
from django.db import InterfaceError, OperationalError, connection, connections

from evaluations.models import TriggerFiring
from rollout.roles import Role
from tests.evaluations.conftest import run
from tests.factories import advance_to, complete_readiness

OUR_APPS = ("rollout.", "evaluations.", "governance.")


def test_every_task_of_the_dashboard_retries_when_its_database_connection_is_lost():
    from config.celery_app import app

    app.loader.import_default_modules()
    ours = {name: task for name, task in app.tasks.items() if name.startswith(OUR_APPS)}
    assert len(ours) >= 11
    for name, task in ours.items():
        assert {OperationalError, InterfaceError} <= set(getattr(task, "autoretry_for", ())), name
        assert (task.max_retries, task.retry_backoff, task.retry_backoff_max) == (8, 1, 30), name


def _close_worker_connections(**kwargs) -> None:
    # After each task (as Celery's Django fix-up does in a real worker): a broken connection is dropped.
    connections.close_all()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_trigger_evaluation_whose_connection_is_terminated_retries_and_fires_once(users, tenants):
    from config.celery_app import app
    from evaluations.services import ingest_runs
    from rollout.services import rollout_create_from_playbook

    admin = users[Role.ROLLOUT_ADMIN]
    rollout = rollout_create_from_playbook(name="Retry rollout", owner=admin)
    complete_readiness(rollout, admin)
    advance_to(rollout, "canary", admin)
    entered = rollout.phases.get(kind="canary").entered_at
    settings = connection.settings_dict
    terminated: list[int] = []

    def terminate_first_connection(sender=None, **kwargs) -> None:
        # The first evaluation's own backend is terminated after its health check, before its first query.
        if terminated or sender.name != "evaluations.tasks.evaluate_triggers":
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with psycopg.connect(
            dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"], port=settings["PORT"] or None
        ) as other:
            # Waits (up to 10 s) until the backend is gone, so the task's first query meets a dead connection.
            assert other.execute("SELECT pg_terminate_backend(%s, 10000)", [pid]).fetchone()[0]
        terminated.append(pid)

    app.conf.task_always_eager = False
    app.control.purge()
    task_postrun.connect(_close_worker_connections, weak=False, dispatch_uid="retry-close")
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30):
            # Connected after the worker started, so it runs after Celery's Django fix-up has checked the
            # connection (CONN_HEALTH_CHECKS would otherwise replace the dead one before the task's first query).
            task_prerun.connect(terminate_first_connection, weak=False, dispatch_uid="retry-terminate")
            ingest_runs(
                payload={
                    "runs": [
                        run(
                            rollout.slug,
                            run_id=f"retry-{i}",
                            conversations=200,
                            guardrail_compensations=11,
                            finished=entered + dt.timedelta(seconds=i),
                        )
                        for i in (1, 2)
                    ]
                }
            )
            deadline = time.monotonic() + 45
            while not TriggerFiring.objects.filter(rollout=rollout).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        task_prerun.disconnect(dispatch_uid="retry-terminate")
        task_postrun.disconnect(dispatch_uid="retry-close")
        app.conf.task_always_eager = True
    assert len(terminated) == 1
    firing = TriggerFiring.objects.get(rollout=rollout)
    assert (firing.trigger, firing.run.run_id, firing.streak) == ("guardrail", "retry-2", 2)


@pytest.mark.redis
def test_a_message_abandoned_by_a_dead_worker_is_looked_for_every_10_seconds():
    """Kombu restores messages whose visibility timeout passed only on every ``unacked_restore_throttle``-th look
    (10 by default, every 10 s: up to 100 s late); the settings make every look a scan."""
    from kombu import Connection

    from config.celery_app import app

    with Connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as conn:
        channel = conn.default_channel
        assert (channel.unacked_restore_interval, channel.unacked_restore_throttle) == (10, 1)
        assert channel.visibility_timeout == app.conf.broker_transport_options["visibility_timeout"]
