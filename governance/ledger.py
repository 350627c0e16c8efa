"""The audit ledger: appending hash-chained entries, verifying the chain, exporting it.

Every entry's ``hash`` is SHA-256 over the previous entry's hash followed by the
canonical JSON (sorted keys, no spaces, ASCII) of the entry's payload. The same
functions hash an entry when it is appended, when ``verify_audit_log`` walks the
database, and when it checks an exported file offline, so the three agree by
construction.

Appends are serialized: on PostgreSQL with a transaction-scoped advisory lock
taken before the last entry is read, so two writers can never both extend the
same entry (a fork). The lock is held until the writer's transaction ends,
because the entry commits or rolls back with the change it records. Services
take their row locks before their first tracked write, which keeps the lock
order "rows, then ledger" and avoids deadlocks. SQLite runs one write
transaction at a time (``transaction_mode=IMMEDIATE``), which serializes
appends on its own.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import math
import os
import pickle
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connection, connections, transaction
from django.db.backends.utils import CursorDebugWrapper
from django.db.models import Model, QuerySet
from django.utils import timezone

from rollout.context import SYSTEM, Actor, current_actor, current_request_id

from .models import AuditEvent

GENESIS_HASH = "0" * 64
# Any constant works: it names "the ledger" among the application's advisory locks.
ADVISORY_LOCK_KEY = 7_260_914_431
TRACKED_APPS = frozenset({"rollout", "evaluations", "governance"})

# The payload fields, in the order exports list them; ``prev_hash`` and ``hash`` follow.
PAYLOAD_FIELDS: tuple[str, ...] = (
    "sequence",
    "at",
    "actor_kind",
    "actor_name",
    "actor_user_id",
    "actor_token_id",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "rollout_id",
    "before",
    "after",
    "reason",
    "request_id",
)
RECORD_FIELDS: tuple[str, ...] = (*PAYLOAD_FIELDS, "prev_hash", "hash")
INT_FIELDS = frozenset({"sequence", "actor_user_id", "actor_token_id", "rollout_id"})
JSON_FIELDS = frozenset({"before", "after"})

HISTORY_ACTIONS = {"+": "create", "~": "update", "-": "delete"}

# Governance actions that are not a tracked model's own create/update/delete.
EVENT_ACTIONS: tuple[str, ...] = (
    "signoff.approve",
    "signoff.reject",
    "signoff.supersede",
    "transition.request",
    "transition.approve",
    "transition.reject",
    "transition.approved",
    "transition.rejected",
    "transition.reopen",
    "transition.apply",
    "transition.withdraw",
    "transition.approval_void",
    "approvers.add",
    "approvers.remove",
    "rollout.rollback",
    "audit.export",
    "auth.login",
    "auth.logout",
    "auth.login_failed",
    "auth.role_grant",
    "auth.role_revoke",
    "auth.permission_denied",
    "auth.csrf_failed",
    "auth.api_denied",
    "auth.rule_refused",
    "auth.locked_out",
    "auth.mfa_enrolled",
    "auth.mfa_removed",
    "auth.mfa_recovery_codes_regenerated",
    "auth.mfa_recovery_code_used",
    "auth.mfa_reset",
    "auth.reauthenticated",
    "audit.denials_repeated",
    "audit.verify",
    "job.request",
    "legal_hold.place",
    "legal_hold.release",
    "retention.purge",
    "retention.dry_run",
    "retention.interrupted",
    "retention.failed",
    "processing_record.create",
    "processing_record.update",
    "record.change_proposed",
    "record.change_confirm",
    "record.change_reject",
    "review.create",
    "review.complete",
    "review.reassign",
)
KNOWN_ACTIONS: tuple[str, ...] = (*HISTORY_ACTIONS.values(), *EVENT_ACTIONS)


# --- Canonical form -------------------------------------------------------------------


def format_at(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_at(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def _clean_text(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL.
    return value.replace("\x00", "\ufffd")


def jsonable(value: Any) -> Any:
    """The value as plain JSON that reads back from a JSON column exactly as written.

    jsonb keeps numbers as ``numeric``: a float written as ``1e+16`` reads back
    as an int and ``-0.0`` as ``0.0``, so those are normalised before hashing.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return 0.0
        if value.is_integer() and abs(value) >= 1e16:
            return int(value)
        return value
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, Model):
        return value.pk
    return _clean_text(str(value))


