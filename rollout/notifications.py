"""Telling stakeholders about a rollback: email, and outgoing webhooks per rollout (the triage channel).

In the rollback's transaction (``signals.rollout_rolled_back``) one delivery per
active endpoint is recorded with its body fixed, and after commit Celery tasks send the
email and post the webhooks, retrying with exponential backoff; each attempt
is recorded. Webhook bodies are Slack-compatible JSON signed with
HMAC-SHA256 over ``"<timestamp>.<body>"``.

Signing secrets are kept encrypted (Fernet, keyed from ``WEBHOOK_SECRET_KEY``)
and out of the history; a secret is shown once, when it is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from . import cloudevents, outbox
from .errors import InvalidPlan
from .history import save_tracked
from .models import (
    CloudEventsMode,
    DeliveryStatus,
    Incident,
    IncidentKind,
    PhaseKind,
    Rollout,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from .roles import LEAD_ROLES, Role, require_perm
from .signals import incident_closed, rollout_rolled_back, transition_applied

log = logging.getLogger(__name__)

EVENT_ROLLED_BACK = "rollout.rolled_back"
EVENT_TRANSITION_APPLIED = "rollout.transition_applied"
EVENT_INCIDENT_CLOSED = "rollout.incident_closed"
SIGNATURE_HEADER = "X-Rollout-Signature"
TIMESTAMP_HEADER = "X-Rollout-Timestamp"
DELIVERY_HEADER = "X-Rollout-Delivery"
EVENT_HEADER = "X-Rollout-Event"


# --- Secrets -------------------------------------------------------------------------


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"rollout.webhook-secret:" + settings.WEBHOOK_SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt_secret(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body): what receivers recompute."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# --- Endpoints --------------------------------------------------------------------------


def _check_url(url: str) -> None:
    if not url.startswith(("https://", "http://")):
        raise InvalidPlan("A webhook URL must be http(s).", field="url")


@transaction.atomic
def webhook_endpoint_create(
    *,
    rollout: Rollout,
    name: str,
    url: str,
    actor: Any,
    reason: str = "",
    secret: str | None = None,
    cloudevents_mode: str = CloudEventsMode.BINARY,
) -> tuple[WebhookEndpoint, str]:
    """Add a webhook to a rollout; returns it with its signing secret (generated unless given), shown once."""
    require_perm(actor, "rollout.add_webhookendpoint", "Your roles do not allow adding webhooks.")
    _check_url(url)
    if not name.strip():
        raise InvalidPlan("A webhook needs a name.", field="name")
    if WebhookEndpoint.objects.filter(rollout=rollout, name=name.strip()).exists():
        raise InvalidPlan(f"This rollout already has a webhook named {name!r}.", field="name")
    if cloudevents_mode not in CloudEventsMode.values:
        raise InvalidPlan("CloudEvents mode is binary or structured.", field="cloudevents_mode")
    secret = secret or secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(
        rollout=rollout,
        name=name.strip(),
        url=url,
        secret_encrypted=encrypt_secret(secret),
        cloudevents_mode=cloudevents_mode,
    )
    save_tracked(endpoint, actor=actor, reason=reason or f"Webhook {name!r} added")
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    actor: Any,
    url: str,
    active: bool,
    rotate_secret: bool = False,
    reason: str = "",
    cloudevents_mode: str | None = None,
) -> tuple[WebhookEndpoint, str | None]:
    """Change a webhook's URL or state, or rotate its secret (the new secret is returned, once)."""
    require_perm(actor, "rollout.change_webhookendpoint", "Your roles do not allow changing webhooks.")
    _check_url(url)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if cloudevents_mode is not None and cloudevents_mode not in CloudEventsMode.values:
        raise InvalidPlan("CloudEvents mode is binary or structured.", field="cloudevents_mode")
    endpoint.url, endpoint.active = url, active
    endpoint.cloudevents_mode = cloudevents_mode or endpoint.cloudevents_mode
    secret = None
    if rotate_secret:
        secret = secrets.token_urlsafe(32)
        endpoint.secret_encrypted = encrypt_secret(secret)
    save_tracked(endpoint, actor=actor, reason=reason or f"Webhook {endpoint.name!r} changed")
    return endpoint, secret


