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
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from django.db import connection, transaction
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
    entries: Iterable[tuple[int, str, str, Mapping[str, Any]]], *, segment: bool = False, allow_gaps: bool = False
) -> VerifyResult:
    """``verify`` over (sequence, prev_hash, hash, payload) tuples."""
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
        if sha256((entry_prev_hash + canonical_json(payload)).encode("ascii")).hexdigest() != entry_own_hash:
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


def _database_entries(chunk_size: int) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """(sequence, prev_hash, hash, payload) of every entry in sequence order, from a server-side cursor fetching
    ``chunk_size`` rows at a time: plain tuples (no model, no per-field converters), ``at`` already formatted."""
    columns = [_AT_SQL if name == "at" else connection.ops.quote_name(name) for name in PAYLOAD_FIELDS]
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    sql = f"SELECT {', '.join(columns)}, prev_hash, hash FROM {table} ORDER BY sequence"  # noqa: S608 - our names
    before, after = PAYLOAD_FIELDS.index("before"), PAYLOAD_FIELDS.index("after")
    width = len(PAYLOAD_FIELDS)
    loads = json.loads
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(sql)
        while rows := cursor.fetchmany(chunk_size):
            for row in rows:
                values = list(row[:width])
                # jsonb arrives as text (Django's psycopg setup leaves parsing to the JSON field).
                if values[before] is not None:
                    values[before] = loads(values[before])
                if values[after] is not None:
                    values[after] = loads(values[after])
                yield values[0], row[width], row[width + 1], dict(zip(PAYLOAD_FIELDS, values, strict=True))


def verify_database(chunk_size: int = 50_000) -> VerifyResult:
    """``verify(database_records())``, streamed: on PostgreSQL straight from a server-side cursor in chunks of
    ``chunk_size`` entries with the timestamps formatted by the server (the per-row Python is one dict, the
    canonical JSON and the hash); elsewhere (SQLite) through ``database_records``."""
    if connection.vendor != "postgresql":
        return verify(database_records())
    return _verify(_database_entries(chunk_size))


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
    """The export as text chunks: a server-side cursor feeds batches, so memory stays flat.

    ``manifest`` (``governance.manifest``) is written as the first line: what the export covers.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"Unknown export format {fmt!r}")
    if manifest is not None:
        from .manifest import header

        yield header(manifest, fmt)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(RECORD_FIELDS)
        rows = _csv_rows(queryset, chunk_size)
        while batch := list(islice(rows, 2000)):
            writer.writerows(batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue()
        return
    records = _records(queryset, chunk_size)
    while batch := list(islice(records, 2000)):
        yield "".join(canonical_json(r) + "\n" for r in batch)


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