# One encoder for every call: ``json.dumps`` with options builds a new one each time (most of the cost of a small
# payload, and the ledger hashes, verifies and exports millions of them).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


def entry_hash(prev_hash: str, payload: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(payload)).encode("ascii")).hexdigest()


def record_of(event: AuditEvent) -> dict[str, Any]:
    """The entry as exported: the payload plus ``prev_hash`` and ``hash``."""
    record = {name: getattr(event, name) for name in RECORD_FIELDS}
    record["at"] = format_at(event.at)
    return record


def payload_of(record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in PAYLOAD_FIELDS}


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


# --- Verifying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first: tuple[int, str] | None  # (sequence, hash)
    last: tuple[int, str] | None
    broken_at: int | None = None
    problem: str = ""
    gaps: int = 0

    def summary(self) -> str:
        if not self.ok:
            where = f" at sequence {self.broken_at}" if self.broken_at is not None else ""
            return f"Audit ledger BROKEN{where}: {self.problem}"
        if not self.entries:
            return "Audit ledger intact: 0 entries."
        text = (
            f"Audit ledger intact: {self.entries} entries, "
            f"first #{self.first[0]} {self.first[1]}, last #{self.last[0]} {self.last[1]}"
        )
        if self.gaps:
            text += f" ({self.gaps} gap(s) of filtered-out entries; links across them not checked)"
        return text + "."


def verify(records: Iterable[Mapping[str, Any]], *, segment: bool = False, allow_gaps: bool = False) -> VerifyResult:
    """Recompute the chain over ``records`` in sequence order and name the first broken entry.

    The whole ledger (``segment=False``) starts at sequence 1 from the genesis
    hash. An exported segment starts wherever it starts: its first entry's
    ``prev_hash`` is taken as given, everything after must link. A missing
    entry shows as a gap in the sequence; ``allow_gaps`` accepts gaps (a
    filtered export) while still checking every entry's own hash.
    """
    entries = ((r["sequence"], r["prev_hash"], r["hash"], payload_of(r)) for r in records)
    return _verify(entries, segment=segment, allow_gaps=allow_gaps)


def _verify(
    entries: Iterable[tuple[int, str, str, Any]],
    *,
    segment: bool = False,
    allow_gaps: bool = False,
    canonical: Callable[[Any], str] = canonical_json,
) -> VerifyResult:
    """``verify`` over (sequence, prev_hash, hash, payload) tuples; ``canonical(payload)`` is the hashed text."""
    count, gaps = 0, 0
    first = last = None
    prev_seq: int | None = None
    prev_hash: str | None = None if segment else GENESIS_HASH

    def broken(sequence: int, problem: str) -> VerifyResult:
        return VerifyResult(False, count, first, last, broken_at=sequence, problem=problem, gaps=gaps)

    sha256 = hashlib.sha256
    for sequence, entry_prev_hash, entry_own_hash, payload in entries:
        expected_seq = (prev_seq + 1) if prev_seq is not None else (None if segment else 1)
        linked = True
        if expected_seq is not None and sequence != expected_seq:
            if prev_seq is not None and sequence > expected_seq and allow_gaps:
                gaps += 1
                linked = False
            elif sequence > expected_seq:
                return broken(expected_seq, f"entry missing (the next entry is #{sequence})")
            else:
                return broken(sequence, f"out of order or duplicated (after #{prev_seq})")
        if linked and prev_hash is not None and entry_prev_hash != prev_hash:
            return broken(sequence, "prev_hash does not match the previous entry's hash")
        # entry_hash(), inlined: this line runs once per entry of a million-entry ledger.
        if sha256((entry_prev_hash + canonical(payload)).encode("ascii")).hexdigest() != entry_own_hash:
            return broken(sequence, "content does not match its hash (altered or inserted)")
        count += 1
        last = (sequence, entry_own_hash)
        if first is None:
            first = last
        prev_seq, prev_hash = sequence, entry_own_hash
    return VerifyResult(True, count, first, last, gaps=gaps)


def database_records(chunk_size: int = 20_000) -> Iterator[dict[str, Any]]:
    # Large chunks: a server-side cursor round trip per 20,000 entries, not per 2,000.
    return _records(AuditEvent.objects.all(), chunk_size)


