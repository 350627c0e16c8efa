"""Denied actions in the audit ledger, without letting a burst of them flood it.

Every refused action is recorded: the 403 page, a CSRF failure, an API 401,
403 or 429, a failed login, an axes lockout, and a refusal raised by a service
(``DomainError.is_refusal``: a lead deciding for a role they do not hold, a
requester approving their own request, ...).

Repeats are aggregated per source (the user, the API token, or the client
address when nobody is authenticated) and reason, in fixed windows of
``AUDIT_DENIAL_WINDOW_SECONDS`` aligned on the epoch. The first denial of a
window appends its ledger entry at once, exactly as a lone denial would; the
ones after it only increment the window's ``DenialWindow`` row. The ledger is
append-only and hash-chained, so the count cannot be written into that first
entry: once the window has closed, one ``audit.denials_repeated`` entry gives
the number of repeats. It is appended by the next denial that opens a window,
or by the beat task ``governance.tasks.summarise_denials``, whichever comes
first. So one source and reason add at most two entries per window.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from rollout.context import Actor, current_actor
from rollout.errors import DomainError
from rollout.models import Rollout

from . import ledger
from .models import AuditEvent, DenialWindow

log = logging.getLogger(__name__)

ANONYMOUS = Actor(kind="anonymous", name="anonymous")
SUMMARY_ACTION = "audit.denials_repeated"


@dataclass(frozen=True)
class Denial:
    """What the window's first ledger entry says; ``reason`` is the aggregation key next to the source."""

    reason: str
    action: str
    object_type: str
    object_repr: str = ""
    after: dict[str, Any] = field(default_factory=dict)
    reason_text: str = ""
    rollout_id: int | None = None


def client_address(request: HttpRequest | None) -> str:
    # REMOTE_ADDR, as axes and DRF's throttles see it: a client-set header must not choose the source.
    return (request.META.get("REMOTE_ADDR") or "") if request is not None else ""


def source_of(actor: Actor | None, request: HttpRequest | None) -> str:
    if actor is not None and actor.kind == "user" and actor.user_id is not None:
        return f"user:{actor.user_id}"
    if actor is not None and actor.kind == "token" and actor.token_id is not None:
        return f"token:{actor.token_id}"
    return f"ip:{client_address(request) or 'unknown'}"


def clock() -> dt.datetime:
    """The time that places a denial in its window (a function, so tests can move it)."""
    return timezone.now()


def window_seconds() -> int:
    return max(1, int(settings.AUDIT_DENIAL_WINDOW_SECONDS))


def window_start(at: dt.datetime) -> dt.datetime:
    seconds = window_seconds()
    epoch = int(at.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=dt.UTC)


def record(denial: Denial, *, request: HttpRequest | None = None, actor: Actor | None = None) -> AuditEvent | None:
    """Record one denial: the window's first is appended to the ledger (returned), a repeat only counted (None)."""
    actor = actor or current_actor() or ANONYMOUS
    source = source_of(actor, request)[:200]
    now = clock()
    start = window_start(now)
    key = {"source": source, "reason": denial.reason[:80], "window_start": start}
    if _count_repeat(key, now):
        return None
    # Likely the window's first denial: report the windows that have closed before this entry.
    summarise_closed(now=now)
    with transaction.atomic():
        try:
            with transaction.atomic():
                window = DenialWindow.objects.create(
                    **key,
                    count=1,
                    last_at=now,
                    action=denial.action,
                    actor_kind=actor.kind,
                    actor_name=actor.name[:150],
                    actor_user_id=actor.user_id,
                    actor_token_id=actor.token_id,
                )
        except IntegrityError:
            # Another request opened this window between our update and insert: we are a repeat.
            _count_repeat(key, now)
            return None
        event = ledger.append(
            action=denial.action,
            object_type=denial.object_type,
            object_repr=denial.object_repr,
            rollout_id=denial.rollout_id,
            after=denial.after,
            reason=denial.reason_text,
            actor=actor,
        )
        DenialWindow.objects.filter(pk=window.pk).update(first_sequence=event.sequence)
    return event


def _count_repeat(key: dict[str, Any], now: dt.datetime) -> bool:
    return bool(DenialWindow.objects.filter(**key).update(count=F("count") + 1, last_at=now))


def summarise_closed(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Append one summary entry per closed window that had repeats, and drop closed windows. Safe to run twice."""
    now = now or clock()
    cutoff = window_start(now)
    seconds = window_seconds()
    written = 0
    with transaction.atomic():
        # SKIP LOCKED: the next denial and the beat task may run this at once; each window is summarised once.
        closed = list(
            DenialWindow.objects.select_for_update(skip_locked=True)
            .filter(window_start__lt=cutoff)
            .order_by("window_start", "pk")[:limit]
        )
        for window in closed:
            if window.count > 1:
                end = window.window_start + dt.timedelta(seconds=seconds)
                ledger.append(
                    action=SUMMARY_ACTION,
                    object_type="audit.denials",
                    object_repr=f"{window.count - 1} more {window.reason} from {window.source}"[:300],
                    after={
                        "source": window.source,
                        "reason": window.reason,
                        "action": window.action,
                        "first_sequence": window.first_sequence,
                        "window_start": ledger.format_at(window.window_start),
                        "window_end": ledger.format_at(end),
                        "count": window.count,
                        "repeated": window.count - 1,
                        "last_at": ledger.format_at(window.last_at),
                    },
                    reason=f"{window.count} denials in {seconds} s; the first is entry #{window.first_sequence}",
                    actor=Actor(
                        kind=window.actor_kind,
                        name=window.actor_name,
                        user_id=window.actor_user_id,
                        token_id=window.actor_token_id,
                    ),
                )
                written += 1
        if closed:
            DenialWindow.objects.filter(pk__in=[w.pk for w in closed]).delete()
    return written


def rollout_id_of(request: HttpRequest) -> int | None:
    """The rollout a refused URL names (``<slug:slug>``), so the entry shows in that rollout's history."""
    match = getattr(request, "resolver_match", None)
    slug = match.kwargs.get("slug") if match else None
    return Rollout.objects.filter(slug=slug).values_list("pk", flat=True).first() if slug else None


def record_refusal(request: HttpRequest, actor: Actor | None, error: DomainError) -> AuditEvent | None:
    """A refusal raised by a service while ``request`` was served (collected by the audit middleware)."""
    match = getattr(request, "resolver_match", None)
    return record(
        Denial(
            reason=f"rule:{error.code}",
            action="auth.rule_refused",
            object_type="http.request",
            object_repr=f"{request.method} {request.path}"[:300],
            rollout_id=rollout_id_of(request),
            after={
                "method": request.method,
                "path": request.path,
                "view": match.view_name if match else None,
                "code": error.code,
                "error": type(error).__name__,
                "message": error.message,
            },
            reason_text=error.title,
        ),
        request=request,
        actor=actor or ANONYMOUS,
    )
