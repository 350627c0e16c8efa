"""Verifying the chain: records in sequence order, and the database fast (a template per entry, two processes)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from ..models import AuditEvent
from .canonical import (
    AT_SQL,
    CANONICAL_ENCODER,
    GENESIS_HASH,
    INT_FIELDS,
    JSON_FIELDS,
    PAYLOAD_FIELDS,
    canonical_json,
    payload_of,
    records_of,
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
    return records_of(AuditEvent.objects.all(), chunk_size)


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
        None, CANONICAL_ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False
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
            return AT_SQL
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