# --- What is sent ---------------------------------------------------------------------------


def incident_url(incident: Incident) -> str:
    return settings.DASHBOARD_URL.rstrip("/") + incident.get_absolute_url()


def rollback_message(incident: Incident) -> dict[str, Any]:
    """A Slack-compatible body (``text`` + ``blocks``) with the incident's facts for other receivers."""
    rollout = incident.rollout
    phase = incident.phase.get_kind_display() if incident.phase else "—"
    evidence = next((e.data.get("evidence") for e in incident.events.all() if e.kind == "evidence"), None) or []
    kind = "Automatic rollback" if incident.kind == IncidentKind.AUTOMATIC else "Manual rollback"
    url = incident_url(incident)
    text = f":rotating_light: {kind} of {rollout.name} in {phase}: {incident.reason}"
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"{kind}: {rollout.name}"[:150]}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*Phase:* {phase}\n*Trigger:* {incident.trigger or 'manual'}\n*Reason:* {incident.reason}",
                },
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{url}|Open the incident>"}]},
        ],
        "event": EVENT_ROLLED_BACK,
        "incident": {
            "id": incident.pk,
            "url": url,
            "rollout": rollout.slug,
            "phase": incident.phase.kind if incident.phase else None,
            "kind": incident.kind,
            "trigger": incident.trigger,
            "reason": incident.reason,
            "opened_at": incident.opened_at.isoformat(),
            "evidence": evidence,
        },
    }


def stakeholder_emails(rollout: Rollout) -> list[str]:
    """The owner, the rollout admins and the four leads (playbook section 1)."""
    roles = [str(Role.ROLLOUT_ADMIN), *(str(r) for r in LEAD_ROLES)]
    users = get_user_model().objects.filter(is_active=True, groups__name__in=roles).exclude(email="")
    emails = {rollout.owner.email} if rollout.owner.email else set()
    emails.update(users.values_list("email", flat=True))
    return sorted(emails)


# --- On rollback -----------------------------------------------------------------------------


@receiver(rollout_rolled_back, dispatch_uid="rollout.notifications.notify_rollback")
def notify_rollback(sender, incident_id: int, **kwargs) -> None:
    """Runs in the rollback's transaction: record the deliveries and the tasks that send them (the outbox: a
    broker outage delays them, never drops them; they are published on commit)."""
    with transaction.atomic():
        deliveries = create_deliveries(incident_id=incident_id)
        outbox.enqueue("rollout.tasks.send_rollback_email", args=[incident_id])
        for delivery_id in deliveries:
            outbox.enqueue("rollout.tasks.deliver_webhook", args=[delivery_id])


@transaction.atomic
def create_deliveries(*, incident_id: int) -> list[int]:
    """One delivery per active endpoint of the rollout; a second call adds none (unique per event)."""
    incident = Incident.objects.select_related("rollout", "phase").get(pk=incident_id)
    body = json.dumps(rollback_message(incident), separators=(",", ":"), ensure_ascii=False)
    ids = []
    for endpoint in incident.rollout.webhook_endpoints.filter(active=True):
        delivery, created = WebhookDelivery.objects.get_or_create(
            endpoint=endpoint,
            incident=incident,
            event=EVENT_ROLLED_BACK,
            defaults={"delivery_id": uuid.uuid4(), "body": body, "subject": f"incidents/{incident.pk}"},
        )
        if created:
            ids.append(delivery.pk)
    return ids


def rollout_url(rollout: Rollout) -> str:
    return settings.DASHBOARD_URL.rstrip("/") + rollout.get_absolute_url()


