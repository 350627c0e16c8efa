"""Saving tracked models with a history user and a change reason.

Services use these instead of calling ``save()`` bare, so every historical
record (and the audit-ledger entry governance derives from it) says who changed
what and why. Rows are saved one by one on purpose: django-simple-history's
bulk helpers skip the ``post_create_historical_record`` signal the ledger
listens to.
"""

from __future__ import annotations

from typing import Any

from django.db import models


def save_tracked(
    obj: models.Model,
    *,
    actor: Any,
    reason: str,
    action: str | None = None,
    audit_extra: dict[str, Any] | None = None,
    **save_kwargs: Any,
) -> models.Model:
    """Save with history user and reason; ``action`` names the change in the audit ledger
    (e.g. ``"transition.apply"``) instead of the plain create/update. ``audit_extra`` goes into the ledger entry's
    data beside the changed fields (a decision's ``auth``: how and when the actor last authenticated)."""
    _mark(obj, actor=actor, reason=reason, action=action, audit_extra=audit_extra)
    try:
        obj.save(**save_kwargs)
    finally:
        _unmark(obj)
    return obj


def delete_tracked(obj: models.Model, *, actor: Any, reason: str, action: str | None = None) -> None:
    _mark(obj, actor=actor, reason=reason, action=action)
    try:
        obj.delete()
    finally:
        _unmark(obj)


def actor_name(actor: Any) -> str:
    """How a service names who acted, for records that keep the name (it survives the user's deletion)."""
    return actor.get_username() if actor is not None else "system"


def _mark(
    obj: models.Model, *, actor: Any, reason: str, action: str | None, audit_extra: dict[str, Any] | None = None
) -> None:
    obj._history_user = actor if getattr(actor, "is_authenticated", False) else None
    obj._change_reason = reason
    if action:
        obj._audit_action = action  # read by governance's ledger receiver
    if audit_extra:
        obj._audit_extra = audit_extra  # likewise


def _unmark(obj: models.Model) -> None:
    for name in ("_history_user", "_change_reason", "_audit_action", "_audit_extra"):
        obj.__dict__.pop(name, None)
