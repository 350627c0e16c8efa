"""Exports of the ledger: filters, half-open ranges, CSV escaping, streaming, offline verification."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse

from governance import ledger
from governance.forms import parse_utc
from governance.models import AuditEvent
from governance.selectors import AuditFilter, audit_events
from rollout.roles import Role

pytestmark = pytest.mark.django_db


def top() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


def body(response) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode("utf-8")


def synthetic(n: int, *, rollout_id=None):
    return ledger.append_many(
        {
            "action": "update",
            "object_type": "rollout.phase",
            "object_id": i,
            "object_repr": f"phase {i}",
            "rollout_id": rollout_id,
            "before": {"status": "pending"},
            "after": {"status": "active", "n": i},
            "reason": f"entry {i}",
        }
        for i in range(n)
    )


# --- Parsing filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01", dt.datetime(2025, 6, 1, tzinfo=dt.UTC)),
        ("2025-06-01T14:30", dt.datetime(2025, 6, 1, 14, 30, tzinfo=dt.UTC)),
        ("2025-06-01 14:30:05Z", dt.datetime(2025, 6, 1, 14, 30, 5, tzinfo=dt.UTC)),
        ("2025-06-01T16:30:00+02:00", dt.datetime(2025, 6, 1, 14, 30, tzinfo=dt.UTC)),
    ],
)
def test_utc_parsing(text, expected):
    assert parse_utc(text) == expected


@pytest.mark.parametrize("text", ["2025-13-01", "yesterday", "2025-06-01T25:00", "06/01/2025", ""])
def test_malformed_dates_are_refused(text):
    with pytest.raises(ValueError, match="is not a date or date-time"):
        parse_utc(text)


def test_the_range_is_half_open(rollout):
    rows = list(AuditEvent.objects.order_by("sequence"))
    times = sorted({e.at for e in rows})
    assert len(times) >= 5
    since, until = times[1], times[4]
    selected = set(audit_events(AuditFilter(since=since, until=until)).values_list("sequence", flat=True))
    assert selected == {e.sequence for e in rows if since <= e.at < until}
    assert not any(e.at == until for e in AuditEvent.objects.filter(sequence__in=selected))
    assert any(e.at == since for e in AuditEvent.objects.filter(sequence__in=selected))


# --- CSV escaping ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "escaped"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tTAB", "'\tTAB"),
        ("'quoted", "''quoted"),
        ("plain = text", "plain = text"),
    ],
)
def test_csv_cells_that_a_spreadsheet_would_evaluate_are_escaped(cell, escaped):
    assert ledger.csv_escape(cell) == escaped
    assert ledger.csv_unescape(escaped) == cell


def test_an_exported_csv_escapes_formulas_and_still_verifies(db, tmp_path, client_for):
    ledger.append(action="update", object_type="x.y", object_repr="=cmd|' /C calc'!A0", reason="@SUM(1+1)*cmd")
    response = client_for(Role.AUDITOR).post("/audit/export/", {"format": "csv"})
    text = body(response)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "#audit-ledger-export-manifest"  # what the export covers, then the records
    assert rows[1] == list(ledger.RECORD_FIELDS)
    evil = rows[2]
    assert evil[ledger.RECORD_FIELDS.index("object_repr")] == "'=cmd|' /C calc'!A0"
    assert evil[ledger.RECORD_FIELDS.index("reason")] == "'@SUM(1+1)*cmd"
    path = tmp_path / "export.csv"
    path.write_text(text, encoding="utf-8")
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=out)
    assert out.getvalue().startswith("Audit ledger intact: 1 entries")


# --- The export page ------------------------------------------------------------------------------------------


def test_an_export_streams_the_filtered_entries_and_is_itself_an_entry(rollout, client_for, users):
    ours = set(AuditEvent.objects.filter(rollout_id=rollout.pk).values_list("sequence", flat=True))
    response = client_for(Role.AUDITOR).post("/audit/export/", {"format": "jsonl", "rollout": rollout.slug})
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-ledger-')
    header, *lines = [json.loads(line) for line in body(response).splitlines()]
    assert header["audit_export_manifest"]["rows"] == len(ours)
    assert {r["sequence"] for r in lines} == ours
    assert [r["sequence"] for r in lines] == sorted(ours)  # oldest first
    export = AuditEvent.objects.get(sequence=int(response["X-Audit-Export-Entry"]))
    assert (export.action, export.actor_name, export.rollout_id) == ("audit.export", "auditor", rollout.pk)
    assert export.after.pop("manifest") == {
        k: v for k, v in header["audit_export_manifest"].items() if k != "export_entry"
    }
    assert export.after == {
        "format": "jsonl",
        "rows": len(ours),
        "through_sequence": export.sequence - 1,
        "since": None,
        "until": None,
        "rollout": rollout.slug,
        "actor": None,
        "action": None,
        "object_type": None,
        "object_id": None,
    }
    assert export.request_id == response["X-Request-ID"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"since": "2025-02-30"}, "is not a date or date-time"),
        ({"since": "2025-06-02", "until": "2025-06-01"}, "must be before"),
        ({"since": "2025-06-01", "until": "2025-06-01"}, "must be before"),
        ({"rollout": "no-such-rollout"}, "Unknown rollout"),
        ({"object_id": "3"}, "Give the object type"),
    ],
)
def test_bad_filters_get_a_clear_message_and_export_nothing(db, client_for, data, message):
    client = client_for(Role.AUDITOR)
    start = top()
    page = client.get("/audit/", data)
    assert page.status_code == 400
    assert message in page.content.decode()
    response = client.post("/audit/export/", {"format": "csv", **data})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert top() == start


def test_an_unknown_export_format_is_refused(db, client_for):
    start = top()
    response = client_for(Role.AUDITOR).post("/audit/export/", {"format": "xlsx"})
    assert response.status_code == 400
    assert "Choose CSV or JSON Lines" in response.content.decode()
    assert top() == start


# --- The command ------------------------------------------------------------------------------------------------


def test_the_export_command_writes_stdout_or_a_file_and_is_recorded(rollout, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    call_command("export_audit_log", format="jsonl", rollout=rollout.slug, stdout=out, stderr=err)
    manifest_line, *lines = out.getvalue().splitlines()
    expected = AuditEvent.objects.filter(rollout_id=rollout.pk).count() - 1  # minus the export entry itself
    assert len(lines) == expected and json.loads(manifest_line)["audit_export_manifest"]["rows"] == expected
    export = AuditEvent.objects.order_by("-sequence").first()
    assert export.action == "audit.export" and export.actor_kind == "system"
    assert export.actor_name.startswith("manage.py export_audit_log (")
    assert f"Exported {expected} entries" in err.getvalue()
    path = tmp_path / "ledger.csv"
    call_command("export_audit_log", format="csv", since="2000-01-01", output=str(path), stderr=io.StringIO())
    first, second = path.read_text(encoding="utf-8").splitlines()[:2]
    assert first.startswith("#audit-ledger-export-manifest,") and second.startswith("sequence,at,actor_kind,")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"since": "2025-13-01"}, "is not a date"),
        ({"since": "2025-06-02", "until": "2025-06-01"}, "--since must be before --until"),
        ({"rollout": "nope"}, "Unknown rollout 'nope'"),
    ],
)
def test_the_export_command_refuses_bad_filters(db, options, message):
    start = top()
    with pytest.raises(CommandError, match=message):
        call_command("export_audit_log", format="csv", stdout=io.StringIO(), **options)
    assert top() == start


def test_verify_file_names_the_first_broken_entry_of_a_segment(db, tmp_path):
    synthetic(20)
    path = tmp_path / "segment.jsonl"
    call_command("export_audit_log", format="jsonl", output=str(path), stderr=io.StringIO())
    lines = path.read_text().splitlines()[6:16]  # a segment without the manifest line: #6..#15
    path.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=out)
    assert out.getvalue().startswith("Audit ledger intact: 10 entries, first #6 ")
    tampered = [json.loads(line) for line in lines]
    tampered[3]["reason"] = "edited offline"
    path.write_text("".join(json.dumps(r) + "\n" for r in tampered))
    with pytest.raises(CommandError, match="BROKEN at sequence 9: content does not match"):
        call_command("verify_audit_log", file=str(path))
    del tampered[3]
    tampered[3]["reason"] = "entry 9"  # restore the next one; #9 is now simply missing
    path.write_text("".join(json.dumps(r) + "\n" for r in tampered))
    with pytest.raises(CommandError, match=r"BROKEN at sequence 9: entry missing"):
        call_command("verify_audit_log", file=str(path))
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), allow_gaps=True, stdout=out)
    assert "1 gap(s)" in out.getvalue()


def test_verify_file_refuses_what_is_not_an_export(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(CommandError, match="not an audit ledger export"):
        call_command("verify_audit_log", file=str(path))
    with pytest.raises(CommandError, match="No such file"):
        call_command("verify_audit_log", file=str(tmp_path / "missing.jsonl"))


# --- 10,000 entries on PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_export_of_ten_thousand_entries_matches_the_database_and_verifies_offline(db, client_for, tmp_path):
    synthetic(10_000, rollout_id=None)
    expected = list(ledger.database_records())
    assert len(expected) == 10_000
    response = client_for(Role.AUDITOR).post("/audit/export/", {"format": "jsonl", "since": "2000-01-01"})
    text = body(response)
    exported = [json.loads(line) for line in text.splitlines()[1:]]
    assert exported == json.loads(json.dumps(expected))
    path = tmp_path / "ledger.jsonl"
    path.write_text(text, encoding="utf-8")
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=out)
    assert out.getvalue() == (
        f"Audit ledger intact: 10000 entries, first #1 {expected[0]['hash']}, last #10000 {expected[-1]['hash']}. "
        "Matches its manifest: export of since 2000-01-01T00:00:00+00:00, ledger through #10000, "
        "recorded as ledger entry #10001.\n"
    )
    export = AuditEvent.objects.get(sequence=10_001)
    assert (export.action, export.after["rows"], export.after["through_sequence"]) == ("audit.export", 10_000, 10_000)
    # The database chain still verifies with the export entry appended.
    assert ledger.verify(ledger.database_records()).entries == 10_001
