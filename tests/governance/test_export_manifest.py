"""Issue 9 seam 9: an export says what it covers (its manifest line), and verification reads it.

A rollout-filtered export verifies without ``--allow-gaps``; a removed, added or
edited line is still caught.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse

from governance import ledger, manifest
from governance.models import AuditEvent
from rollout.roles import Role

pytestmark = pytest.mark.django_db


def interleaved(rollout_a: int, rollout_b: int, n: int = 12) -> None:
    """Entries of two rollouts (and none) taking turns, so a filtered export has gaps."""
    ledger.append_many(
        {
            "action": "update",
            "object_type": "rollout.phase",
            "object_id": i,
            "rollout_id": (rollout_a, rollout_b, None)[i % 3],
            "after": {"n": i},
            "reason": f"entry {i}",
        }
        for i in range(n)
    )


@pytest.fixture
def two_rollouts(rollout, users):
    from rollout.services import rollout_create_from_playbook

    other = rollout_create_from_playbook(name="Second rollout", owner=users[Role.ROLLOUT_ADMIN])
    interleaved(rollout.pk, other.pk)
    return rollout, other


def download(client, fmt: str, **filters) -> str:
    response = client.post("/audit/export/", {"format": fmt, **filters})
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode("utf-8")


def verify_file(path) -> str:
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_rollout_filtered_download_verifies_without_flags(two_rollouts, client_for, tmp_path, fmt):
    rollout, _other = two_rollouts
    text = download(client_for(Role.AUDITOR), fmt, rollout=rollout.slug)
    export = AuditEvent.objects.order_by("-sequence").first()
    ours = list(AuditEvent.objects.filter(rollout_id=rollout.pk, sequence__lt=export.sequence).order_by("sequence"))
    covers = manifest.parse_line(text.splitlines()[0] + "\n", csv_file=fmt == "csv")
    assert covers == {
        "kind": "audit-ledger-export-manifest",
        "version": 1,
        "format": fmt,
        "filters": {
            "since": None,
            "until": None,
            "rollout": rollout.slug,
            "actor": None,
            "action": None,
            "object_type": None,
            "object_id": None,
        },
        "rollout_id": rollout.pk,
        "rows": len(ours),
        "first": {"sequence": ours[0].sequence, "hash": ours[0].hash},
        "last": {"sequence": ours[-1].sequence, "hash": ours[-1].hash},
        "through_sequence": export.sequence - 1,
        "gaps_expected": True,
        "export_entry": export.sequence,
    }
    # The export's own ledger entry holds the same figures: the manifest is anchored in the chain.
    assert export.after["manifest"] == {k: v for k, v in covers.items() if k != "export_entry"}
    path = tmp_path / f"rollout.{fmt}"
    path.write_text(text, encoding="utf-8")
    summary = verify_file(path)
    assert summary.startswith(f"Audit ledger intact: {len(ours)} entries, first #{ours[0].sequence} ")
    assert f"Matches its manifest: export of rollout {rollout.slug}, ledger through #{export.sequence - 1}" in summary


def _cut(path, fmt: str, mutate) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    head = 2 if fmt == "csv" else 1  # manifest (and the CSV header row)
    body = lines[head:]
    mutate(body)
    path.write_text("".join(lines[:head] + body), encoding="utf-8")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ("drop_middle", r"BROKEN: the manifest lists \d+ entries, the file holds \d+: an entry was removed or added"),
        ("drop_last", r"BROKEN at sequence \d+: the last entry is not the manifest's"),
        ("drop_first", r"BROKEN at sequence \d+: the first entry is not the manifest's"),
        ("edit", r"BROKEN at sequence \d+: content does not match its hash"),
    ],
)
def test_a_removed_or_edited_line_of_a_filtered_export_is_caught(
    two_rollouts, client_for, tmp_path, fmt, mutation, message
):
    rollout, _ = two_rollouts
    path = tmp_path / f"rollout.{fmt}"
    path.write_text(download(client_for(Role.AUDITOR), fmt, rollout=rollout.slug), encoding="utf-8")

    def mutate(body: list[str]) -> None:
        if mutation == "drop_middle":
            del body[len(body) // 2]
        elif mutation == "drop_last":
            del body[-1]
        elif mutation == "drop_first":
            del body[0]
        else:
            i = next(i for i, line in enumerate(body) if "entry " in line)
            body[i] = body[i].replace("entry ", "entry edited ", 1)

    _cut(path, fmt, mutate)
    with pytest.raises(CommandError, match=message):
        call_command("verify_audit_log", file=str(path))


def test_an_entry_of_another_rollout_slipped_into_the_export_is_caught(two_rollouts, client_for, tmp_path):
    rollout, other = two_rollouts
    client = client_for(Role.AUDITOR)
    ours = download(client, "jsonl", rollout=rollout.slug).splitlines(keepends=True)
    theirs = download(client, "jsonl", rollout=other.slug).splitlines(keepends=True)
    swapped = sorted(ours[1:-1] + theirs[1:2], key=lambda line: json.loads(line)["sequence"])
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join([ours[0], *swapped, ours[-1]]), encoding="utf-8")
    with pytest.raises(
        CommandError, match=f"entry outside the export's manifest: not an entry of rollout {rollout.slug}"
    ):
        call_command("verify_audit_log", file=str(path))


def test_an_unfiltered_range_export_still_refuses_gaps(two_rollouts, tmp_path):
    path = tmp_path / "range.jsonl"
    call_command("export_audit_log", format="jsonl", since="2000-01-01", output=str(path), stderr=io.StringIO())
    covers = manifest.read(path)
    assert covers["gaps_expected"] is False and covers["filters"]["since"] == "2000-01-01T00:00:00+00:00"
    assert "Matches its manifest" in verify_file(path)
    _cut(path, "jsonl", lambda body: body.pop(3))
    with pytest.raises(CommandError, match=r"BROKEN at sequence 4: entry missing \(the next entry is #5\)"):
        call_command("verify_audit_log", file=str(path))


def test_the_command_export_carries_the_manifest_of_its_filters(two_rollouts, tmp_path):
    rollout, _ = two_rollouts
    path = tmp_path / "cmd.csv"
    call_command(
        "export_audit_log", format="csv", rollout=rollout.slug, action="update", output=str(path), stderr=io.StringIO()
    )
    covers = manifest.read(path)
    updates = AuditEvent.objects.filter(rollout_id=rollout.pk, action="update")
    assert (covers["rows"], covers["filters"]["action"], covers["gaps_expected"]) == (updates.count(), "update", True)
    assert f"Matches its manifest: export of action update, rollout {rollout.slug}," in verify_file(path)
