"""The ledger's fields and actions, and the canonical form every entry is hashed in."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from django.db.models import Model, QuerySet

from ..models import AuditEvent

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
CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical_json(value: Any) -> str:
    return CANONICAL_ENCODER.encode(value)


def entry_hash(prev_hash: str, payload: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(payload)).encode("ascii")).hexdigest()


def record_of(event: AuditEvent) -> dict[str, Any]:
    """The entry as exported: the payload plus ``prev_hash`` and ``hash``."""
    record = {name: getattr(event, name) for name in RECORD_FIELDS}
    record["at"] = format_at(event.at)
    return record


def payload_of(record: Mapping[str, Any]) -> dict[str, Any]:
    return {name: record[name] for name in PAYLOAD_FIELDS}


# ``format_at`` done by PostgreSQL: the same text (microseconds, UTC, "Z").
AT_SQL = """to_char("at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def records_of(queryset: QuerySet[AuditEvent], chunk_size: int) -> Iterator[dict[str, Any]]:
    # Plain rows rather than model instances: the export touches every row once.
    at = RECORD_FIELDS.index("at")
    for row in queryset.order_by("sequence").values_list(*RECORD_FIELDS).iterator(chunk_size=chunk_size):
        record = dict(zip(RECORD_FIELDS, row, strict=True))
        record["at"] = format_at(row[at])
        yield record
