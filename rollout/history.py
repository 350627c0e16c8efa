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


def save_tracked(obj: models.Model, *, actor: Any, reason: str, **save_kwargs: Any) -> models.Model:
    obj._history_user = actor if getattr(actor, "is_authenticated", False) else None
    obj._change_reason = reason
    try:
        obj.save(**save_kwargs)
    finally:
        del obj._history_user
        del obj._change_reason
    return obj


def delete_tracked(obj: models.Model, *, actor: Any, reason: str) -> None:
    obj._history_user = actor if getattr(actor, "is_authenticated", False) else None
    obj._change_reason = reason
    obj.delete()
