"""Webhooks as CloudEvents 1.0 (issue 12 part 4): what a local receiver got, parsed with ``cloudevents``' own parser.

Binary mode keeps the Slack-compatible body byte for byte with the attributes in ``ce-*`` headers; structured
mode (an endpoint's choice) sends ``application/cloudevents+json`` with the body as ``data``. Every event: the
rollback, a phase transition applied and an incident closed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from django.conf import settings
from werkzeug import Request, Response

from rollout import notifications, services
from rollout.models import CloudEventsMode, IncidentStep, WebhookDelivery
from rollout.roles import Role
from tests.factories import advance_to, complete_readiness

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_canary(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    return advance_to(rollout, "canary", admin)


@pytest.fixture
def receiver(httpserver):
    seen: list[Request] = []

    def handle(request: Request) -> Response:
        seen.append(request)
        return Response("ok", status=200)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)
    return seen


def endpoint(rollout, httpserver, mode=CloudEventsMode.BINARY, name="triage"):
    return notifications.webhook_endpoint_create(
        rollout=rollout, name=name, url=httpserver.url_for("/hook"), actor=None, cloudevents_mode=mode
    )


def parse(request: Request):
    """The receiver's view: the CloudEvent that cloudevents' HTTP binding reads from the request."""
    return from_http(HTTPMessage(headers=dict(request.headers), body=request.get_data()), JSONFormat())


def rollout_url(rollout) -> str:
    return settings.DASHBOARD_URL.rstrip("/") + rollout.get_absolute_url()


def test_a_rollback_is_a_binary_cloudevent_with_the_slack_body_unchanged(
    in_canary, httpserver, receiver, users, django_capture_on_commit_callbacks
):
    _endpoint, secret = endpoint(in_canary, httpserver)
    with django_capture_on_commit_callbacks(execute=True):
        incident = services.rollout_rollback(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="Loops")
    [request] = receiver
    delivery = WebhookDelivery.objects.get()
    # The body is the stored Slack-compatible JSON, byte for byte, and the signature still covers it.
    assert request.get_data() == delivery.body.encode()
    assert request.headers["Content-Type"] == "application/json"
    timestamp = request.headers["X-Rollout-Timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + request.get_data(), hashlib.sha256).hexdigest()
    assert request.headers["X-Rollout-Signature"] == "sha256=" + mac
    assert request.headers["Ce-Specversion"] == "1.0"

    event = parse(request)
    assert event.get_specversion() == "1.0"
    assert event.get_id() == str(delivery.delivery_id) == request.headers["X-Rollout-Delivery"]
    assert event.get_source() == rollout_url(in_canary)
    assert event.get_type() == "com.rolloutdashboard.rollout.rolled_back"
    assert event.get_subject() == f"incidents/{incident.pk}"
    assert event.get_time() == delivery.created_at
    assert event.get_datacontenttype() == "application/json"
    data = event.get_data()
    assert data["text"].startswith(":rotating_light: Manual rollback of ReAct rollout")
    assert data["blocks"][0]["type"] == "header" and data["incident"]["id"] == incident.pk


def test_a_structured_endpoint_gets_application_cloudevents_json(
    in_canary, httpserver, receiver, users, django_capture_on_commit_callbacks
):
    _endpoint, secret = endpoint(in_canary, httpserver, CloudEventsMode.STRUCTURED)
    with django_capture_on_commit_callbacks(execute=True):
        incident = services.rollout_rollback(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="Loops")
    [request] = receiver
    assert request.headers["Content-Type"] == "application/cloudevents+json"
    assert not [name for name, _value in request.headers.items() if name.lower().startswith("ce-")]
    timestamp = request.headers["X-Rollout-Timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + request.get_data(), hashlib.sha256).hexdigest()
    assert request.headers["X-Rollout-Signature"] == "sha256=" + mac
    event = parse(request)
    delivery = WebhookDelivery.objects.get()
    assert (event.get_id(), event.get_type(), event.get_subject()) == (
        str(delivery.delivery_id),
        "com.rolloutdashboard.rollout.rolled_back",
        f"incidents/{incident.pk}",
    )
    assert event.get_source() == rollout_url(in_canary)
    assert event.get_data() == json.loads(delivery.body)
    # A retry sends the same bytes: the message is a function of the stored delivery.
    body, _headers = notifications.cloudevents.message(delivery)
    assert body == request.get_data()


def test_a_phase_transition_applied_and_an_incident_closed_are_events_too(
    in_canary, httpserver, receiver, users, django_capture_on_commit_callbacks
):
    admin = users[Role.ROLLOUT_ADMIN]
    endpoint(in_canary, httpserver, CloudEventsMode.BINARY)
    endpoint(in_canary, httpserver, CloudEventsMode.STRUCTURED, name="archive")
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_advance(rollout=in_canary, to="limited_beta", actor=admin, reason="Canary soak done")
    assert len(receiver) == 2
    events = sorted((parse(r) for r in receiver), key=lambda e: e.get_datacontenttype() or "")
    for event in events:
        assert event.get_type() == "com.rolloutdashboard.rollout.transition_applied"
        assert event.get_subject() == "phases/limited_beta"
        assert event.get_source() == rollout_url(in_canary)
        assert event.get_data()["transition"] == {
            "rollout": in_canary.slug,
            "url": rollout_url(in_canary),
            "from": "canary",
            "to": "limited_beta",
        }
        assert (
            event.get_data()["text"] == ":arrow_forward: ReAct rollout moved from Canary (internal QA) to Limited beta"
        )
    assert {e.get_id() for e in events} == {
        str(d) for d in WebhookDelivery.objects.values_list("delivery_id", flat=True)
    }
    transitions = WebhookDelivery.objects.filter(event="rollout.transition_applied")
    assert [d.incident_id for d in transitions] == [None, None]
    assert {d.status for d in transitions} == {"delivered"}

    receiver.clear()
    with django_capture_on_commit_callbacks(execute=True):
        incident = services.rollout_rollback(rollout=in_canary, actor=admin, reason="Latency")
    assert {parse(r).get_type() for r in receiver} == {"com.rolloutdashboard.rollout.rolled_back"}
    receiver.clear()
    for step in IncidentStep.objects.filter(incident=incident, done_at__isnull=True):
        services.incident_tick_step(step=step, actor=admin)
    with django_capture_on_commit_callbacks(execute=True):
        services.incident_close(incident=incident, actor=admin, retrospective="Root cause: cache stampede.")
    assert len(receiver) == 2
    for request in receiver:
        event = parse(request)
        assert event.get_type() == "com.rolloutdashboard.rollout.incident_closed"
        assert event.get_subject() == f"incidents/{incident.pk}"
        assert event.get_data()["incident"]["id"] == incident.pk
        assert event.get_time() > dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    # Told once per event: running the receivers again adds no delivery.
    closed = WebhookDelivery.objects.filter(event="rollout.incident_closed", incident=incident)
    assert closed.count() == 2
    notifications.notify_incident_closed(sender=None, incident_id=incident.pk)
    assert closed.count() == 2