# ``format_at`` done by PostgreSQL: the same text (microseconds, UTC, "Z").
_AT_SQL = """to_char("at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# --- Verifying the database fast ----------------------------------------------------------------------------------
#
# The canonical payload is an object with the fixed keys of PAYLOAD_FIELDS in sorted order, so it is a template:
# each string goes through encode_basestring_ascii (the very C function the canonical encoder uses for strings),
# PostgreSQL prints the integers ('null' for none, as JSON does) and formats ``at`` as ``format_at`` does; only
# before/after go through the encoder, from their jsonb text parsed as Django parses it. The same values recur
# often (a flag's {"enabled": false}), so their canonical text is remembered for up to _JSON_MEMO_SIZE texts.
# At a million entries the ledger is verified in ranges by _VERIFY_WORKERS processes sharing one snapshot
# (``_verify_parallel``), the seams between ranges checked as the one-pass loop checks every entry.

_PAYLOAD_ORDER = tuple(sorted(PAYLOAD_FIELDS))  # the order of the template's keys below
_JSON_MEMO_SIZE = 10_000
_JSON_DECODER = json.JSONDecoder()
_encode_string = json.encoder.encode_basestring_ascii
# The canonical encoder's own C function, built once (``JSONEncoder.encode`` builds it again at every call); no
# circular check, as values parsed from JSON cannot hold a cycle. None where Python has no C accelerator.
_C_ENCODE = (
    json.encoder.c_make_encoder(
        None, _CANONICAL.default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False
    )
    if json.encoder.c_make_encoder is not None
    else None
)


def _canonical_of_jsonb(text: str) -> str:
    """canonical_json(json.loads(text)) for a jsonb column's text."""
    value, end = _JSON_DECODER.scan_once(text, 0)
    if end != len(text):  # never for jsonb's own text; json.loads decides
        value = json.loads(text)
    if _C_ENCODE is None:
        return canonical_json(value)
    return "".join(_C_ENCODE(value, 0))


def _payload_sql(where: str = "") -> str:
    def column(name: str) -> str:
        quoted = connection.ops.quote_name(name)
        if name == "at":
            return _AT_SQL
        if name in JSON_FIELDS:
            return f"{quoted}::text"
        if name in INT_FIELDS and name != "sequence":
            return f"coalesce({quoted}::text, 'null')"
        return quoted

    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    columns = ", ".join(column(name) for name in _PAYLOAD_ORDER)
    return f"SELECT {columns}, prev_hash, hash FROM {table}{where} ORDER BY sequence"  # noqa: S608 - our names


def _payloads(batches: Iterable[list[tuple[Any, ...]]]) -> Iterator[tuple[int, str, str, str]]:
    """(sequence, prev_hash, hash, canonical payload text) of rows of ``_payload_sql``."""
    memo: dict[str, str] = {}
    canonical = _canonical_of_jsonb
    enc = _encode_string
    for rows in batches:
        for (
            action,
            actor_kind,
            actor_name,
            actor_token_id,
            actor_user_id,
            after,
            at,
            before,
            object_id,
            object_repr,
            object_type,
            reason,
            request_id,
            rollout_id,
            sequence,
            prev_hash,
            own_hash,
        ) in rows:
            if after is None:
                after = "null"
            elif (known := memo.get(after)) is not None:
                after = known
            else:
                if len(memo) >= _JSON_MEMO_SIZE:
                    memo.clear()
                after = memo[after] = canonical(after)
            if before is None:
                before = "null"
            elif (known := memo.get(before)) is not None:
                before = known
            else:
                if len(memo) >= _JSON_MEMO_SIZE:
                    memo.clear()
                before = memo[before] = canonical(before)
            yield (
                sequence,
                prev_hash,
                own_hash,
                f'{{"action":{enc(action)},"actor_kind":{enc(actor_kind)},"actor_name":{enc(actor_name)},'
                f'"actor_token_id":{actor_token_id},"actor_user_id":{actor_user_id},"after":{after},"at":"{at}",'
                f'"before":{before},"object_id":{enc(object_id)},"object_repr":{enc(object_repr)},'
                f'"object_type":{enc(object_type)},"reason":{enc(reason)},"request_id":{enc(request_id)},'
                f'"rollout_id":{rollout_id},"sequence":{sequence}}}',
            )


def _batches(cursor: Any, chunk_size: int) -> Iterator[list[tuple[Any, ...]]]:
    while rows := cursor.fetchmany(chunk_size):
        yield rows


