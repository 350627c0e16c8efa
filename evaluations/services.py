"""Every write of the evaluations app: ingestion, trigger evaluation, success criteria, API tokens.

Runs, outputs and samples are bulk data, not history-tracked: they are
validated whole, then bulk-inserted in one transaction (all or nothing).
Tracked models (success criteria, trigger firings, tokens) are saved one by
one with ``save_tracked``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from rollout import outbox
from rollout.history import delete_tracked, save_tracked
from rollout.models import (
    PHASE_SEQUENCE,
    Cohort,
    IncidentKind,
    Phase,
    PhasePeriod,
    PhaseStatus,
    Rollout,
    RolloutStatus,
)
from rollout.roles import require_perm
from rollout.services import rollout_rollback
from rollout.signals import plan_changed

from . import signals, summaries
from .errors import (
    InvalidCriteria,
    InvalidToken,
    OutsidePhase,
    PayloadInvalid,
    ReferenceNotFound,
    RunConflict,
    SampleConflict,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
)
from .models import (
    METRIC_KEYS,
    ApiScope,
    ApiToken,
    Comparator,
    EvaluationRun,
    MonitoringSample,
    RunOutput,
    SuccessCriterion,
    TriggerFiring,
)
from .schemas import EvaluationRunBatchSerializer, MonitoringSampleBatchSerializer, error_pointers, fast_validated_runs

EVALUATE_TRIGGERS_TASK = "evaluations.tasks.evaluate_triggers"

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    created: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": len(self.created),
            "duplicates": len(self.duplicates),
            "created_ids": self.created,
            "duplicate_ids": self.duplicates,
        }


def _canonical_hash(obj: dict[str, Any]) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def _validate(serializer_class, payload: Any, key: str) -> list[dict]:
    if not isinstance(payload, dict):
        raise PayloadInvalid(
            f"The body must be a JSON object with a {key!r} list.",
            errors=[{"pointer": "", "message": "Not an object."}],
        )
    if serializer_class is EvaluationRunBatchSerializer:
        fast = fast_validated_runs(payload)
        if fast is not None:
            return fast
    serializer = serializer_class(data=payload)
    if not serializer.is_valid():
        errors = error_pointers(serializer.errors)
        raise PayloadInvalid(f"{len(errors)} invalid field(s); nothing was stored.", errors=errors)
    return serializer.validated_data[key]


@dataclass
class Resolved:
    """What a batch names, read in three queries: rollouts by slug, phases by (rollout, kind), periods by phase."""

    rollouts: dict[str, Rollout]
    phases: dict[tuple[int, str], Phase]
    periods: dict[int, list[PhasePeriod]]

    def period_of(self, phase: Phase, moment: dt.datetime) -> PhasePeriod | None:
        return next((p for p in self.periods.get(phase.pk, []) if p.contains(moment)), None)


def _utc(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def active_text(phase: Phase, periods: Sequence[PhasePeriod]) -> str:
    """When a phase was active, in words: "active from A to B and from C (still active)"."""
    name = phase.get_kind_display()
    if not periods:
        return f"The {name} phase has not been active yet."
    parts = [
        f"from {_utc(p.entered_at)} to {_utc(p.exited_at)}"
        if p.exited_at
        else f"from {_utc(p.entered_at)} (still active)"
        for p in periods
    ]
    return f"The {name} phase was active " + " and ".join(parts) + "."


def _resolve_phases(items: Sequence[dict], key: str, end_key: str) -> Resolved:
    """Rollouts, phases and their activity periods named in a batch, in three queries.

    An unknown rollout is a 404. An item whose ``end_key`` lies outside every activity period of its phase
    (a phase never entered has none) is a 422 pointing at ``end_key`` and saying when the phase was active.
    """
    slugs = {item["rollout"] for item in items}
    rollouts = {r.slug: r for r in Rollout.objects.filter(slug__in=slugs)}
    phases = {(p.rollout_id, p.kind): p for p in Phase.objects.filter(rollout__in=rollouts.values())}
    periods: dict[int, list[PhasePeriod]] = defaultdict(list)
    for period in PhasePeriod.objects.filter(phase__rollout__in=rollouts.values()).order_by("phase_id", "ordinal"):
        periods[period.phase_id].append(period)
    resolved = Resolved(rollouts=rollouts, phases=phases, periods=periods)
    unknown, outside = [], []
    for index, item in enumerate(items):
        rollout = rollouts.get(item["rollout"])
        if rollout is None:
            unknown.append({"pointer": f"/{key}/{index}/rollout", "message": f"Unknown rollout {item['rollout']!r}."})
            continue
        phase = phases[(rollout.pk, item["phase"])]
        if resolved.period_of(phase, item[end_key]) is None:
            outside.append(
                {
                    "pointer": f"/{key}/{index}/{end_key}",
                    "message": f"{end_key} {_utc(item[end_key])} is outside the phase's activity. "
                    + active_text(phase, periods.get(phase.pk, [])),
                }
            )
    # Well-formed data about what is not there: a 404, whatever else is wrong with the batch.
    if unknown:
        raise ReferenceNotFound(f"{len(unknown)} unknown rollout(s); nothing was stored.", errors=unknown)
    if outside:
        raise OutsidePhase(
            f"{len(outside)} item(s) ended while their phase was not active; nothing was stored.", errors=outside
        )
    return resolved


def _exposed_cohorts(cohorts: Sequence[Cohort], phase_kind: str) -> set[str]:
    """Cohort kinds a phase exposes: those whose entry phase has come by ``phase_kind``."""
    reached = set(PHASE_SEQUENCE[: PHASE_SEQUENCE.index(phase_kind) + 1])
    return {c.kind for c in cohorts if c.entry_phase in reached}


def _run_content(item: dict) -> dict[str, Any]:
    """The run as it is compared for idempotency: normalised, so equal content hashes equal."""
    return {
        "run_id": item["run_id"],
        "rollout": item["rollout"],
        "phase": item["phase"],
        "arm": item["arm"],
        "cohort": item.get("cohort"),
        "started_at": _iso(item["started_at"]),
        "finished_at": _iso(item["finished_at"]),
        "conversations": item["conversations"],
        "guardrail_compensations": item["guardrail_compensations"],
        "metrics": {k: v for k, v in sorted((item.get("metrics") or {}).items()) if v is not None},
        "harness_version": item["harness_version"],
        "outputs": item.get("outputs") or [],
    }


def ingest_runs(*, payload: Any, actor: Any = None) -> IngestResult:
    """Store a batch of harness runs (``{"runs": [...]}``), all or nothing.

    Idempotent on ``run_id``: a run sent again with the same content is a
    duplicate and changes nothing; with other content it is a 409 and nothing
    of the batch is stored. In its transaction ``signals.runs_stored`` (the
    ledger entry) is sent and the trigger evaluation written to the outbox;
    after commit ``signals.runs_ingested`` is sent per rollout.
    """
    items = _validate(EvaluationRunBatchSerializer, payload, "runs")
    resolved = _resolve_phases(items, "runs", "finished_at")
    rollouts, phases = resolved.rollouts, resolved.phases
    cohort_rows = list(Cohort.objects.filter(rollout__in=rollouts.values()))
    cohorts = {(c.rollout_id, c.kind): c for c in cohort_rows}
    wrong_cohort = []
    for index, item in enumerate(items):
        cohort = item.get("cohort")
        if not cohort:
            continue
        rollout = rollouts[item["rollout"]]
        exposed = _exposed_cohorts([c for c in cohort_rows if c.rollout_id == rollout.pk], item["phase"])
        if cohort not in exposed:
            phase = phases[(rollout.pk, item["phase"])]
            wrong_cohort.append(
                {
                    "pointer": f"/runs/{index}/cohort",
                    "message": f"The {phase.get_kind_display()} phase does not expose the {cohort} cohort; it exposes "
                    + (", ".join(sorted(exposed)) if exposed else "none")
                    + ".",
                }
            )
    if wrong_cohort:
        raise OutsidePhase(
            f"{len(wrong_cohort)} run(s) name a cohort their phase does not expose; nothing was stored.",
            errors=wrong_cohort,
        )

    hashes: dict[str, str] = {}
    first_index: dict[str, int] = {}
    batch_duplicates: list[str] = []
    conflicts: list[dict[str, str]] = []
    new_items: list[tuple[int, dict]] = []
    for index, item in enumerate(items):
        digest = _canonical_hash(_run_content(item))
        run_id = item["run_id"]
        if run_id in hashes:
            if hashes[run_id] != digest:
                conflicts.append(
                    {
                        "pointer": f"/runs/{index}/run_id",
                        "message": f"{run_id!r} appears earlier in this request (/runs/{first_index[run_id]}) "
                        "with different content.",
                    }
                )
            else:
                batch_duplicates.append(run_id)
            continue
        hashes[run_id], first_index[run_id] = digest, index
        new_items.append((index, item))
    if conflicts:
        raise RunConflict(f"{len(conflicts)} run(s) conflict; nothing was stored.", errors=conflicts)

    for attempt in range(3):
        try:
            return _store_runs(new_items, hashes, batch_duplicates, resolved, cohorts, actor)
        except IntegrityError:
            # Another request inserted one of these run_ids between our check and our insert:
            # look again, now that its rows are committed.
            if attempt == 2:
                raise
            log.info("run_id race on ingest; retrying", exc_info=True)
    raise AssertionError("unreachable")


@transaction.atomic
def _store_runs(new_items, hashes, batch_duplicates, resolved, cohorts, actor) -> IngestResult:
    rollouts, phases = resolved.rollouts, resolved.phases
    result = IngestResult(duplicates=list(batch_duplicates))
    existing = dict(EvaluationRun.objects.filter(run_id__in=list(hashes)).values_list("run_id", "content_hash"))
    conflicts = [
        {"pointer": f"/runs/{index}/run_id", "message": f"{item['run_id']!r} was already ingested with other content."}
        for index, item in new_items
        if item["run_id"] in existing and existing[item["run_id"]] != hashes[item["run_id"]]
    ]
    if conflicts:
        raise RunConflict(f"{len(conflicts)} run(s) conflict; nothing was stored.", errors=conflicts)
    now = timezone.now()
    rows: list[dict[str, Any]] = []
    outputs_of: list[list[dict]] = []
    for _index, item in new_items:
        if item["run_id"] in existing:
            result.duplicates.append(item["run_id"])
            continue
        rollout = rollouts[item["rollout"]]
        metrics = item.get("metrics") or {}
        outputs = item.get("outputs") or []
        phase = phases[(rollout.pk, item["phase"])]
        period = resolved.period_of(phase, item["finished_at"])
        cohort = cohorts.get((rollout.pk, item.get("cohort")))
        rows.append(
            {
                "run_id": item["run_id"],
                "rollout_id": rollout.pk,
                "phase_id": phase.pk,
                "arm": item["arm"],
                "cohort_id": cohort.pk if cohort else None,
                "started_at": item["started_at"],
                "finished_at": item["finished_at"],
                "conversations": item["conversations"],
                "guardrail_compensations": item["guardrail_compensations"],
                "harness_version": item["harness_version"],
                **{key: metrics.get(key) for key in METRIC_KEYS},
                "content_hash": hashes[item["run_id"]],
                "output_count": len(outputs),
                "ingested_at": now,
                "late": period is not None and period.exited_at is not None,
            }
        )
        outputs_of.append(outputs)
    pks = _insert_runs(rows)
    summaries.add_rows(
        (r["rollout_id"], r["phase_id"], r["arm"], r["finished_at"], [r[key] for key in METRIC_KEYS]) for r in rows
    )
    _insert_outputs(
        [
            (
                pk,
                output["conversation_id"],
                {k: v for k, v in output.items() if k != "conversation_id"},
                row["finished_at"],
            )
            for pk, row, outputs in zip(pks, rows, outputs_of, strict=True)
            for output in outputs
        ]
    )
    result.created = [row["run_id"] for row in rows]

    by_rollout: dict[int, list[int]] = defaultdict(list)
    fields_by_rollout: dict[int, set[str]] = defaultdict(set)
    for pk, row, outputs in zip(pks, rows, outputs_of, strict=True):
        by_rollout[row["rollout_id"]].append(pk)
        for output in outputs:
            fields_by_rollout[row["rollout_id"]].update(k for k in output if k != "conversation_id")
    for rollout_id, run_pks in by_rollout.items():
        _after_commit_runs(rollout_id, run_pks, sorted(fields_by_rollout[rollout_id]), actor)
    return result


# The run columns COPY writes, in order (``outputs_purged_at`` is left NULL; the id comes from the sequence).
RUN_COPY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "rollout_id",
    "phase_id",
    "arm",
    "cohort_id",
    "started_at",
    "finished_at",
    "conversations",
    "guardrail_compensations",
    "harness_version",
    *METRIC_KEYS,
    "content_hash",
    "output_count",
    "ingested_at",
    "late",
)


def _insert_runs(rows: list[dict[str, Any]]) -> list[int]:
    """Insert runs in bulk; returns their ids in order. On PostgreSQL: ids reserved from the sequence, then one
    COPY (several times faster than a multi-row INSERT, and no model instance per run)."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        runs = [EvaluationRun(**row) for row in rows]
        EvaluationRun.objects.bulk_create(runs, batch_size=500)
        return [run.pk for run in runs]
    table = EvaluationRun._meta.db_table
    columns = ", ".join(connection.ops.quote_name(c) for c in ("id", *RUN_COPY_COLUMNS))
    with connection.cursor() as cursor, connection.wrap_database_errors:
        raw = cursor.cursor
        raw.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, len(rows)])
        pks = sorted(r[0] for r in raw.fetchall())
        with raw.copy(f"COPY {connection.ops.quote_name(table)} ({columns}) FROM STDIN") as copy:
            for pk, row in zip(pks, rows, strict=True):
                copy.write_row([pk, *(row[c] for c in RUN_COPY_COLUMNS)])
    return pks


