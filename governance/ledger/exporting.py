"""Exporting the ledger as CSV or JSON Lines (written by PostgreSQL where it can), and reading an export back."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connection, connections
from django.db.backends.utils import CursorDebugWrapper
from django.db.models import QuerySet

from ..models import AuditEvent
from .canonical import (
    AT_SQL,
    INT_FIELDS,
    JSON_FIELDS,
    RECORD_FIELDS,
    canonical_json,
    format_at,
    records_of,
)

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


def export_chunks(
    queryset: QuerySet[AuditEvent], fmt: str, *, chunk_size: int = 2000, manifest: Mapping[str, Any] | None = None
) -> Iterator[str]:
    """The export as text chunks, streamed, so memory stays flat whatever the ledger's size.

    ``manifest`` (``governance.manifest``) is written as the first line: what the export covers. On PostgreSQL the
    server writes the lines (``_copy_chunks``); elsewhere (SQLite), or for a queryset that is not a plain filter of
    the ledger table, Python writes them from a server-side cursor feeding batches of ``chunk_size``.
    """
    for chunk in _export(queryset, fmt, chunk_size, manifest):
        yield chunk.decode("utf-8") if isinstance(chunk, bytes) else chunk


def export_bytes(
    queryset: QuerySet[AuditEvent], fmt: str, *, chunk_size: int = 2000, manifest: Mapping[str, Any] | None = None
) -> Iterator[bytes]:
    """``export_chunks`` as UTF-8 bytes, for a response body: COPY's blocks go out as they came, not decoded to
    text and encoded back (two passes over every byte of a million-entry export)."""
    for chunk in _export(queryset, fmt, chunk_size, manifest):
        yield chunk if isinstance(chunk, bytes) else chunk.encode("utf-8")


def _export(
    queryset: QuerySet[AuditEvent], fmt: str, chunk_size: int, manifest: Mapping[str, Any] | None
) -> Iterator[str | bytes]:
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"Unknown export format {fmt!r}")
    if manifest is not None:
        from ..manifest import header

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
    records = records_of(queryset, chunk_size)
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
        return AT_SQL.replace('"at"', column) + ' AS "at"'
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


def _copy_chunks(queryset: QuerySet[AuditEvent], fmt: str, alias: str) -> Iterator[bytes]:
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
                yield _copy_block(b"".join(parts), fmt)
                parts, size = [], 0
        if parts:
            yield _copy_block(b"".join(parts), fmt)


def _logged(cursor: Any, sql: str, params: list[Any]) -> AbstractContextManager[None]:
    """COPY goes past Django's ``execute``: log it as Django logs a query (connection.queries, query captures)."""
    return cursor.debug_sql(sql, params) if isinstance(cursor, CursorDebugWrapper) else nullcontext()


def _copy_block(block: bytes, fmt: str) -> bytes:
    """A block of whole lines as the export holds them (UTF-8)."""
    if fmt == "csv":
        return block
    # COPY's text format doubles every backslash; JSON text holds no other character it escapes (control
    # characters are already \u-escaped), and a block holds whole rows, so one replace undoes it.
    block = block.replace(b"\\\\", b"\\")
    if block.isascii():
        return block
    return _NON_ASCII.sub(_json_escape, block.decode("utf-8")).encode("ascii")


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
    from ..manifest import parse_line

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
