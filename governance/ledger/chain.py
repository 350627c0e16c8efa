"""Appending to the hash chain, and the entries of tracked models' history records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from rollout.context import SYSTEM, Actor, current_actor, current_request_id

from ..models import AuditEvent
from .canonical import (
    ADVISORY_LOCK_KEY,
    GENESIS_HASH,
    HISTORY_ACTIONS,
    TRACKED_APPS,
    _clean_text,
    entry_hash,
    format_at,
    jsonable,
    parse_at,
    payload_of,
    record_of,
)

# --- Appending ----------------------------------------------------------------------------


def lock_ledger() -> None:
    """Serialize appends until the current transaction ends (PostgreSQL; SQLite serializes writers itself)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])


def _build(
    *,
    sequence: int,
    prev_hash: str,
    last_at: dt.datetime | None,
    actor: Actor | None,
    action: str,
    object_type: str,
    object_id: Any = "",
    object_repr: str = "",
    rollout_id: int | None = None,
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    actor = actor or current_actor() or SYSTEM
    # Entries never go back in time, even with clocks that differ between hosts.
    now = timezone.now()
    event = AuditEvent(
        sequence=sequence,
        at=parse_at(format_at(max(now, last_at) if last_at else now)),
        actor_kind=actor.kind,
        actor_name=_clean_text(actor.name)[:150],
        actor_user_id=actor.user_id,
        actor_token_id=actor.token_id,
        action=action,
        object_type=object_type,
        object_id=_clean_text(str(object_id if object_id is not None else ""))[:64],
        object_repr=_clean_text(object_repr or "")[:300],
        rollout_id=rollout_id,
        before=jsonable(before),
        after=jsonable(after),
        reason=_clean_text(reason or ""),
        request_id=_clean_text(current_request_id())[:64],
        prev_hash=prev_hash,
    )
    # Hash exactly what a reader of the row (or of an export) will see.
    event.hash = entry_hash(prev_hash, payload_of(record_of(event)))
    return event


def _last() -> tuple[int, str, dt.datetime | None]:
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash", "at").first()
    return last if last else (0, GENESIS_HASH, None)


_LAST_SQL = f"SELECT sequence, hash, at FROM {AuditEvent._meta.db_table} ORDER BY sequence DESC LIMIT 1"  # noqa: S608


def _lock_and_last() -> tuple[int, str, dt.datetime | None]:
    """``lock_ledger()`` then ``_last()``; on PostgreSQL in one round trip.

    Two statements in one query string: in READ COMMITTED each statement takes its own snapshot when it starts,
    so the SELECT, which starts only once the lock is granted, sees the entry the previous holder committed
    (one statement doing both would read a snapshot taken before the wait: a fork). Only a client-side binding
    cursor (Django's default with psycopg 3) sends several statements at once; any other does two round trips.
    """
    if connection.vendor == "postgresql":
        import psycopg

        with connection.cursor() as cursor:
            if isinstance(cursor.cursor, psycopg.ClientCursor):
                cursor.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY:d}); {_LAST_SQL}")
                cursor.nextset()
                last = cursor.fetchone()
                return tuple(last) if last else (0, GENESIS_HASH, None)
    lock_ledger()
    return _last()


def append(
    *,
    action: str,
    object_type: str,
    object_id: Any = "",
    object_repr: str = "",
    rollout_id: int | None = None,
    before: Any = None,
    after: Any = None,
    reason: str = "",
    actor: Actor | None = None,
) -> AuditEvent:
    """Append one entry. Actor and request id default to the current context (middleware, task, token)."""
    # No savepoint of its own (two round trips): an error here aborts the caller's transaction, whose change
    # must not commit without its entry anyway.
    with transaction.atomic(savepoint=False):
        sequence, prev_hash, last_at = _lock_and_last()
        event = _build(
            sequence=sequence + 1,
            prev_hash=prev_hash,
            last_at=last_at,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            object_repr=object_repr,
            rollout_id=rollout_id,
            before=before,
            after=after,
            reason=reason,
        )
        event.save(force_insert=True)
    return event


def append_many(entries: Iterable[Mapping[str, Any]], *, batch_size: int = 2000) -> int:
    """Append many entries in one transaction, inserted in batches (imports, benchmarks, tests).

    Each mapping holds ``append``'s keyword arguments; the chain is exactly
    what ``append`` would build one entry after another.
    """
    count = 0
    with transaction.atomic():
        lock_ledger()
        sequence, prev_hash, last_at = _last()
        batch: list[AuditEvent] = []
        for entry in entries:
            sequence += 1
            event = _build(sequence=sequence, prev_hash=prev_hash, last_at=last_at, **{"actor": None, **entry})
            prev_hash, last_at = event.hash, event.at
            batch.append(event)
            if len(batch) >= batch_size:
                AuditEvent.objects.bulk_create(batch)
                count, batch = count + len(batch), []
        AuditEvent.objects.bulk_create(batch)
        count += len(batch)
    return count


# --- Tracked models ----------------------------------------------------------------------------


def object_type_of(model: type[Model]) -> str:
    return model._meta.label_lower


def _rollout_id_of(obj: Model | None, depth: int = 0) -> int | None:
    """The rollout an object belongs to, following foreign keys (flag, phase, incident, request...)."""
    if obj is None or depth > 3:
        return None
    if obj._meta.label_lower == "rollout.rollout":
        return obj.pk
    if getattr(obj, "rollout_id", None) is not None:
        return obj.rollout_id
    for field in obj._meta.concrete_fields:
        if field.many_to_one and field.related_model._meta.app_label in TRACKED_APPS:
            rollout_id = _rollout_id_of(getattr(obj, field.name, None), depth + 1)
            if rollout_id is not None:
                return rollout_id
    return None


def _field_values(history_instance: Model, fields) -> dict[str, Any]:
    return {f.attname: jsonable(getattr(history_instance, f.attname)) for f in fields}


def record_history(*, instance: Model, history_instance: Model, history_user: Any, reason: str | None) -> AuditEvent:
    """One ledger entry for one historical record: before/after from the previous record."""
    model = type(instance)
    fields = type(history_instance).tracked_fields
    kind = history_instance.history_type
    current = _field_values(history_instance, fields)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    if kind == "+":
        after = current
    elif kind == "-":
        before = current
    else:
        pk_name = model._meta.pk.attname
        previous = (
            type(history_instance)
            .objects.filter(**{pk_name: getattr(history_instance, pk_name)}, history_id__lt=history_instance.history_id)
            .order_by("-history_id")
            .first()
        )
        old = _field_values(previous, fields) if previous is not None else {}
        changed = sorted(name for name, value in current.items() if old.get(name) != value)
        before = {name: old.get(name) for name in changed}
        after = {name: current[name] for name in changed}
    if history_user is not None and getattr(history_user, "is_authenticated", False):
        actor = Actor(kind="user", name=history_user.get_username(), user_id=history_user.pk)
    else:
        actor = None
    action = getattr(instance, "_audit_action", None) or HISTORY_ACTIONS[kind]
    extra = getattr(instance, "_audit_extra", None)
    if extra:
        after = {**(after or {}), **extra}
    try:
        label = str(instance)
    except Exception:  # a broken __str__ must never block a write or its record
        label = f"{model._meta.verbose_name} #{instance.pk}"
    return append(
        action=action,
        object_type=object_type_of(model),
        object_id=instance.pk if instance.pk is not None else getattr(history_instance, model._meta.pk.attname),
        object_repr=label,
        rollout_id=_rollout_id_of(instance),
        before=before,
        after=after,
        reason=reason or "",
        actor=actor,
    )