# What ``json.dumps(data, ensure_ascii=False)`` gives, without building an encoder per output.
_OUTPUT_JSON = json.JSONEncoder(ensure_ascii=False)
# COPY's text format: a backslash, a tab, a newline or a carriage return in a value is written escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _insert_outputs(rows: list[tuple[int, str, dict, dt.datetime]]) -> None:
    """Insert raw outputs in bulk: on PostgreSQL with one COPY (psycopg's ``cursor.copy``, in the ingest's
    transaction), about three times faster than an ``INSERT ... SELECT FROM unnest(...)`` of the same rows. The
    COPY text is built here, one string for all rows: psycopg's per-row ``write_row`` (pure Python without its C
    extension) cost 20 ms a 5,000-output request."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        RunOutput.objects.bulk_create(
            [RunOutput(run_id=r, conversation_id=c, data=d, run_finished_at=f) for r, c, d, f in rows], batch_size=2000
        )
        return
    table = connection.ops.quote_name(RunOutput._meta.db_table)
    dumps = _OUTPUT_JSON.encode
    moments: dict[dt.datetime, str] = {}  # a run's outputs share its finished_at; isoformat() is slow
    lines = [
        f"{run_pk}\t{_copy_text(conversation_id)}\t{_copy_text(dumps(data))}\t"
        f"{moments.get(finished_at) or moments.setdefault(finished_at, finished_at.isoformat())}\n"
        for run_pk, conversation_id, data, finished_at in rows
    ]
    sql = f"COPY {table} (run_id, conversation_id, data, run_finished_at) FROM STDIN"
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
        copy.write("".join(lines))


def _after_commit_runs(rollout_id: int, run_ids: list[int], fields: list[str], actor: Any) -> None:
    def send() -> None:
        signals.runs_ingested.send(
            sender=EvaluationRun, rollout_id=rollout_id, run_ids=run_ids, telemetry_fields=fields, actor=actor
        )

    # In the ingest's transaction: its ledger entry commits with the runs (a process killed right after the
    # commit cannot leave runs without one), and the evaluation is sent even if the broker is down at commit time.
    signals.runs_stored.send(sender=EvaluationRun, rollout_id=rollout_id, run_ids=run_ids, actor=actor)
    transaction.on_commit(send)
    outbox.enqueue(EVALUATE_TRIGGERS_TASK, args=[rollout_id])


def ingest_samples(*, payload: Any, actor: Any = None) -> IngestResult:
    """Store a batch of monitoring intervals (``{"samples": [...]}``), all or nothing.

    Idempotent on (rollout, phase, interval_start): the same interval again is a
    duplicate; with other values it is a 409.
    """
    items = _validate(MonitoringSampleBatchSerializer, payload, "samples")
    resolved = _resolve_phases(items, "samples", "interval_end")
    rollouts, phases = resolved.rollouts, resolved.phases

    def key_of(item: dict) -> tuple[int, dt.datetime]:
        return phases[(rollouts[item["rollout"]].pk, item["phase"])].pk, item["interval_start"]

    def values_of(end: dt.datetime, latency: float, requests: int) -> tuple:
        return _iso(end), float(latency), int(requests)

    seen: dict[tuple, tuple] = {}
    conflicts, fresh, result = [], [], IngestResult()
    for index, item in enumerate(items):
        key, values = key_of(item), values_of(item["interval_end"], item["latency_p95_ms"], item["requests"])
        label = f"{item['rollout']}/{item['phase']}/{_iso(item['interval_start'])}"
        if key in seen:
            if seen[key] != values:
                conflicts.append({"pointer": f"/samples/{index}", "message": f"{label} appears twice, differently."})
            else:
                result.duplicates.append(label)
            continue
        seen[key] = values
        fresh.append((index, item, key, values, label))
    if conflicts:
        raise SampleConflict(f"{len(conflicts)} interval(s) conflict; nothing was stored.", errors=conflicts)

    with transaction.atomic():
        phase_ids = {key[0] for key in seen}
        starts = {key[1] for key in seen}
        existing = {
            (s.phase_id, s.interval_start): values_of(s.interval_end, s.latency_p95_ms, s.requests)
            for s in MonitoringSample.objects.filter(phase_id__in=phase_ids, interval_start__in=starts)
        }
        conflicts = [
            {"pointer": f"/samples/{index}", "message": f"{label} was already ingested with other values."}
            for index, _item, key, values, label in fresh
            if key in existing and existing[key] != values
        ]
        if conflicts:
            raise SampleConflict(f"{len(conflicts)} interval(s) conflict; nothing was stored.", errors=conflicts)
        samples = []
        for _index, item, key, _values, label in fresh:
            if key in existing:
                result.duplicates.append(label)
                continue
            rollout = rollouts[item["rollout"]]
            samples.append(
                MonitoringSample(
                    rollout=rollout,
                    phase_id=key[0],
                    interval_start=item["interval_start"],
                    interval_end=item["interval_end"],
                    latency_p95_ms=item["latency_p95_ms"],
                    requests=item["requests"],
                )
            )
            result.created.append(label)
        MonitoringSample.objects.bulk_create(samples, batch_size=1000)
        by_rollout: dict[int, list[int]] = defaultdict(list)
        for sample in samples:
            by_rollout[sample.rollout_id].append(sample.pk)
        for rollout_id, sample_ids in by_rollout.items():
            _after_commit_samples(rollout_id, sample_ids, actor)
    return result


def _after_commit_samples(rollout_id: int, sample_ids: list[int], actor: Any) -> None:
    def send() -> None:
        signals.samples_ingested.send(
            sender=MonitoringSample, rollout_id=rollout_id, sample_ids=sample_ids, actor=actor
        )

    signals.samples_stored.send(sender=MonitoringSample, rollout_id=rollout_id, sample_ids=sample_ids, actor=actor)
    transaction.on_commit(send)
    outbox.enqueue(EVALUATE_TRIGGERS_TASK, args=[rollout_id])


# --- Rollback triggers ---------------------------------------------------------------


@transaction.atomic
def evaluate_triggers(*, rollout_id: int) -> TriggerFiring | None:
    """Fire the first trigger whose streak reached its threshold in the active phase and has not fired yet.

    Safe to run twice and concurrently: the rollout row is locked, and a firing
    is unique on the run or interval at which its streak reached the threshold.
    Firing rolls the phase back through ``rollout.services.rollout_rollback``.
    """
    from .selectors import pending_firings

    rollout = Rollout.objects.select_for_update().filter(pk=rollout_id).first()
    if rollout is None or rollout.status != RolloutStatus.IN_PROGRESS:
        return None
    phase = rollout.phases.filter(status=PhaseStatus.ACTIVE).first()
    if phase is None:
        return None
    candidates = pending_firings(rollout, phase)
    if not candidates:
        return None
    # The oldest streak fires; it rolls the phase back, so nothing else can fire in it.
    candidate = candidates[0]
    now = timezone.now()
    firing = save_tracked(
        TriggerFiring(
            rollout=rollout,
            phase=phase,
            trigger=candidate.trigger,
            run_id=candidate.run_pk,
            sample_id=candidate.sample_pk,
            streak=len(candidate.evidence),
            evidence=candidate.evidence,
            fired_at=now,
        ),
        actor=None,
        reason=candidate.reason,
    )
    incident = rollout_rollback(
        rollout=rollout,
        actor=None,
        reason=candidate.reason,
        kind=IncidentKind.AUTOMATIC,
        trigger=candidate.trigger,
        evidence=candidate.evidence,
    )
    firing.incident = incident
    save_tracked(firing, actor=None, reason="Rollback incident opened")
    firing_id, incident_id = firing.pk, incident.pk
    transaction.on_commit(
        lambda: signals.trigger_fired.send(sender=TriggerFiring, firing_id=firing_id, incident_id=incident_id)
    )
    return firing


# --- Success criteria ------------------------------------------------------------------


@dataclass(frozen=True)
class CriterionSpec:
    metric: str
    comparator: str
    threshold: float


@transaction.atomic
def success_criteria_replace(
    *, rollout: Rollout, criteria: Sequence[CriterionSpec], actor: Any, reason: str
) -> list[SuccessCriterion]:
    """Set the rollout's success criteria (one per metric at most). A change is a change of plan."""
    require_perm(actor, "evaluations.change_successcriterion")
    if not reason.strip():
        raise InvalidCriteria("Changing the success criteria needs a reason.", field="reason")
    if not criteria:
        raise InvalidCriteria("Keep at least one success criterion.")
    wanted: dict[str, CriterionSpec] = {}
    for spec in criteria:
        if spec.metric not in METRIC_KEYS:
            raise InvalidCriteria(f"Unknown metric {spec.metric!r}.", field="metric")
        if spec.comparator not in Comparator.values:
            raise InvalidCriteria(f"Unknown comparator {spec.comparator!r}.", field="comparator")
        if spec.metric in wanted:
            raise InvalidCriteria(f"{spec.metric} has two criteria; keep one.", field="metric")
        wanted[spec.metric] = spec
    rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
    if rollout.is_closed:
        raise InvalidCriteria("A completed or cancelled rollout's success criteria cannot change.")
    current = {c.metric: c for c in rollout.success_criteria.all()}
    changed = False
    for metric, criterion in current.items():
        if metric not in wanted:
            delete_tracked(criterion, actor=actor, reason=reason)
            changed = True
    for metric, spec in wanted.items():
        criterion = current.get(metric) or SuccessCriterion(rollout=rollout, metric=metric)
        if criterion.pk and (criterion.comparator, criterion.threshold) == (spec.comparator, spec.threshold):
            continue
        criterion.comparator, criterion.threshold = spec.comparator, float(spec.threshold)
        save_tracked(criterion, actor=actor, reason=reason)
        changed = True
    if changed:
        plan_changed.send(sender=Rollout, rollout=rollout, actor=actor, reason=reason)
    return list(rollout.success_criteria.order_by("id"))