def _database_payloads(chunk_size: int) -> Iterator[tuple[int, str, str, str]]:
    """(sequence, prev_hash, hash, canonical payload text) of every entry in sequence order, from a server-side
    cursor fetching ``chunk_size`` rows at a time."""
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(_payload_sql())
        yield from _payloads(_batches(cursor, chunk_size))


_VERIFY_WORKERS = 2
# Below this many entries one process is quicker than starting another.
_PARALLEL_MIN_ENTRIES = 200_000


def verify_database(chunk_size: int = 50_000, *, workers: int | None = None) -> VerifyResult:
    """``verify(database_records())``, streamed: on PostgreSQL straight from a server-side cursor in chunks of
    ``chunk_size`` entries, the per-entry Python a template (``_payloads``), and in ``workers`` processes (default
    ``_VERIFY_WORKERS`` when the machine has more than one core) at ``_PARALLEL_MIN_ENTRIES`` entries and more;
    elsewhere (SQLite) through ``database_records``. The result is the same either way."""
    if connection.vendor != "postgresql":
        return verify(database_records())
    if workers is None:
        workers = _VERIFY_WORKERS if (os.cpu_count() or 1) > 1 else 1
    # Other processes cannot see an open transaction's rows (the test suite's, or a caller's own appends).
    if workers > 1 and hasattr(os, "fork") and not connection.in_atomic_block:
        return _verify_parallel(chunk_size, workers)
    # str(text) is the text itself: the payloads arrive canonical.
    return _verify(_database_payloads(chunk_size), canonical=str)


