"""The export writers. On PostgreSQL the server writes the lines (COPY): the CSV is byte for byte what csv.writer over
``csv_row`` writes except that the JSON cells are jsonb's own text, and a JSON Lines line holds the same record as the
canonical JSON line; both verify offline. Elsewhere (or for a queryset that is not a plain filter) Python writes them.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.management import call_command
from django.db import connection

from governance import ledger, manifest, services
from governance.models import AuditEvent
from governance.selectors import AuditFilter

pytestmark = pytest.mark.django_db

TRICKY = ["=SUM(A1)", "+1", "-2", "@cmd", "\tx", "'quoted", "plain", "", 'multi\nline, "quotes"', "é ü 中 😀 \u2028"]
JSON_INDEXES = [ledger.RECORD_FIELDS.index(name) for name in ("before", "after")]


def _tricky_entries():
    ledger.append_many(
        {
            "action": "update",
            "object_type": "rollout.rollout",
            "object_id": text[:60],
            "object_repr": text,
            "reason": text,
            "before": {"v": text, "n": -1.5, "nested": {"zz": [1, None, 2.5e-7], "a": "\\"}} if i % 2 else None,
            "after": [-1, text] if i % 3 else ({"ok": True, "ключ": 1e300} if i % 5 else -3),
            "rollout_id": i if i % 4 else None,
        }
        for i, text in enumerate(TRICKY * 3)
    )


def _jsonb_texts() -> dict[int, tuple[str | None, str | None]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sequence, before::text, after::text FROM governance_auditevent")
        return {sequence: (before, after) for sequence, before, after in cursor.fetchall()}


def _export(fmt: str, queryset=None, **kwargs) -> str:
    return "".join(ledger.export_chunks(AuditEvent.objects.all() if queryset is None else queryset, fmt, **kwargs))


@pytest.mark.postgres
def test_the_csv_export_is_csv_row_over_the_records_with_jsonb_text_in_the_json_cells():
    _tricky_entries()
    jsonb = _jsonb_texts()
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(ledger.RECORD_FIELDS)
    for record in ledger.canonical.records_of(AuditEvent.objects.all(), 100):
        row = ledger.csv_row(record)
        for index, text in zip(JSON_INDEXES, jsonb[record["sequence"]], strict=True):
            assert row[index] == ("" if text is None else ledger.csv_escape(ledger.canonical_json(json.loads(text))))
            row[index] = "" if text is None else ledger.csv_escape(text)
        writer.writerow(row)
    got = _export("csv")
    assert got == expected.getvalue()
    assert "'-3" in got and '"{""n"": -1.5' in got  # a negative number is escaped like any cell; jsonb's spacing


@pytest.mark.postgres
def test_the_jsonl_export_holds_the_canonical_records_in_ascii_lines():
    _tricky_entries()
    records = list(ledger.canonical.records_of(AuditEvent.objects.all(), 100))
    lines = _export("jsonl").split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == records
    assert all(line.isascii() and list(json.loads(line)) == list(ledger.RECORD_FIELDS) for line in lines[:-1])
    assert "\\ud83d\\ude00" in lines[-2] and '"a": "\\\\"' in lines[1]  # an astral character, a backslash


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_both_exports_of_tricky_entries_verify_offline(tmp_path, fmt):
    _tricky_entries()
    ledger.append(action="update", object_type="x.y", object_repr="carriage\rreturn", reason="\rleading")
    filters = AuditFilter(action="update")
    queryset, event = services.audit_export(filters=filters, fmt=fmt)
    path = tmp_path / f"export.{fmt}"
    with path.open("w", encoding="utf-8", newline="") as out:
        for chunk in ledger.export_chunks(queryset, fmt, manifest=manifest.of_export(event)):
            out.write(chunk)
    result = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=result)
    assert result.getvalue().startswith(f"Audit ledger intact: {len(TRICKY) * 3 + 1} entries")


@pytest.mark.postgres
def test_a_csv_cell_with_a_carriage_return_is_quoted_so_the_row_reads_back():
    # csv.writer (lineterminator "\n") left such a cell bare and a reader split the row there.
    ledger.append(action="update", object_type="x.y", object_repr="a\rb", reason="\r")
    rows = list(csv.reader(io.StringIO(_export("csv"), newline="")))
    assert len(rows) == 2 and len(rows[1]) == len(ledger.RECORD_FIELDS)
    assert rows[1][ledger.RECORD_FIELDS.index("object_repr")] == "a\rb"
    assert rows[1][ledger.RECORD_FIELDS.index("reason")] == "'\r"


@pytest.mark.postgres
def test_filters_reach_the_server_as_parameters_and_an_empty_filter_exports_no_rows():
    ledger.append(action="update", object_type="x.y", object_id="O'Brien; --", reason="one")
    ledger.append(action="update", object_type="x.y", object_id="other", reason="two")
    only = AuditEvent.objects.filter(object_id="O'Brien; --")
    assert [json.loads(line)["reason"] for line in _export("jsonl", only).splitlines()] == ["one"]
    assert _export("csv", AuditEvent.objects.filter(pk__in=[])) == ledger.CSV_HEADER
    assert _export("jsonl", AuditEvent.objects.filter(pk__in=[])) == ""


def test_the_python_writers_serve_what_the_server_cannot_and_agree_on_the_records():
    _tricky_entries()
    distinct = AuditEvent.objects.filter(sequence__lte=5).distinct()
    assert not ledger.exporting._plain_filter(distinct)
    lines = _export("jsonl", distinct, chunk_size=2).splitlines()
    assert lines == [
        ledger.canonical_json(r) for r in list(ledger.canonical.records_of(AuditEvent.objects.all(), 100))[:5]
    ]
    text = _export("csv", distinct, chunk_size=2)
    assert text.startswith(ledger.CSV_HEADER) and len(list(csv.reader(io.StringIO(text)))) == 6