# --- API tokens ------------------------------------------------------------------------

TOKEN_PREFIX = "rgd_"  # noqa: S105 - a prefix, not a secret
# Writing last_used_at on every request would make each API call a write; once a minute is enough.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_token_create(
    *, name: str, scopes: Sequence[str], actor: Any, expires_in_days: int | None = None, reason: str = ""
) -> tuple[ApiToken, str]:
    """Create a token; returns it with the raw secret, which is never stored and cannot be shown again."""
    name = (name or "").strip()
    if not name:
        raise InvalidToken("A token needs a name.", field="name")
    scopes = sorted(set(scopes))
    if not scopes or any(s not in ApiScope.values for s in scopes):
        raise InvalidToken(f"Scopes must be among: {', '.join(ApiScope.values)}.", field="scopes")
    if expires_in_days is not None and expires_in_days < 1:
        raise InvalidToken("Expiry must be at least one day away.", field="expires_in_days")
    if ApiToken.objects.filter(name=name).exists():
        raise InvalidToken(f"A token named {name!r} exists.", field="name")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name,
        prefix=raw[: len(TOKEN_PREFIX) + 6],
        token_hash=hash_token(raw),
        scopes=scopes,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        expires_at=timezone.now() + dt.timedelta(days=expires_in_days) if expires_in_days else None,
    )
    save_tracked(token, actor=actor, reason=reason or f"API token {name!r} created with scopes {', '.join(scopes)}")
    return token, raw


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor: Any, reason: str = "") -> ApiToken:
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        raise InvalidToken(f"{token.name!r} is already revoked.")
    token.revoked_at = timezone.now()
    token.revoked_by = actor if getattr(actor, "is_authenticated", False) else None
    save_tracked(token, actor=actor, reason=reason or f"API token {token.name!r} revoked")
    return token


def api_token_authenticate(raw: str) -> ApiToken:
    """The token a bearer string stands for, or a named 401 error; records the last use."""
    token = ApiToken.objects.filter(token_hash=hash_token(raw)).first() if raw else None
    if token is None:
        raise TokenInvalid("The API token is not valid.")
    now = timezone.now()
    if token.revoked_at is not None:
        raise TokenRevoked("The API token was revoked.")
    if token.expires_at is not None and token.expires_at <= now:
        raise TokenExpired("The API token has expired.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # A plain UPDATE: last use is bookkeeping, not a change worth a history record.
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
