"""What an audit-ledger export covers, written as its first line, and how a verifier reads it back.

An export filtered by rollout, actor, action or object has gaps in its sequence
by design, so a chain check alone cannot tell a filtered-out entry from a removed
one. The manifest closes that: it states the filters, how many entries the export
holds, the first and last (sequence, hash) and the ledger's last sequence when it
was taken. The same figures go into the export's own ledger entry
(``audit.export``), so a manifest cannot be rewritten to match a cut file without
disagreeing with the ledger.

Verification (``verify_export``) then needs no flag: gaps are accepted only when
the manifest's filters explain them, every entry must match those filters and
hash correctly, and the count, first and last entries must be the manifest's, so
a removed, added or edited line is caught.

Kept apart from the writers (``ledger.export_chunks``) and readers
(``ledger.file_records``): they only emit or skip the first line.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from django.db.models import Count, Max, Min, QuerySet

from .ledger import VerifyResult, canonical_json, parse_at, verify
from .models import AuditEvent

KIND = "audit-ledger-export-manifest"
VERSION = 1
CSV_MARKER = "#" + KIND  # the first cell of a CSV export's first row
JSONL_KEY = "audit_export_manifest"  # the only key of a JSON Lines export's first line
# Filters that leave gaps in the sequence; a time range alone does not.
GAP_FILTERS = ("rollout", "actor", "action", "object_type", "object_id", "history_of")


def build(
    queryset: QuerySet[AuditEvent], *, filters: Mapping[str, Any], rollout_id: int | None, through: int, fmt: str
) -> dict[str, Any]:
    """The manifest of an export of ``queryset`` (already limited to ``sequence <= through``): two queries."""
    figures = queryset.order_by().aggregate(rows=Count("sequence"), first=Min("sequence"), last=Max("sequence"))
    hashes = dict(
        AuditEvent.objects.filter(sequence__in=[s for s in (figures["first"], figures["last"]) if s]).values_list(
            "sequence", "hash"
        )
        if figures["rows"]
        else []
    )

    def end(sequence: int | None) -> dict[str, Any] | None:
        return {"sequence": sequence, "hash": hashes[sequence]} if sequence else None

    return {
        "kind": KIND,
        "version": VERSION,
        "format": fmt,
        "filters": dict(filters),
        "rollout_id": rollout_id,
        "rows": figures["rows"],
        "first": end(figures["first"]),
        "last": end(figures["last"]),
        "through_sequence": through,
        "gaps_expected": any(filters.get(name) for name in GAP_FILTERS),
    }


def header(manifest: Mapping[str, Any], fmt: str) -> str:
    """The manifest as the export's first line."""
    if fmt == "jsonl":
        return canonical_json({JSONL_KEY: manifest}) + "\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([CSV_MARKER, canonical_json(manifest)])
    return buffer.getvalue()


def of_export(event: AuditEvent) -> dict[str, Any]:
    """The manifest of the export that ``event`` (its ``audit.export`` ledger entry) records."""
    return {**event.after["manifest"], "export_entry": event.sequence}


def parse_line(line: str, *, csv_file: bool) -> dict[str, Any] | None:
    """The manifest if ``line`` (a file's first line) is one, else ``None``."""
    if csv_file:
        if not line.startswith(CSV_MARKER):
            return None
        row = next(csv.reader([line]))
        return json.loads(row[1])
    if f'"{JSONL_KEY}"' not in line[:40]:
        return None
    value = json.loads(line)
    return value.get(JSONL_KEY) if isinstance(value, dict) and set(value) == {JSONL_KEY} else None


def read(path: Path | str) -> dict[str, Any] | None:
    """The manifest at the top of an exported file, or ``None`` for an export without one."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        first = handle.readline()
    manifest = parse_line(first, csv_file=path.suffix.lower() == ".csv")
    if manifest is not None and (manifest.get("kind") != KIND or manifest.get("version") != VERSION):
        raise ValueError(f"unknown manifest {manifest.get('kind')!r} version {manifest.get('version')!r}")
    return manifest


def _matches(record: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """Why ``record`` falls outside what the manifest says the export covers ('' when it is inside)."""
    filters = manifest["filters"]
    if record["sequence"] > manifest["through_sequence"]:
        return f"after the export's last ledger sequence #{manifest['through_sequence']}"
    at = parse_at(record["at"])
    if filters.get("since") and at < _moment(filters["since"]):
        return f"before the export's range (from {filters['since']})"
    if filters.get("until") and at >= _moment(filters["until"]):
        return f"after the export's range (until {filters['until']})"
    if filters.get("rollout") and record["rollout_id"] != manifest["rollout_id"]:
        return f"not an entry of rollout {filters['rollout']}"
    for name, field in (("actor", "actor_name"), ("action", "action"), ("object_type", "object_type")):
        if filters.get(name) and record[field] != filters[name]:
            return f"its {field} is not {filters[name]!r}"
    if filters.get("object_id") and str(record["object_id"]) != filters["object_id"]:
        return f"its object_id is not {filters['object_id']!r}"
    if filters.get("history_of") and f"{record['object_type']}:{record['object_id']}" not in filters["history_objects"]:
        return f"not an entry of the history of {filters['history_of']}"
    return ""


def _moment(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


class _OutOfScope(Exception):
    def __init__(self, sequence: int, problem: str):
        super().__init__(problem)
        self.sequence, self.problem = sequence, problem


def _in_scope(records: Iterable[Mapping[str, Any]], manifest: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for record in records:
        problem = _matches(record, manifest)
        if problem:
            raise _OutOfScope(record["sequence"], f"entry outside the export's manifest: {problem}")
        yield record


def verify_export(manifest: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> VerifyResult:
    """Verify an exported file's entries against its manifest; the first problem found is named."""
    try:
        result = verify(_in_scope(records, manifest), segment=True, allow_gaps=bool(manifest["gaps_expected"]))
    except _OutOfScope as exc:
        return VerifyResult(False, 0, None, None, broken_at=exc.sequence, problem=exc.problem)
    if not result.ok:
        return result

    def mismatch(problem: str, at: int | None) -> VerifyResult:
        return VerifyResult(
            False, result.entries, result.first, result.last, broken_at=at, problem=problem, gaps=result.gaps
        )

    first, last = manifest["first"], manifest["last"]
    want_first = (first["sequence"], first["hash"]) if first else None
    want_last = (last["sequence"], last["hash"]) if last else None
    if result.first != want_first:
        at = want_first[0] if want_first else (result.first[0] if result.first else None)
        return mismatch("the first entry is not the manifest's (removed, added or altered)", at)
    if result.last != want_last:
        at = want_last[0] if want_last else (result.last[0] if result.last else None)
        return mismatch("the last entry is not the manifest's (removed, added or altered)", at)
    if result.entries != manifest["rows"]:
        return mismatch(
            f"the manifest lists {manifest['rows']} entries, the file holds {result.entries}: "
            "an entry was removed or added",
            None,
        )
    return result


def describe(manifest: Mapping[str, Any]) -> str:
    """What the export covers, for the verifier's summary."""
    filters = ", ".join(f"{k} {v}" for k, v in manifest["filters"].items() if v) or "no filter"
    entry = f", recorded as ledger entry #{manifest['export_entry']}" if manifest.get("export_entry") else ""
    return f"export of {filters}, ledger through #{manifest['through_sequence']}{entry}"