def _phase_label(kind: str) -> str:
    return "completed" if kind == "completed" else dict(PhaseKind.choices).get(kind, kind)


def _notice(*, text: str, url: str, link: str, event: str, **data: Any) -> dict[str, Any]:
    """A one-line Slack-compatible body (``text``, a section and a link) with the event's facts beside it."""
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{url}|{link}>"}]},
        ],
        "event": event,
        **data,
    }


def transition_message(rollout: Rollout, from_phase: str, to: str) -> dict[str, Any]:
    """Slack-compatible body of a phase transition applied (``rollout.transition_applied``)."""
    url = rollout_url(rollout)
    return _notice(
        text=f":arrow_forward: {rollout.name} moved from {_phase_label(from_phase)} to {_phase_label(to)}",
        url=url,
        link="Open the rollout",
        event=EVENT_TRANSITION_APPLIED,
        transition={"rollout": rollout.slug, "url": url, "from": from_phase, "to": to},
    )


def incident_closed_message(incident: Incident) -> dict[str, Any]:
    """Slack-compatible body of an incident closed with its retrospective (``rollout.incident_closed``)."""
    url = incident_url(incident)
    return _notice(
        text=f":white_check_mark: Incident closed on {incident.rollout.name}: {incident.title}",
        url=url,
        link="Open the incident",
        event=EVENT_INCIDENT_CLOSED,
        incident={
            "id": incident.pk,
            "url": url,
            "rollout": incident.rollout.slug,
            "phase": incident.phase.kind if incident.phase else None,
            "closed_at": incident.closed_at.isoformat() if incident.closed_at else None,
        },
    )


