"""Data-processing records: the job records telemetry fields and voice transcription flows, proposes each once,
reviewers confirm or reject with a comment, retention mismatches are flagged, and an ingest with a new field
queues the job."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluations import services as ingest
from governance import records
from governance.models import (
    AuditEvent,
    ChangeStatus,
    Job,
    JobRun,
    ProcessingRecord,
    RecordChange,
    ScanCursor,
    TelemetryField,
)
from rollout.errors import ActionNotAllowed
from rollout.roles import Role
from tests.evaluations.conftest import run as run_payload
from tests.factories import advance_to, complete_readiness

pytestmark = pytest.mark.django_db

LATER = dt.timedelta(hours=1)  # past records.SETTLE: the cursor may move over what was ingested now


@pytest.fixture
def canary(rollout, users):
    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    # Entered a day ago: the samples of the last half hour lie inside the canary's activity period.
    return advance_to(rollout, "canary", users[Role.ROLLOUT_ADMIN], at=timezone.now() - dt.timedelta(days=1))


def send_runs(rollout, *outputs: dict, metrics: dict | None = None) -> None:
    body = run_payload(rollout.slug, outputs=[{"conversation_id": f"c{i}", **o} for i, o in enumerate(outputs)])
    if metrics is not None:
        body["metrics"] = metrics
    ingest.ingest_runs(payload={"runs": [body]})


def send_sample(rollout) -> None:
    start = timezone.now() - dt.timedelta(minutes=30)
    ingest.ingest_samples(
        payload={
            "samples": [
                {
                    "rollout": rollout.slug,
                    "phase": "canary",
                    "interval_start": start.isoformat(),
                    "interval_end": (start + dt.timedelta(minutes=5)).isoformat(),
                    "latency_p95_ms": 900.0,
                    "requests": 10,
                }
            ]
        }
    )


def subjects(status: str | None = None) -> set[str]:
    qs = RecordChange.objects.all()
    if status:
        qs = qs.filter(status=status)
    return set(qs.values_list("subject", flat=True))


def test_the_job_records_fields_from_metrics_outputs_and_samples_and_proposes_each_once(canary):
    send_runs(canary, {"transcript_excerpt": "a", "tool_calls": []}, metrics={"task_success_rate": 0.9})
    send_sample(canary)
    result = records.update_compliance_records(now=timezone.now() + LATER)
    assert result.records_created == [records.TELEMETRY_RECORD, records.VOICE_RECORD]
    fields = {f.subject: f for f in TelemetryField.objects.all()}
    assert set(fields) == {
        "run_metric:task_success_rate",
        "run_output:tool_calls",
        "run_output:transcript_excerpt",
        "monitoring_sample:interval_start",
        "monitoring_sample:interval_end",
        "monitoring_sample:latency_p95_ms",
        "monitoring_sample:requests",
    }
    first = fields["run_output:transcript_excerpt"]
    assert first.first_seen_at == first.last_seen_at <= timezone.now()
    telemetry = ProcessingRecord.objects.get(key=records.TELEMETRY_RECORD)
    assert set(telemetry.changes.values_list("subject", flat=True)) == set(fields)
    assert subjects(ChangeStatus.PENDING) == {*fields, "internal-a"}  # and the voice flow of the canary tenant
    assert AuditEvent.objects.filter(action="record.change_proposed").count() == 8

    # Again: nothing new. Then a new output field: one more proposal, and last-seen moves for the known one.
    again = records.update_compliance_records(now=timezone.now() + LATER)
    assert (again.proposed, again.fields_seen) == ([], 0)
    send_runs(canary, {"transcript_excerpt": "b", "caller_phone": "+1"}, metrics={"task_success_rate": 0.8})
    third = records.update_compliance_records(now=timezone.now() + LATER)
    assert third.proposed == ["run_output:caller_phone"] and third.fields_new == ["run_output:caller_phone"]
    first_again = TelemetryField.objects.get(source="run_output", name="transcript_excerpt")
    assert first_again.first_seen_at == first.first_seen_at and first_again.last_seen_at >= first.last_seen_at
    assert RecordChange.objects.filter(subject="run_output:caller_phone").count() == 1


def test_a_change_is_proposed_once_never_twice_even_after_a_rejection(canary, users):
    send_runs(canary, {"debug_blob": "x"})
    records.update_compliance_records(now=timezone.now() + LATER)
    change = RecordChange.objects.get(subject="run_output:debug_blob")
    records.change_decide(
        change=change, confirm=False, comment="Dropped by the harness", actor=users["compliance-reviewer"]
    )
    send_runs(canary, {"debug_blob": "y"})
    records.update_compliance_records(now=timezone.now() + LATER)
    assert RecordChange.objects.filter(subject="run_output:debug_blob").count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        RecordChange.objects.create(
            record=change.record, kind=change.kind, subject=change.subject, label="again", detected_at=timezone.now()
        )


def test_the_scan_is_incremental_and_only_moves_past_settled_rows(canary):
    send_runs(canary, {"a": 1})
    records.update_compliance_records()  # rows ingested a moment ago are not settled yet
    assert ScanCursor.objects.get(source="run_output").last_id == 0
    records.update_compliance_records(now=timezone.now() + LATER)
    from evaluations.models import RunOutput

    assert ScanCursor.objects.get(source="run_output").last_id == RunOutput.objects.latest("pk").pk
    # A row below the cursor is never read again (the scan starts after it).
    TelemetryField.objects.filter(name="a").delete()
    records.update_compliance_records(now=timezone.now() + LATER)
    assert not TelemetryField.objects.filter(name="a").exists()


def test_voice_transcription_flows_are_proposed_per_tenant_and_confirmed_into_the_record(canary, users):
    reviewer = users[Role.COMPLIANCE_REVIEWER]
    records.update_compliance_records()
    # Canary exposes voice insights to internal tenants with confirmed transcript ingestion: "Internal A".
    [change] = RecordChange.objects.filter(kind="voice_transcription_flow")
    assert (change.subject, change.label) == ("internal-a", f"Internal A (voice insights in {canary.slug})")
    with pytest.raises(records.InvalidRecord):
        records.change_decide(change=change, confirm=True, comment=" ", actor=reviewer)
    with pytest.raises(ActionNotAllowed):
        records.change_decide(change=change, confirm=True, comment="ok", actor=users[Role.AUDITOR])
    records.change_decide(change=change, confirm=True, comment="DPIA-14 covers it", actor=reviewer)
    record = ProcessingRecord.objects.get(key=records.VOICE_RECORD)
    assert record.voice_transcription_flows == ["internal-a"]
    with pytest.raises(records.ChangeAlreadyDecided):
        records.change_decide(change=change, confirm=False, comment="changed my mind", actor=reviewer)
    confirm = AuditEvent.objects.get(action="record.change_confirm")
    assert (confirm.actor_name, confirm.reason, confirm.after["status"]) == (
        "compliance-reviewer",
        "DPIA-14 covers it",
        "confirmed",
    )
    update = AuditEvent.objects.filter(action="processing_record.update").latest("sequence")
    assert update.after == {"voice_transcription_flows": ["internal-a"], "updated_at": update.after["updated_at"]}
    records.update_compliance_records()
    assert RecordChange.objects.filter(kind="voice_transcription_flow").count() == 1


def test_a_retention_period_that_differs_from_the_policy_is_flagged(canary, settings):
    records.update_compliance_records()
    assert records.update_compliance_records().mismatched == []
    settings.RETENTION_DAYS = 60
    result = records.update_compliance_records()
    assert result.mismatched == [records.TELEMETRY_RECORD, records.VOICE_RECORD]
    ProcessingRecord.objects.filter(key=records.VOICE_RECORD).update(retention_policy_applies=False)
    assert records.update_compliance_records().mismatched == [records.TELEMETRY_RECORD]


def test_record_rules(users):
    reviewer = users[Role.COMPLIANCE_REVIEWER]
    values = {
        "key": "support-tickets",
        "name": "Support tickets",
        "controller": "Us",
        "purpose": "Support",
        "data_subject_categories": "Customers",
        "personal_data_categories": "Names",
        "recipients": "Support",
        "transfers": "None",
        "retention_period_days": 365,
        "retention_policy_applies": False,
        "security_measures": "RBAC",
    }
    with pytest.raises(ActionNotAllowed):
        records.record_save(record=ProcessingRecord(), values=values, actor=users[Role.AUDITOR], reason="x")
    with pytest.raises(records.InvalidRecord, match="reason"):
        records.record_save(record=ProcessingRecord(), values=values, actor=reviewer, reason="")
    with pytest.raises(records.InvalidRecord, match="empty: purpose"):
        records.record_save(record=ProcessingRecord(), values={**values, "purpose": " "}, actor=reviewer, reason="x")
    record = records.record_save(record=ProcessingRecord(), values=values, actor=reviewer, reason="New", reviewed=True)
    assert record.last_reviewed_by_name == "compliance-reviewer"
    with pytest.raises(records.InvalidRecord, match="own key"):
        records.record_save(record=ProcessingRecord(), values=values, actor=reviewer, reason="x")
    edited = records.record_save(record=record, values={"retention_period_days": 400}, actor=reviewer, reason="Longer")
    assert edited.retention_period_days == 400
    entry = AuditEvent.objects.filter(action="processing_record.update").latest("sequence")
    assert (entry.before["retention_period_days"], entry.after["retention_period_days"], entry.reason) == (
        365,
        400,
        "Longer",
    )


def test_an_ingest_with_a_new_field_queues_the_job_once(canary, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        send_runs(canary, {"transcript_excerpt": "a"})
    [run] = JobRun.objects.filter(job=Job.UPDATE_COMPLIANCE_RECORDS)
    assert (run.trigger, run.status) == ("event", "succeeded")  # eager in tests: the worker's part ran
    assert run.requested_by_name.startswith("ingest by ")
    # Known fields only (the job saw them, settled or not): nothing queued.
    with django_capture_on_commit_callbacks(execute=True):
        send_runs(canary, {"transcript_excerpt": "b"})
    assert JobRun.objects.filter(job=Job.UPDATE_COMPLIANCE_RECORDS).count() == 1
    # Two ingests with new fields before a worker picks the job up: one queued run serves both.
    with django_capture_on_commit_callbacks(execute=True):
        send_runs(canary, {"tool_calls": []})
        send_sample(canary)
    assert JobRun.objects.filter(job=Job.UPDATE_COMPLIANCE_RECORDS).count() == 2
    assert TelemetryField.objects.filter(source="monitoring_sample").count() == 4
    assert TelemetryField.objects.filter(source="run_output", name="tool_calls").exists()


def test_the_command_runs_the_job(canary):
    import io

    out = io.StringIO()
    call_command("update_compliance_records", stdout=out)
    assert out.getvalue().startswith("0 telemetry field(s) seen since the last scan; 1 new pending change(s); created")
    run = JobRun.objects.get()
    assert (run.trigger, run.status) == ("command", "succeeded")
