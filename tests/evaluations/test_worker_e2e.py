"""End to end through a real Celery worker on Redis: an ingest fires the guardrail trigger, the worker rolls back
and notifies (email and a signed webhook to a local HTTP server)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.core import mail
from django.db import connections
from werkzeug import Response

from evaluations.models import TriggerFiring
from rollout import notifications
from rollout.models import DeliveryStatus, Incident, PhaseStatus, RolloutStatus, WebhookDelivery
from rollout.roles import Role
from tests.evaluations.conftest import run
from tests.factories import advance_to, complete_readiness


def _close_worker_connections(**kwargs) -> None:
    # The worker thread's own connections: closed after each task so the test database can be dropped.
    connections.close_all()


def wait_for(predicate, timeout: float = 45.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the worker")


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_ingest_fires_the_trigger_and_a_real_worker_rolls_back(client, users, tenants, httpserver, token):
    from config.celery_app import app
    from rollout.services import rollout_create_from_playbook

    admin = users[Role.ROLLOUT_ADMIN]
    admin.email = "rollout-admin@example.com"
    admin.save(update_fields=["email"])
    rollout = rollout_create_from_playbook(name="E2E rollout", owner=admin)
    complete_readiness(rollout, admin)
    advance_to(rollout, "canary", admin)
    _endpoint, secret = notifications.webhook_endpoint_create(
        rollout=rollout, name="triage", url=httpserver.url_for("/hook"), actor=None
    )
    received = []
    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        lambda request: received.append(request) or Response("ok", status=200)
    )
    raw = token("ingest", "read")
    entered = rollout.phases.get(kind="canary").entered_at

    app.conf.task_always_eager = False
    app.control.purge()  # nothing left over from an earlier run in this Redis database
    task_postrun.connect(_close_worker_connections, weak=False, dispatch_uid="e2e-close")
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30):
            runs = [
                run(
                    rollout.slug,
                    run_id=f"e2e-{i}",
                    conversations=200,
                    guardrail_compensations=11,
                    finished=entered + dt.timedelta(seconds=i),
                )
                for i in (1, 2)
            ]
            response = client.post(
                "/api/v1/evaluation-runs/",
                {"runs": runs},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {raw}",
            )
            assert response.status_code == 201
            assert Incident.objects.count() == 0  # the rollback is the worker's job, after commit
            wait_for(lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).exists())
            wait_for(lambda: mail.outbox)
    finally:
        task_postrun.disconnect(dispatch_uid="e2e-close")
        app.conf.task_always_eager = True

    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLED_BACK
    assert rollout.phases.get(kind="canary").status == PhaseStatus.ROLLED_BACK
    firing = TriggerFiring.objects.get()
    assert (firing.trigger, firing.run.run_id, firing.streak) == ("guardrail", "e2e-2", 2)
    incident = firing.incident
    assert (incident.kind, incident.trigger, incident.status) == ("automatic", "guardrail", "open")
    assert [e["run_id"] for e in incident.events.get(kind="evidence").data["evidence"]] == ["e2e-1", "e2e-2"]
    assert len(received) == 1
    import hashlib
    import hmac

    body, ts = received[0].get_data(), received[0].headers["X-Rollout-Timestamp"]
    assert (
        received[0].headers["X-Rollout-Signature"]
        == "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    assert mail.outbox[0].subject.startswith("[Rollback] Automatic rollback in Canary")
