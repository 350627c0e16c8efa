"""Webhook deliveries as CloudEvents 1.0 (issue 12 part 4), built with the ``cloudevents`` package.

Binary mode (the default): the stored Slack-compatible JSON body goes out byte for byte, and the event's
attributes ride in ``ce-*`` headers: ``ce-specversion`` 1.0, ``ce-id`` = the delivery id (the same on every
retry), ``ce-source`` = the rollout's URL, ``ce-type`` = ``com.rolloutdashboard.<event>``, ``ce-time`` = when
the delivery was recorded, ``ce-subject`` = what it is about (``incidents/<id>``, ``phases/<kind>``).
Structured mode (an endpoint's choice): the body is the whole event, ``application/cloudevents+json``, with
the Slack body as its ``data``. Either way the message is a function of the stored delivery, so every retry
sends the same bytes, and the signature (``X-Rollout-Signature``) covers the bytes sent.
"""

from __future__ import annotations

import json

from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from django.conf import settings

from .models import CloudEventsMode, WebhookDelivery

TYPE_PREFIX = "com.rolloutdashboard."


def event_type(event: str) -> str:
    """``rollout.rolled_back`` -> ``com.rolloutdashboard.rollout.rolled_back``."""
    return TYPE_PREFIX + event


def source(delivery: WebhookDelivery) -> str:
    return settings.DASHBOARD_URL.rstrip("/") + delivery.endpoint.rollout.get_absolute_url()


def cloud_event(delivery: WebhookDelivery) -> CloudEvent:
    return CloudEvent(
        attributes={
            "specversion": "1.0",
            "id": str(delivery.delivery_id),
            "source": source(delivery),
            "type": event_type(delivery.event),
            "time": delivery.created_at,
            "subject": delivery.subject or (f"incidents/{delivery.incident_id}" if delivery.incident_id else "-"),
            "datacontenttype": "application/json",
        },
        data=delivery.body.encode() if delivery.endpoint.cloudevents_mode == CloudEventsMode.BINARY else None,
    )


def message(delivery: WebhookDelivery) -> tuple[bytes, dict[str, str]]:
    """The body to post and the CloudEvents headers (``Content-Type`` included) for one delivery."""
    event = cloud_event(delivery)
    if delivery.endpoint.cloudevents_mode == CloudEventsMode.STRUCTURED:
        event = CloudEvent(attributes=event.get_attributes(), data=json.loads(delivery.body))
        http = to_structured(event, JSONFormat())
    else:
        http = to_binary(event, JSONFormat())
    headers = {("Content-Type" if k.lower() == "content-type" else k): v for k, v in http.headers.items()}
    return http.body, headers