@transaction.atomic
def create_event_deliveries(
    *, rollout: Rollout, event: str, subject: str, message: dict[str, Any], incident: Incident | None = None
) -> list[int]:
    """One delivery of ``event`` per active endpoint of the rollout; a second call adds none (unique per subject)."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    ids = []
    for endpoint in rollout.webhook_endpoints.filter(active=True):
        delivery, created = WebhookDelivery.objects.get_or_create(
            endpoint=endpoint,
            event=event,
            subject=subject,
            defaults={"delivery_id": uuid.uuid4(), "body": body, "incident": incident},
        )
        if created:
            ids.append(delivery.pk)
    for delivery_id in ids:
        outbox.enqueue("rollout.tasks.deliver_webhook", args=[delivery_id])
    return ids


@receiver(transition_applied, dispatch_uid="rollout.notifications.notify_transition")
def notify_transition(sender, rollout_id: int, from_phase: str, to: str, **kwargs) -> None:
    if not WebhookEndpoint.objects.filter(rollout_id=rollout_id, active=True).exists():
        return  # one query when no webhook is configured
    rollout = Rollout.objects.get(pk=rollout_id)
    create_event_deliveries(
        rollout=rollout,
        event=EVENT_TRANSITION_APPLIED,
        subject=f"phases/{to}",
        message=transition_message(rollout, from_phase, to),
    )


@receiver(incident_closed, dispatch_uid="rollout.notifications.notify_incident_closed")
def notify_incident_closed(sender, incident_id: int, **kwargs) -> None:
    if not WebhookEndpoint.objects.filter(rollout__incidents=incident_id, active=True).exists():
        return
    incident = Incident.objects.select_related("rollout", "phase").get(pk=incident_id)
    create_event_deliveries(
        rollout=incident.rollout,
        event=EVENT_INCIDENT_CLOSED,
        subject=f"incidents/{incident.pk}",
        message=incident_closed_message(incident),
        incident=incident,
    )


def send_rollback_email(*, incident_id: int) -> int:
    """Email the stakeholders once (a second call finds the timeline entry and sends nothing)."""
    from .services import incident_add_event

    incident = Incident.objects.select_related("rollout__owner", "phase").get(pk=incident_id)
    if incident.events.filter(kind="email").exists():
        return 0
    recipients = stakeholder_emails(incident.rollout)
    if not recipients:
        return 0
    message = rollback_message(incident)
    evidence = message["incident"]["evidence"]
    lines = [
        message["text"].removeprefix(":rotating_light: "),
        "",
        f"Rollout: {incident.rollout.name}",
        f"Phase: {incident.phase.get_kind_display() if incident.phase else '—'}",
        f"Opened: {incident.opened_at:%Y-%m-%d %H:%M} UTC",
        "",
        "Multi-agent flags are off and agent_v1_fallback is on for the affected tenants.",
        *([f"Evidence ({len(evidence)}):", *[f"  - {json.dumps(item)}" for item in evidence], ""] if evidence else []),
        f"Incident: {message['incident']['url']}",
    ]
    send_mail(
        subject=f"[Rollback] {incident.title}",
        message="\n".join(lines),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=recipients,
    )
    incident_add_event(
        incident=incident,
        kind="email",
        message=f"Stakeholders notified by email ({len(recipients)} recipient(s)).",
        data={"recipients": recipients},
    )
    return len(recipients)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery: the body and signature are for the configured URL only."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def attempt_delivery(*, delivery_id: int) -> WebhookDelivery | None:
    """Post a pending delivery once and record the attempt. Returns it, or None when there is nothing to do.

    The HTTP call happens outside any transaction; the attempt is recorded
    under a row lock afterwards.
    """
    delivery = WebhookDelivery.objects.select_related("endpoint__rollout").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    # The CloudEvents binary or structured message: a function of the stored delivery, the same on every retry.
    body, ce_headers = cloudevents.message(delivery)
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - the URL is checked to be http(s) when configured
        delivery.endpoint.url,
        data=body,
        method="POST",
        headers={
            **ce_headers,
            "User-Agent": "rollout-governance-dashboard/1",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(decrypt_secret(delivery.endpoint.secret_encrypted), timestamp, body),
            DELIVERY_HEADER: str(delivery.delivery_id),
            EVENT_HEADER: delivery.event,
        },
    )
    started = time.monotonic()
    status_code, error = None, ""
    try:
        with _opener.open(request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as response:
            status_code = response.status
    except urllib.error.HTTPError as exc:
        status_code, error = exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    duration_ms = int((time.monotonic() - started) * 1000)
    succeeded = status_code is not None and 200 <= status_code < 300
    return _record_attempt(delivery.pk, status_code=status_code, error=error, duration_ms=duration_ms, ok=succeeded)


@transaction.atomic
def _record_attempt(delivery_pk: int, *, status_code: int | None, error: str, duration_ms: int, ok: bool):
    from .services import incident_add_event

    delivery = WebhookDelivery.objects.select_for_update().select_related("endpoint").get(pk=delivery_pk)
    if delivery.status != DeliveryStatus.PENDING:
        return delivery
    delivery.attempt_count += 1
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempt_count,
        at=timezone.now(),
        status_code=status_code,
        error=error[:2000],
        duration_ms=duration_ms,
        succeeded=ok,
    )
    if ok:
        delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, timezone.now()
        note = f"Webhook “{delivery.endpoint.name}” delivered (attempt {delivery.attempt_count})."
    elif delivery.attempt_count >= settings.WEBHOOK_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        note = f"Webhook “{delivery.endpoint.name}” failed after {delivery.attempt_count} attempts: {error}"
    else:
        note = ""
    delivery.save(update_fields=["attempt_count", "status", "delivered_at"])
    if note and delivery.incident_id is not None:
        incident_add_event(
            incident=delivery.incident,
            kind="webhook",
            message=note,
            data={"endpoint": delivery.endpoint.name, "delivery": str(delivery.delivery_id)},
        )
    return delivery


def retry_countdown(attempts_made: int) -> int:
    """Exponential backoff: base, 2 * base, 4 * base, ..."""
    return settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(attempts_made - 1, 0)
