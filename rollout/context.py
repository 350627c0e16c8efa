"""Who is acting, and under which request, for the audit trail.

Lower layers (the API's token authentication, Celery task signals, the request
middleware) set these; governance reads them when it appends ledger entries.
Living in ``rollout`` keeps the import direction one way.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    kind: str  # "user", "token", "task" or "system"
    name: str
    user_id: int | None = None
    token_id: int | None = None


SYSTEM = Actor(kind="system", name="system")

_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("audit_actor", default=None)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("audit_request_id", default="")
# Refusals (named errors that refuse the actor) raised while a request is served; see ``collecting_refusals``.
_refusals: contextvars.ContextVar[list[tuple[Actor | None, Exception]] | None] = contextvars.ContextVar(
    "audit_refusals", default=None
)


def current_actor() -> Actor | None:
    return _actor.get()


def current_request_id() -> str:
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def acting_as(actor: Actor | None, *, request_id: str | None = None) -> Iterator[None]:
    actor_token = _actor.set(actor)
    request_token = _request_id.set(request_id) if request_id is not None else None
    try:
        yield
    finally:
        _actor.reset(actor_token)
        if request_token is not None:
            _request_id.reset(request_token)


def set_actor(actor: Actor | None) -> None:
    """For code paths without a ``with`` block (DRF authentication): lasts for the context."""
    _actor.set(actor)


def set_request_id(request_id: str) -> None:
    _request_id.set(request_id)


def user_actor(user) -> Actor:
    return Actor(kind="user", name=user.get_username(), user_id=user.pk)


@contextlib.contextmanager
def collecting_refusals() -> Iterator[list[tuple[Actor | None, Exception]]]:
    """Collect the refusals raised inside the block, with the actor at the time, for the audit ledger.

    A service raises its refusal inside its own transaction, which rolls back:
    the ledger entry cannot be written there. The request middleware collects
    them and records them once the view has answered, outside any transaction.
    """
    bucket: list[tuple[Actor | None, Exception]] = []
    token = _refusals.set(bucket)
    try:
        yield bucket
    finally:
        _refusals.reset(token)


def note_refusal(error: Exception) -> None:
    bucket = _refusals.get()
    if bucket is not None:
        bucket.append((current_actor(), error))


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every log record, so an error logged while serving a request names it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True
