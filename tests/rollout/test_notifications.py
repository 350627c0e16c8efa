"""Rollback notifications: email to stakeholders and signed webhooks with retries, against a real local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from django.core import mail
from werkzeug import Request, Response

from rollout import notifications, services
from rollout.models import DeliveryStatus, WebhookAttempt, WebhookDelivery
from rollout.roles import Role
from tests.factories import advance_to, complete_readiness


@pytest.fixture
def in_canary(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    for user in users.values():
        user.email = f"{user.username}@example.com"
        user.save(update_fields=["email"])
    complete_readiness(rollout, admin)
    return advance_to(rollout, "canary", admin)


@pytest.fixture
def hook(in_canary, httpserver):
    endpoint, secret = notifications.webhook_endpoint_create(
        rollout=in_canary, name="triage", url=httpserver.url_for("/hook"), actor=None
    )
    return endpoint, secret


def recorder(statuses: list[int]):
    """A handler answering with ``statuses`` in turn (the last one repeats), recording each request."""
    seen: list[Request] = []

    def handle(request: Request) -> Response:
        seen.append(request)
        status = statuses[min(len(seen) - 1, len(statuses) - 1)]
        return Response("ok" if status < 300 else "nope", status=status)

    return seen, handle


def roll_back(rollout, users, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return services.rollout_rollback(
            rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="Planner loops on refunds"
        )


def test_the_deliveries_and_their_tasks_commit_with_the_rollback(
    in_canary, hook, users, django_capture_on_commit_callbacks
):
    """Recorded in the rollback's transaction (deliveries and outbox rows), sent after commit: a worker killed
    between the commit and its on-commit callbacks (none runs here) loses no notification."""
    from rollout.models import OutboxMessage

    endpoint, _secret = hook
    with django_capture_on_commit_callbacks(execute=False):
        incident = services.rollout_rollback(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="Loops")
    delivery = WebhookDelivery.objects.get(incident=incident)
    assert (delivery.endpoint_id, delivery.status, delivery.attempt_count) == (endpoint.pk, DeliveryStatus.PENDING, 0)
    assert sorted(OutboxMessage.objects.values_list("task", "args")) == [
        ("rollout.tasks.deliver_webhook", [delivery.pk]),
        ("rollout.tasks.send_rollback_email", [incident.pk]),
    ]


def test_rollback_posts_a_signed_slack_compatible_webhook_and_emails(
    in_canary, hook, httpserver, users, django_capture_on_commit_callbacks
):
    _endpoint, secret = hook
    seen, handle = recorder([200])
    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)
    incident = roll_back(in_canary, users, django_capture_on_commit_callbacks)

    assert len(seen) == 1
    request = seen[0]
    body = request.get_data()
    timestamp = request.headers["X-Rollout-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Rollout-Signature"], expected)
    assert request.headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["text"].startswith(":rotating_light: Manual rollback of ReAct rollout in Canary (internal QA)")
    assert payload["blocks"][0]["type"] == "header"
    assert payload["incident"]["id"] == incident.pk and payload["event"] == "rollout.rolled_back"
    delivery = WebhookDelivery.objects.get()
    assert request.headers["X-Rollout-Delivery"] == str(delivery.delivery_id)
    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.DELIVERED, 1)
    attempt = WebhookAttempt.objects.get()
    assert (attempt.number, attempt.status_code, attempt.succeeded) == (1, 200, True)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "[Rollback] Manual rollback in Canary (internal QA)"
    assert "rollout-admin@example.com" in message.to and "sre-lead@example.com" in message.to
    assert "auditor@example.com" not in message.to
    assert f"/rollouts/{in_canary.slug}/incidents/{incident.pk}/" in message.body
    kinds = list(incident.events.values_list("kind", flat=True))
    assert "email" in kinds and "webhook" in kinds
    # Sending again changes nothing: the email is recorded, the delivery is done.
    assert notifications.send_rollback_email(incident_id=incident.pk) == 0
    assert notifications.attempt_delivery(delivery_id=delivery.pk) is None
    assert notifications.create_deliveries(incident_id=incident.pk) == []
    assert len(mail.outbox) == 1 and len(seen) == 1


def test_failed_attempts_are_retried_with_backoff_and_each_recorded(
    in_canary, hook, httpserver, users, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    seen, handle = recorder([500, 503, 200])
    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)
    roll_back(in_canary, users, django_capture_on_commit_callbacks)
    assert len(seen) == 3
    # The same body every time, so receivers can de-duplicate on the delivery id.
    assert len({r.get_data() for r in seen}) == 1
    assert len({r.headers["X-Rollout-Delivery"] for r in seen}) == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.DELIVERED, 3)
    assert list(delivery.attempts.values_list("number", "status_code", "succeeded")) == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert [notifications.retry_countdown(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]


def test_delivery_gives_up_after_the_last_attempt(
    in_canary, hook, httpserver, users, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    seen, handle = recorder([500])
    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)
    incident = roll_back(in_canary, users, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count, len(seen)) == (DeliveryStatus.FAILED, 3, 3)
    note = incident.events.get(kind="webhook")
    assert note.message.startswith("Webhook “triage” failed after 3 attempts: HTTP 500")


def test_unreachable_endpoint_is_an_attempt_with_an_error(
    in_canary, users, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    notifications.webhook_endpoint_create(rollout=in_canary, name="dead", url="http://127.0.0.1:9/hook", actor=None)
    roll_back(in_canary, users, django_capture_on_commit_callbacks)
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None and attempt.succeeded is False and "Error" in attempt.error


def test_secret_is_encrypted_at_rest_and_kept_out_of_history(in_canary):
    endpoint, secret = notifications.webhook_endpoint_create(
        rollout=in_canary, name="triage", url="https://hooks.example.com/x", actor=None
    )
    assert secret not in endpoint.secret_encrypted
    assert notifications.decrypt_secret(endpoint.secret_encrypted) == secret
    assert not hasattr(endpoint.history.get(), "secret_encrypted")
    rotated, new_secret = notifications.webhook_endpoint_update(
        endpoint=endpoint, actor=None, url=endpoint.url, active=True, rotate_secret=True
    )
    assert new_secret and new_secret != secret
    assert notifications.decrypt_secret(rotated.secret_encrypted) == new_secret
    from rollout.errors import InvalidPlan

    with pytest.raises(InvalidPlan):
        notifications.webhook_endpoint_create(rollout=in_canary, name="ftp", url="ftp://x/y", actor=None)


def test_inactive_endpoints_are_not_notified(in_canary, users, django_capture_on_commit_callbacks, httpserver):
    endpoint, _ = notifications.webhook_endpoint_create(
        rollout=in_canary, name="off", url=httpserver.url_for("/hook"), actor=None
    )
    notifications.webhook_endpoint_update(endpoint=endpoint, actor=None, url=endpoint.url, active=False)
    roll_back(in_canary, users, django_capture_on_commit_callbacks)
    assert WebhookDelivery.objects.count() == 0


def test_only_holders_of_the_webhook_permissions_configure_webhooks(in_canary, users):
    from rollout.errors import ActionNotAllowed
    from rollout.models import WebhookEndpoint
    from rollout.roles import Role

    with pytest.raises(ActionNotAllowed, match="adding webhooks"):
        notifications.webhook_endpoint_create(
            rollout=in_canary, name="x", url="https://hooks.example.com/x", actor=users[Role.AUDITOR]
        )
    assert not WebhookEndpoint.objects.exists()
