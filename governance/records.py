"""Data-processing records (GDPR Art. 30) and the job that keeps them current (design section 5).

The job scans what was ingested since its last run: metric names reported by
runs, the top-level keys of raw outputs, and the fields of monitoring samples.
Each name is kept in ``TelemetryField`` with when it was first and last
ingested. It also lists the tenants with voice transcription exposed (the
``voice_insights`` flag enabled). Every field and tenant not yet proposed
becomes one pending ``RecordChange`` on the matching record ("telemetry fields",
"voice transcription flows"); a compliance reviewer confirms or rejects it with a
comment. A unique constraint on (record, kind, subject) means one proposal per
subject, ever.

The scan is incremental by primary key. Its cursor only moves past rows ingested
more than ``SETTLE`` ago, so a row whose transaction committed after a
higher-numbered one is still seen on the next run; rows scanned twice are
harmless (recording a field is an upsert). An ingest that brings a field the
inventory does not know queues the job on commit (``receivers.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from evaluations.models import METRIC_KEYS, EvaluationRun, MonitoringSample, RunOutput
from rollout.errors import DomainError
from rollout.history import actor_name, save_tracked
from rollout.models import FlagExposure, FlagKey, Tenant
from rollout.roles import require_perm
from rollout.routes import reserved_segments

from .jobs import Outcome
from .models import (
    ChangeKind,
    ChangeStatus,
    JobRun,
    ProcessingRecord,
    RecordChange,
    ScanCursor,
    TelemetryField,
    TelemetrySource,
)

# Rows ingested more recently than this may still have lower-numbered neighbours in flight.
SETTLE = dt.timedelta(minutes=15)
SAMPLE_FIELDS: tuple[str, ...] = ("interval_start", "interval_end", "latency_p95_ms", "requests")

TELEMETRY_RECORD = "evaluation-telemetry"
VOICE_RECORD = "voice-transcription"


class InvalidRecord(DomainError):
    code = "invalid-record"
    status = 422
    title = "The data-processing record is not valid"


class ChangeAlreadyDecided(DomainError):
    code = "change-already-decided"
    status = 409
    title = "The pending change was already decided"


def _defaults() -> dict[str, dict[str, Any]]:
    """The two records the job keeps current, as first laid down (reviewers edit them afterwards)."""
    days = settings.RETENTION_DAYS
    common = {
        "controller": "The operating company (controller); Data Protection Officer: dpo@example.com.",
        "recipients": "Internal: rollout admins, product/support/compliance/SRE leads, compliance reviewers, "
        "auditors. No external recipients.",
        "transfers": "None: data stay in the EU region of the evaluation cluster.",
        "retention_period_days": days,
        "retention_policy_applies": True,
        "security_measures": "Role-based access (login required, least-privilege groups); TLS in transit; "
        "encrypted storage; append-only, hash-chained audit ledger; raw outputs purged after the retention "
        "period by the daily retention job.",
    }
    return {
        TELEMETRY_RECORD: {
            **common,
            "name": "Evaluation harness telemetry",
            "purpose": "Compare the legacy single-agent pipeline with the ReAct + multi-agent stack during the "
            "rollout: evaluation deltas, rollback triggers, compliance audits (playbook sections 2, 4 and 5).",
            "data_subject_categories": "Customers' end users whose conversations are evaluated; support testers.",
            "personal_data_categories": "Conversation transcript excerpts, tool-call records and verdicts in raw "
            "evaluation outputs; aggregate run metrics and monitoring samples (no personal data).",
        },
        VOICE_RECORD: {
            **common,
            "name": "Voice transcription flows (voice insights)",
            "purpose": "Voice insights subagent: transcribe and analyse voice conversations for tenants whose "
            "transcript ingestion path is confirmed.",
            "data_subject_categories": "Callers of tenants with voice insights exposed.",
            "personal_data_categories": "Voice transcripts and excerpts derived from them.",
        },
    }


# --- Editing records --------------------------------------------------------------------------------------------------

EDITABLE_FIELDS: tuple[str, ...] = (
    "name",
    "controller",
    "purpose",
    "data_subject_categories",
    "personal_data_categories",
    "recipients",
    "transfers",
    "retention_period_days",
    "retention_policy_applies",
    "security_measures",
)


@transaction.atomic
def record_save(
    *, record: ProcessingRecord, values: dict[str, Any], actor: Any, reason: str, reviewed: bool = False
) -> ProcessingRecord:
    """Create or edit a record (compliance reviewers). ``reviewed`` stamps "last reviewed" with the actor and now."""
    creating = record.pk is None
    perm = "governance.add_processingrecord" if creating else "governance.change_processingrecord"
    require_perm(actor, perm, "Only compliance reviewers keep the data-processing records.")
    if not reason.strip():
        raise InvalidRecord("Saving a data-processing record needs a reason.", field="reason")
    unknown = set(values) - set(EDITABLE_FIELDS) - ({"key"} if creating else set())
    if unknown:
        raise InvalidRecord(f"Unknown fields: {', '.join(sorted(unknown))}.")
    if not creating:
        record = ProcessingRecord.objects.select_for_update().get(pk=record.pk)
    for name, value in values.items():
        setattr(record, name, value.strip() if isinstance(value, str) else value)
    required = [f for f in EDITABLE_FIELDS if isinstance(getattr(record, f), str) and not getattr(record, f)]
    if required:
        raise InvalidRecord(f"Art. 30 needs every field; empty: {', '.join(required)}.", field=required[0])
    if not record.retention_period_days or record.retention_period_days < 1:
        raise InvalidRecord("The retention period is at least one day.", field="retention_period_days")
    reserved = reserved_segments("compliance/records/")
    if creating and (
        not record.key or record.key in reserved or ProcessingRecord.objects.filter(key=record.key).exists()
    ):
        raise InvalidRecord("Each record needs its own key (not a word the addresses use, like “new”).", field="key")
    if reviewed:
        record.last_reviewed_at, record.last_reviewed_by_name = timezone.now(), actor_name(actor)
    action = "processing_record.create" if creating else "processing_record.update"
    return save_tracked(record, action=action, actor=actor, reason=reason.strip())


@transaction.atomic
def change_decide(*, change: RecordChange, confirm: bool, comment: str, actor: Any) -> RecordChange:
    """Confirm (the record then lists it) or reject a pending change, with a comment."""
    require_perm(
        actor, "governance.decide_recordchange", "Only compliance reviewers confirm or reject changes to the records."
    )
    if not comment.strip():
        raise InvalidRecord("Confirming or rejecting a change needs a comment.", field="comment")
    record = ProcessingRecord.objects.select_for_update().get(pk=change.record_id)
    change = RecordChange.objects.select_for_update().get(pk=change.pk)
    if change.status != ChangeStatus.PENDING:
        raise ChangeAlreadyDecided(f"This change was already {change.status} by {change.decided_by_name}.")
    change.status = ChangeStatus.CONFIRMED if confirm else ChangeStatus.REJECTED
    change.decided_at, change.decided_by_name, change.comment = timezone.now(), actor_name(actor), comment.strip()
    change.decided_by = actor if getattr(actor, "is_authenticated", False) else None
    save_tracked(
        change, action=f"record.change_{'confirm' if confirm else 'reject'}", actor=actor, reason=comment.strip()
    )
    if confirm:
        attr = "telemetry_fields" if change.kind == ChangeKind.TELEMETRY_FIELD else "voice_transcription_flows"
        listed = list(getattr(record, attr))
        if change.subject not in listed:
            setattr(record, attr, sorted([*listed, change.subject]))
            save_tracked(
                record,
                action="processing_record.update",
                actor=actor,
                reason=f"Confirmed {change.get_kind_display().lower()} {change.label}: {comment.strip()}",
            )
    return change


def retention_mismatch(record: ProcessingRecord) -> bool:
    return record.retention_policy_applies and record.retention_period_days != settings.RETENTION_DAYS


# --- The job ----------------------------------------------------------------------------------------------------------


@dataclass
class UpdateResult:
    records_created: list[str] = field(default_factory=list)
    fields_seen: int = 0
    fields_new: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)
    voice_tenants: int = 0
    mismatched: list[str] = field(default_factory=list)


def ensure_records(*, actor: Any = None) -> tuple[dict[str, ProcessingRecord], list[str]]:
    """The two records the job writes to, created from the defaults if missing."""
    found = {r.key: r for r in ProcessingRecord.objects.filter(key__in=[TELEMETRY_RECORD, VOICE_RECORD])}
    created = []
    for key, values in _defaults().items():
        if key in found:
            continue
        record = ProcessingRecord(key=key, **values)
        try:
            with transaction.atomic():
                save_tracked(
                    record, action="processing_record.create", actor=actor, reason="Created by the records job"
                )
        except IntegrityError:  # created concurrently
            record = ProcessingRecord.objects.get(key=key)
        else:
            created.append(key)
        found[key] = record
    return found, created


def _upsert_fields(source: str, seen: Iterable[tuple[str, dt.datetime, dt.datetime]]) -> list[str]:
    """Record names seen with their first and last ingest time; returns the names new to the inventory."""
    seen = list(seen)
    if not seen:
        return []
    known = {
        f.name: f
        for f in TelemetryField.objects.select_for_update().filter(source=source, name__in=[n for n, _, _ in seen])
    }
    new = []
    for name, first, last in seen:
        item = known.get(name)
        if item is None:
            TelemetryField.objects.create(source=source, name=name, first_seen_at=first, last_seen_at=last)
            new.append(f"{source}:{name}")
        elif first < item.first_seen_at or last > item.last_seen_at:
            item.first_seen_at, item.last_seen_at = min(first, item.first_seen_at), max(last, item.last_seen_at)
            item.save(update_fields=["first_seen_at", "last_seen_at"])
    return new


def _cursor(source: str) -> ScanCursor:
    cursor, _ = ScanCursor.objects.select_for_update().get_or_create(source=source)
    return cursor


def _advance(cursor: ScanCursor, settled_max: int | None) -> None:
    if settled_max and settled_max > cursor.last_id:
        cursor.last_id = settled_max
        cursor.save(update_fields=["last_id", "updated_at"])


def _scan_metrics(settled: dt.datetime) -> tuple[int, list[str]]:
    cursor = _cursor(TelemetrySource.RUN_METRIC)
    runs = EvaluationRun.objects.filter(pk__gt=cursor.last_id)
    aggregates: dict[str, Any] = {"settled_max": Max("pk", filter=Q(ingested_at__lte=settled))}
    for key in METRIC_KEYS:
        reported = Q(**{f"{key}__isnull": False})
        aggregates[f"{key}__first"] = Min("ingested_at", filter=reported)
        aggregates[f"{key}__last"] = Max("ingested_at", filter=reported)
    row = runs.aggregate(**aggregates)
    seen = [(k, row[f"{k}__first"], row[f"{k}__last"]) for k in METRIC_KEYS if row[f"{k}__first"] is not None]
    new = _upsert_fields(TelemetrySource.RUN_METRIC, seen)
    _advance(cursor, row["settled_max"])
    return len(seen), new


def _output_keys_postgres(after: int) -> list[tuple[str, dt.datetime, dt.datetime]]:
    output, run = RunOutput._meta.db_table, EvaluationRun._meta.db_table
    sql = (
        "SELECT k.key, MIN(r.ingested_at), MAX(r.ingested_at) "  # noqa: S608 - table names from the models
        f"FROM {output} o JOIN {run} r ON r.id = o.run_id "
        "CROSS JOIN LATERAL jsonb_object_keys(CASE WHEN jsonb_typeof(o.data) = 'object' THEN o.data "
        "ELSE '{}'::jsonb END) AS k(key) WHERE o.id > %s GROUP BY k.key"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [after])
        return [(name, first, last) for name, first, last in cursor.fetchall()]


def _output_keys_python(after: int) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """Portable (SQLite under ``make run``): walks the outputs in chunks."""
    seen: dict[str, list[dt.datetime]] = {}
    rows = RunOutput.objects.filter(pk__gt=after).values_list("data", "run__ingested_at").iterator(chunk_size=2000)
    for data, at in rows:
        if isinstance(data, dict):
            for key in data:
                span = seen.setdefault(key, [at, at])
                span[0], span[1] = min(span[0], at), max(span[1], at)
    return [(name, first, last) for name, (first, last) in seen.items()]


def _scan_outputs(settled: dt.datetime) -> tuple[int, list[str]]:
    cursor = _cursor(TelemetrySource.RUN_OUTPUT)
    scan = _output_keys_postgres if connection.vendor == "postgresql" else _output_keys_python
    seen = scan(cursor.last_id)
    new = _upsert_fields(TelemetrySource.RUN_OUTPUT, seen)
    settled_max = RunOutput.objects.filter(pk__gt=cursor.last_id, run__ingested_at__lte=settled).aggregate(m=Max("pk"))
    _advance(cursor, settled_max["m"])
    return len(seen), new


def _scan_samples(settled: dt.datetime) -> tuple[int, list[str]]:
    cursor = _cursor(TelemetrySource.MONITORING_SAMPLE)
    row = MonitoringSample.objects.filter(pk__gt=cursor.last_id).aggregate(
        n=Count("pk"),
        first=Min("ingested_at"),
        last=Max("ingested_at"),
        settled_max=Max("pk", filter=Q(ingested_at__lte=settled)),
    )
    seen = [(name, row["first"], row["last"]) for name in SAMPLE_FIELDS] if row["n"] else []
    new = _upsert_fields(TelemetrySource.MONITORING_SAMPLE, seen)
    _advance(cursor, row["settled_max"])
    return len(seen), new


def _propose(record: ProcessingRecord, kind: str, subject: str, label: str, detail: dict[str, Any]) -> bool:
    """One pending change; ``False`` if this subject was ever proposed (the unique constraint decides)."""
    change = RecordChange(
        record=record, kind=kind, subject=subject, label=label, detail=detail, detected_at=timezone.now()
    )
    try:
        with transaction.atomic():
            save_tracked(
                change, action="record.change_proposed", actor=None, reason=f"Found by the records job: {label}"
            )
    except IntegrityError:
        return False
    return True


def voice_tenants() -> list[dict[str, Any]]:
    """Tenants with ``voice_insights`` exposed in some rollout, with the rollouts."""
    rows = (
        FlagExposure.objects.filter(flag__key=FlagKey.VOICE_INSIGHTS, enabled=True)
        .values_list("tenant_id", "flag__rollout__slug")
        .order_by("tenant_id", "flag__rollout__slug")
    )
    by_tenant: dict[int, list[str]] = {}
    for tenant_id, slug in rows:
        by_tenant.setdefault(tenant_id, []).append(slug)
    tenants = Tenant.objects.in_bulk(list(by_tenant))
    return [
        {"slug": tenants[t].slug, "name": tenants[t].name, "rollouts": slugs}
        for t, slugs in sorted(by_tenant.items(), key=lambda item: tenants[item[0]].slug)
    ]


@transaction.atomic
def update_compliance_records(*, now: dt.datetime | None = None) -> UpdateResult:
    """Scan what was ingested since the last run and propose what the records do not list yet. Idempotent."""
    now = now or timezone.now()
    settled = now - SETTLE
    result = UpdateResult()
    records, result.records_created = ensure_records()
    for scan in (_scan_metrics, _scan_outputs, _scan_samples):
        count, new = scan(settled)
        result.fields_seen += count
        result.fields_new += new

    telemetry = records[TELEMETRY_RECORD]
    proposed = set(
        RecordChange.objects.filter(record=telemetry, kind=ChangeKind.TELEMETRY_FIELD).values_list("subject", flat=True)
    )
    for item in TelemetryField.objects.order_by("source", "name"):
        if item.subject in proposed:
            continue
        label = f"{item.name} ({item.get_source_display().lower()})"
        detail = {
            "source": item.source,
            "name": item.name,
            "first_seen_at": item.first_seen_at.isoformat(),
            "last_seen_at": item.last_seen_at.isoformat(),
        }
        if _propose(telemetry, ChangeKind.TELEMETRY_FIELD, item.subject, label, detail):
            result.proposed.append(item.subject)

    voice = records[VOICE_RECORD]
    proposed = set(
        RecordChange.objects.filter(record=voice, kind=ChangeKind.VOICE_TRANSCRIPTION_FLOW).values_list(
            "subject", flat=True
        )
    )
    tenants = voice_tenants()
    result.voice_tenants = len(tenants)
    for tenant in tenants:
        if tenant["slug"] in proposed:
            continue
        label = f"{tenant['name']} (voice insights in {', '.join(tenant['rollouts'])})"
        if _propose(voice, ChangeKind.VOICE_TRANSCRIPTION_FLOW, tenant["slug"], label, tenant):
            result.proposed.append(f"voice:{tenant['slug']}")

    result.mismatched = [
        r.key
        for r in ProcessingRecord.objects.filter(retention_policy_applies=True).exclude(
            retention_period_days=settings.RETENTION_DAYS
        )
    ]
    return result


def run_update(run: JobRun) -> Outcome:
    result = update_compliance_records()
    parts = [
        f"{result.fields_seen} telemetry field(s) seen since the last scan",
        f"{len(result.proposed)} new pending change(s)",
    ]
    if result.records_created:
        parts.append(f"created records {', '.join(result.records_created)}")
    if result.mismatched:
        parts.append(f"retention period differs from the policy on {', '.join(result.mismatched)}")
    return Outcome(
        summary="; ".join(parts) + ".",
        result={
            "fields_seen": result.fields_seen,
            "fields_new": result.fields_new,
            "proposed": result.proposed,
            "voice_tenants": result.voice_tenants,
            "records_created": result.records_created,
            "retention_mismatch": result.mismatched,
        },
    )


# --- After an ingest --------------------------------------------------------------------------------------------------


def unknown_fields(source: str, names: Iterable[str]) -> list[str]:
    names = sorted(set(names))
    if not names:
        return []
    known = set(TelemetryField.objects.filter(source=source, name__in=names).values_list("name", flat=True))
    return [n for n in names if n not in known]


def reported_metrics(run_ids: list[int]) -> list[str]:
    """The catalogue metrics at least one of these runs reported (one query)."""
    if not run_ids:
        return []
    counts = EvaluationRun.objects.filter(pk__in=run_ids).aggregate(**{k: Count(k) for k in METRIC_KEYS})
    return [k for k in METRIC_KEYS if counts[k]]