def _verify_parallel(chunk_size: int, workers: int) -> VerifyResult:
    """Verify the ledger in ``workers`` sequence ranges at once, each by a process of its own on one snapshot of
    the ledger (``pg_export_snapshot``), this process taking the first range; then join the ranges' results."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        cursor.execute(f"SELECT pg_export_snapshot(), min(sequence), max(sequence) FROM {table}")  # noqa: S608
        snapshot, low, high = cursor.fetchone()
        if low is None or high - low + 1 < max(_PARALLEL_MIN_ENTRIES, workers):
            return _verify(_database_payloads(chunk_size), canonical=str)
        step = (high - low + 1) // workers
        bounds = [(low + i * step, high if i == workers - 1 else low + (i + 1) * step - 1) for i in range(workers)]
        children = [_fork_range(snapshot, first, last, chunk_size) for first, last in bounds[1:]]
        try:
            with connection.chunked_cursor() as rows:
                rows.execute(_payload_sql(" WHERE sequence <= %s"), [bounds[0][1]])
                segments = [_verify_range(_payloads(_batches(rows, chunk_size)))]
        finally:
            answers = [_answer(*child) for child in children]
    return _join_ranges([*segments, *answers])


def _verify_range(entries: Iterable[tuple[int, str, str, str]]) -> tuple[VerifyResult, tuple[int, str] | None]:
    """A range's own result (its first entry taken as it comes) and its first entry's (sequence, prev_hash)."""
    head: list[tuple[int, str]] = []

    def noting_the_first() -> Iterator[tuple[int, str, str, str]]:
        for entry in entries:
            if not head:
                head.append((entry[0], entry[1]))
            yield entry

    result = _verify(noting_the_first(), segment=True, canonical=str)
    return result, (head[0] if head else None)


def _join_ranges(ranges: list[tuple[VerifyResult, tuple[int, str] | None]]) -> VerifyResult:
    """The result of one pass over the ranges in order: each range's first entry gets the checks a range's own
    verification leaves out (it follows the entry before it, and links to that entry's hash)."""
    count = 0
    first: tuple[int, str] | None = None
    last: tuple[int, str] | None = None
    prev_seq, prev_hash = 0, GENESIS_HASH
    for result, head in ranges:
        if head is None:  # an empty range
            continue
        sequence, entry_prev_hash = head
        if sequence > prev_seq + 1:
            return VerifyResult(
                False,
                count,
                first,
                last,
                broken_at=prev_seq + 1,
                problem=f"entry missing (the next entry is #{sequence})",
            )
        if sequence < prev_seq + 1:
            return VerifyResult(
                False, count, first, last, broken_at=sequence, problem=f"out of order or duplicated (after #{prev_seq})"
            )
        if entry_prev_hash != prev_hash:
            return VerifyResult(
                False,
                count,
                first,
                last,
                broken_at=sequence,
                problem="prev_hash does not match the previous entry's hash",
            )
        if not result.ok:
            return VerifyResult(
                False,
                count + result.entries,
                first or result.first,
                result.last or last,
                broken_at=result.broken_at,
                problem=result.problem,
            )
        count += result.entries
        first = first or result.first
        last = result.last
        prev_seq, prev_hash = result.last
    return VerifyResult(True, count, first, last)


def _fork_range(snapshot: str, first: int, last: int, chunk_size: int) -> tuple[int, int]:
    """Start a process verifying the range ``first``..``last`` on ``snapshot``: (its pid, the pipe it answers on).

    The child opens a connection of its own and never touches the parent's (closing it would end the parent's
    session on the shared socket), and leaves with os._exit, so no finalizer runs in it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        return pid, read_end
    try:  # the child
        os.close(read_end)
        try:
            answer: Any = ("ok", _child_range(snapshot, first, last, chunk_size))
        except BaseException as exc:  # reported to the parent, which raises it
            answer = ("error", f"{type(exc).__name__}: {exc}")
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(answer, out)
    finally:
        os._exit(0)


def _child_range(snapshot: str, first: int, last: int, chunk_size: int) -> tuple[VerifyResult, tuple[int, str] | None]:
    import psycopg

    # Not get_new_connection: that would take the parent's pool (when configured) and set the parent's wrapper.
    raw = connection.Database.connect(**connection.get_connection_params())
    try:
        raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with raw.cursor() as cursor:
            cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
        with raw.cursor(name="ledger_verify_range") as cursor:
            cursor.execute(_payload_sql(" WHERE sequence >= %s AND sequence <= %s"), [first, last])
            return _verify_range(_payloads(_batches(cursor, chunk_size)))
    finally:
        raw.close()


def _answer(pid: int, read_end: int) -> tuple[VerifyResult, tuple[int, str] | None]:
    with os.fdopen(read_end, "rb") as answers:
        data = answers.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"ledger verification: worker {pid} died without an answer")
    status, value = pickle.loads(data)  # noqa: S301 - our own child's answer
    if status != "ok":
        raise RuntimeError(f"ledger verification: worker {pid} failed: {value}")
    return value


# --- Exporting ------------------------------------------------------------------------------------

CSV_DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_escape(cell: str) -> str:
    """Stop spreadsheets reading a cell as a formula (OWASP CSV injection).

    A leading apostrophe is escaped too, so ``csv_unescape`` can undo it exactly
    and an exported CSV still verifies.
    """
    return "'" + cell if cell.startswith(CSV_DANGEROUS_PREFIXES) else cell


def csv_unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


def _csv_cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in JSON_FIELDS:
        return csv_escape(canonical_json(value))
    return csv_escape(str(value))


def csv_row(record: Mapping[str, Any]) -> list[str]:
    return [_csv_cell(name, record[name]) for name in RECORD_FIELDS]


_AT = RECORD_FIELDS.index("at")
_JSON_INDEXES = tuple(i for i, name in enumerate(RECORD_FIELDS) if name in JSON_FIELDS)
_INT_INDEXES = tuple(i for i, name in enumerate(RECORD_FIELDS) if name in INT_FIELDS)
_TEXT_INDEXES = tuple(
    i for i, name in enumerate(RECORD_FIELDS) if name not in JSON_FIELDS and name not in INT_FIELDS and name != "at"
)
_DANGEROUS = frozenset(CSV_DANGEROUS_PREFIXES)


def _csv_rows(queryset: QuerySet[AuditEvent], chunk_size: int) -> Iterator[list[Any]]:
    """Rows as ``csv_row`` makes them, straight from the database tuples: no dict and no call per cell
    (the CSV export of a million entries spent most of its time there). The csv module writes None as ""."""
    for row in queryset.order_by("sequence").values_list(*RECORD_FIELDS).iterator(chunk_size=chunk_size):
        cells = list(row)
        cells[_AT] = format_at(cells[_AT])
        for i in _JSON_INDEXES:
            if cells[i] is not None:
                cells[i] = csv_escape(canonical_json(cells[i]))
        for i in _TEXT_INDEXES:
            value = cells[i]
            if value and value[0] in _DANGEROUS:
                cells[i] = "'" + value
        for i in _INT_INDEXES:
            if cells[i] is not None and cells[i] < 0:
                cells[i] = "'" + str(cells[i])
        yield cells


def _records(queryset: QuerySet[AuditEvent], chunk_size: int) -> Iterator[dict[str, Any]]:
    # Plain rows rather than model instances: the export touches every row once.
    at = RECORD_FIELDS.index("at")
    for row in queryset.order_by("sequence").values_list(*RECORD_FIELDS).iterator(chunk_size=chunk_size):
        record = dict(zip(RECORD_FIELDS, row, strict=True))
        record["at"] = format_at(row[at])
        yield record


def export_chunks(
    queryset: QuerySet[AuditEvent], fmt: str, *, chunk_size: int = 2000, manifest: Mapping[str, Any] | None = None
) -> Iterator[str]:
    """The export as text chunks, streamed, so memory stays flat whatever the ledger's size.

    ``manifest`` (``governance.manifest``) is written as the first line: what the export covers. On PostgreSQL the
    server writes the lines (``_copy_chunks``); elsewhere (SQLite), or for a queryset that is not a plain filter of
    the ledger table, Python writes them from a server-side cursor feeding batches of ``chunk_size``.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"Unknown export format {fmt!r}")
    if manifest is not None:
        from .manifest import header

        yield header(manifest, fmt)
    if fmt == "csv":
        yield CSV_HEADER
    # Read here, not before the first chunk: the view streams this generator inside ``replica_reads()``.
    alias = queryset.db
    if connections[alias].vendor == "postgresql" and _plain_filter(queryset):
        yield from _copy_chunks(queryset, fmt, alias)
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        rows = _csv_rows(queryset, chunk_size)
        while batch := list(islice(rows, 2000)):
            writer.writerows(batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        return
    records = _records(queryset, chunk_size)
    while batch := list(islice(records, 2000)):
        yield "".join(canonical_json(r) + "\n" for r in batch)


CSV_HEADER = ",".join(RECORD_FIELDS) + "\n"  # what csv.writer writes for these names (none needs quoting)

# --- Exporting on PostgreSQL: the server writes every line ---------------------------------------------------------
#
# The export of a million entries spent nearly all its time building and escaping cells in Python. Here COPY ... TO
# STDOUT writes the lines, and Python only joins the rows it receives into chunks of ``_COPY_CHUNK_BYTES``.
#
# CSV (FORMAT csv) is byte for byte what csv.writer over ``csv_row`` writes, except in two deliberate ways:
# - the JSON cells (before, after) are jsonb's own text (``{"a": 1, "b": "é"}``: keys in jsonb's order, a space
#   after ":" and ",", non-ASCII as UTF-8) instead of canonical JSON. json.loads of that text gives exactly the
#   value Django reads from the column (Django parses the same text), so the verifier, which re-canonicalises,
#   computes the same hash;
# - a cell holding a carriage return is quoted (csv.writer with "\n" line ends leaves it bare, and a CSV reader
#   then splits the record there, so such an export did not verify).
# The CSV-injection escape is the same ``csv_escape`` rule, done by CASE expressions; an empty string is written
# as NULL (both are an empty unquoted cell, as csv.writer writes them).
#
# JSON Lines: each line is row_to_json of the record's columns in RECORD_FIELDS order (compact, before/after as
# jsonb's text) with every non-ASCII character \u-escaped afterwards, so lines stay ASCII as before; json.loads
# gives the same record as before, only the key order and the spacing inside before/after differ.

_COPY_CHUNK_BYTES = 1 << 18
# ascii() (the first character's code, 0 for '') against integers: a third cheaper than comparing left(cell, 1).
_CSV_DANGEROUS_CODES = ", ".join(str(ord(prefix)) for prefix in CSV_DANGEROUS_PREFIXES)


def _plain_filter(queryset: QuerySet[AuditEvent]) -> bool:
    """Whether the queryset is a WHERE clause over the ledger table alone (what the audit filters build)."""
    query = queryset.query
    return (
        query.model is AuditEvent
        and len(query.alias_map) <= 1
        and not query.extra
        and not query.distinct
        and not query.combinator
        and query.low_mark == 0
        and query.high_mark is None
        and not query.annotations
    )


def _where(queryset: QuerySet[AuditEvent], alias: str) -> tuple[str, list[Any]] | None:
    """The queryset's WHERE clause (``("", [])`` for every entry), or None when it matches nothing."""
    compiler = queryset.query.get_compiler(using=alias)
    try:
        sql, params = compiler.compile(queryset.query.where)
    except EmptyResultSet:
        return None
    except FullResultSet:
        return "", []
    return (f" WHERE {sql}" if sql else ""), list(params)


def _column_sql(name: str, table: str, fmt: str) -> str:
    column = f"{table}.{connection.ops.quote_name(name)}"
    if name == "at":
        return _AT_SQL.replace('"at"', column) + ' AS "at"'
    if fmt == "jsonl":
        return column
    if name in JSON_FIELDS:
        # Among JSON texts only a negative number starts with a dangerous character ("-").
        text = f"{column}::text"
        return (
            f"CASE WHEN jsonb_typeof({column}) = 'number' AND left({text}, 1) = '-' THEN '''' || {text} ELSE {text} END"
        )
    if name == "sequence":
        return column  # never negative: the table's check constraint keeps it at least 1
    if name in INT_FIELDS:
        return f"CASE WHEN {column} < 0 THEN '''' || {column} ELSE {column}::text END"
    return f"CASE WHEN ascii({column}) IN ({_CSV_DANGEROUS_CODES}) THEN '''' || {column} ELSE NULLIF({column}, '') END"


def _copy_sql(queryset: QuerySet[AuditEvent], fmt: str, alias: str) -> tuple[str, list[Any]] | None:
    where = _where(queryset, alias)
    if where is None:
        return None
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    columns = ", ".join(_column_sql(name, table, fmt) for name in RECORD_FIELDS)
    select = f"SELECT {columns} FROM {table}{where[0]}"  # noqa: S608 - our names; values are parameters
    if fmt == "csv":
        return f"COPY ({select} ORDER BY {table}.sequence) TO STDOUT (FORMAT csv)", where[1]
    json_lines = f"SELECT row_to_json(t) FROM ({select}) t ORDER BY t.sequence"  # noqa: S608 - as above
    return f"COPY ({json_lines}) TO STDOUT", where[1]


def _copy_chunks(queryset: QuerySet[AuditEvent], fmt: str, alias: str) -> Iterator[str]:
    statement = _copy_sql(queryset, fmt, alias)
    if statement is None:
        return
    sql, params = statement
    with connections[alias].cursor() as cursor, _logged(cursor, sql, params), cursor.cursor.copy(sql, params) as copy:
        parts: list[Any] = []
        size = 0
        for row in copy:  # psycopg hands over one row (line) at a time
            parts.append(row)
            size += len(row)
            if size >= _COPY_CHUNK_BYTES:
                yield _copy_text(b"".join(parts), fmt)
                parts, size = [], 0
        if parts:
            yield _copy_text(b"".join(parts), fmt)


def _logged(cursor: Any, sql: str, params: list[Any]) -> AbstractContextManager[None]:
    """COPY goes past Django's ``execute``: log it as Django logs a query (connection.queries, query captures)."""
    return cursor.debug_sql(sql, params) if isinstance(cursor, CursorDebugWrapper) else nullcontext()


def _copy_text(block: bytes, fmt: str) -> str:
    text = block.decode("utf-8")
    if fmt == "csv":
        return text
    # COPY's text format doubles every backslash; JSON text holds no other character it escapes (control
    # characters are already \u-escaped), and a block holds whole rows, so one replace undoes it.
    text = text.replace("\\\\", "\\")
    return text if text.isascii() else _NON_ASCII.sub(_json_escape, text)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _json_escape(match: re.Match[str]) -> str:
    """A non-ASCII character as the \\u escape json.dumps(ensure_ascii=True) writes (a surrogate pair above BMP)."""
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def _record_from_csv(row: Mapping[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        raw = csv_unescape(row[name])
        if name in INT_FIELDS:
            record[name] = int(raw) if raw != "" else None
        elif name in JSON_FIELDS:
            record[name] = json.loads(raw) if raw != "" else None
        else:
            record[name] = raw
    return record


def file_records(path: Path | str) -> Iterator[dict[str, Any]]:
    """Entries of an exported file (JSON Lines, or CSV when the name ends in .csv), after its manifest line."""
    from .manifest import parse_line

    path = Path(path)
    is_csv = path.suffix.lower() == ".csv"
    with path.open(encoding="utf-8", newline="") as handle:
        first = handle.readline()
        if parse_line(first, csv_file=is_csv) is None:  # no manifest: the first line is data (or the CSV header)
            handle.seek(0)
        if is_csv:
            for row in csv.DictReader(handle):
                yield _record_from_csv(row)
        else:
            for line in handle:
                if line.strip():
                    yield json.loads(line)
