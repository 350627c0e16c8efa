"""``manage.py seed_bench``: a year's worth of data, loaded with COPY and set-based SQL (PostgreSQL only).

The data is what the product would hold after ingesting it the normal way:
runs carry the content hash ingestion computes (sending one again is a
duplicate, not a conflict), outputs carry their run's ``finished_at``, run
``output_count`` matches, the per-day run summaries the deltas page reads are
rebuilt from the raw rows, and the ledger entries form a valid hash chain
continuing the existing one. Runs are spread over the demo rollouts' started
phases, both arms, and ``RETENTION_DAYS / (1 - expired_fraction)`` days ending
now, so ``expired_fraction`` of the outputs are past retention.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from evaluations import summaries
from evaluations.demo import CONVERSATIONS, PROFILES
from evaluations.models import METRIC_KEYS, EvaluationRun, RunOutput
from evaluations.services import _canonical_hash, _exposed_cohorts, _run_content
from rollout.demo import MAIN_SLUG, SECOND_SLUG
from rollout.models import Cohort, Phase, PhasePeriod, Rollout

from . import ledger
from .models import AuditEvent

EXCERPT = "User: I was charged twice. Assistant: I found both charges and refunded one."
LEDGER_ACTIONS = (
    ("evaluations.runs_ingested", "evaluations.evaluationrun", "500 evaluation runs", "Ingested"),
    ("update", "rollout.flagexposure", "react_loop for tenant: on", "Transition request into Canary"),
    ("update", "rollout.checklistitem", "Readiness item ticked", "Evidence attached"),
    ("create", "rollout.phasefeedback", "Feedback on canary", ""),
    ("auth.permission_denied", "http.request", "GET /compliance/", "Permission denied"),
    ("evaluations.samples_ingested", "evaluations.monitoringsample", "48 monitoring samples", "Ingested"),
)


@dataclass
class SeedBenchResult:
    runs: int = 0
    outputs: int = 0
    ledger: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _timed(result: SeedBenchResult, name: str, fn: Callable[[], int]) -> int:
    started = time.perf_counter()
    count = fn()
    result.seconds[name] = round(time.perf_counter() - started, 2)
    return count


def seed_bench(
    *, runs: int, ledger_entries: int, outputs: int, expired_fraction: float = 0.25, seed: int = 1
) -> SeedBenchResult:
    if connection.vendor != "postgresql":
        raise ValueError("seed_bench needs PostgreSQL (COPY); set DATABASE_URL to a PostgreSQL database.")
    if not 0 <= expired_fraction < 1:
        raise ValueError("--expired-fraction must be in [0, 1).")
    rng = random.Random(seed)
    now = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=10)
    span = dt.timedelta(days=settings.RETENTION_DAYS / (1 - expired_fraction))
    result = SeedBenchResult()
    # The ledger's past comes before the demo's own entries when the ledger is empty, so time never runs backwards.
    result.ledger = _timed(result, "ledger", lambda: _ledger(rng, ledger_entries, now - span, now))
    if not Rollout.objects.filter(slug=MAIN_SLUG).exists():
        _timed(result, "seed_demo", lambda: call_command("seed_demo", stdout=io.StringIO()) or 0)
    stamp = time.time_ns()
    result.runs = _timed(result, "runs", lambda: _runs(rng, runs, outputs, stamp, now - span, now))
    result.outputs = _timed(result, "outputs", lambda: _outputs(stamp))
    _timed(result, "summaries", summaries.rebuild)
    _timed(result, "analyze", _analyze)
    return result


def _ledger(rng: random.Random, count: int, start: dt.datetime, end: dt.datetime) -> int:
    if count <= 0:
        return 0
    with transaction.atomic():
        ledger.lock_ledger()
        sequence, prev_hash, last_at = ledger.chain._last()
        if last_at is not None:
            start = max(start, last_at)
            end = max(end, start)
        step = (end - start) / count
        columns = ledger.RECORD_FIELDS
        sql = f"COPY {AuditEvent._meta.db_table} ({', '.join(columns)}) FROM STDIN"
        rollout_ids = list(Rollout.objects.values_list("pk", flat=True)) or [None]
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for i in range(count):
                sequence += 1
                action, object_type, label, reason = LEDGER_ACTIONS[i % len(LEDGER_ACTIONS)]
                at = ledger.parse_at(ledger.format_at(start + step * i))
                record = {
                    "sequence": sequence,
                    "at": ledger.format_at(at),
                    "actor_kind": "token" if action.startswith("evaluations.") else "user",
                    "actor_name": "evaluation-harness" if action.startswith("evaluations.") else "rollout-admin",
                    "actor_user_id": None,
                    "actor_token_id": None,
                    "action": action,
                    "object_type": object_type,
                    "object_id": str(rng.randint(1, 50_000)) if action in ("update", "create") else "",
                    "object_repr": label,
                    "rollout_id": rollout_ids[i % len(rollout_ids)],
                    "before": {"enabled": False} if action == "update" else None,
                    "after": {"enabled": True} if action == "update" else {"count": 500, "first_id": 1 + i},
                    "reason": reason,
                    "request_id": f"bench-{i:08x}",
                }
                record["prev_hash"] = prev_hash
                record["hash"] = prev_hash = ledger.entry_hash(prev_hash, ledger.payload_of(record))
                row = [record[c] for c in columns]
                row[columns.index("at")] = at
                for name in ("before", "after"):
                    index = columns.index(name)
                    row[index] = None if row[index] is None else ledger.canonical_json(row[index])
                copy.write_row(row)
    return count


def _targets(start: dt.datetime) -> list[tuple[Rollout, list[PhasePeriod], float]]:
    """(rollout, the activity periods of its started phases oldest first, share of the runs).

    Ingestion accepts a run only inside an activity period of its phase, so the runs are placed in the periods. The
    demo's rollouts began a few days ago; their first period is moved back to ``start`` (the phase was active that
    much longer), so that the whole span lies in some period: a run at any moment belongs to the phase that was
    active then."""
    rollouts = list(
        Rollout.objects.filter(slug__in=[MAIN_SLUG, SECOND_SLUG]).prefetch_related("phases__periods", "cohorts")
    )
    if not rollouts:
        rollouts = list(Rollout.objects.prefetch_related("phases__periods", "cohorts")[:2])
    targets = []
    for rollout in rollouts:
        periods = sorted(
            (period for phase in rollout.phases.all() for period in phase.periods.all()),
            key=lambda period: (period.entered_at, period.pk),
        )
        if not periods:
            continue
        first = periods[0]
        if first.entered_at > start:
            phase = first.phase
            PhasePeriod.objects.filter(pk=first.pk).update(entered_at=start)
            if phase.entered_at == first.entered_at:  # the phase's current period is this one
                Phase.objects.filter(pk=phase.pk).update(entered_at=start)
            first.entered_at = start
        targets.append((rollout, periods, 0.8 if rollout.slug == MAIN_SLUG else 0.2))
    if not targets:
        raise ValueError("No rollout with a started phase to seed runs into.")
    total = sum(share for *_, share in targets)
    return [(r, p, share / total) for r, p, share in targets]


def _pick(targets: list[tuple[Rollout, list[PhasePeriod], float]], draw: float) -> tuple[Rollout, list[PhasePeriod]]:
    for rollout, periods, share in targets:
        if draw < share:
            return rollout, periods
        draw -= share
    return targets[-1][0], targets[-1][1]


def _placed(periods: list[PhasePeriod], moment: dt.datetime) -> tuple[PhasePeriod, dt.datetime]:
    """The period a run finishing at ``moment`` belongs to: the last one entered by then; a moment after that period
    ended (a gap between periods, or a rollout that is over) moves back to its end, still inside it."""
    period = periods[0]
    for candidate in periods:
        if candidate.entered_at <= moment:
            period = candidate
    if period.exited_at is not None and moment > period.exited_at:
        moment = period.exited_at
    return period, max(moment, period.entered_at)


def _runs(rng: random.Random, count: int, outputs: int, stamp: int, start: dt.datetime, end: dt.datetime) -> int:
    if count <= 0:
        return 0
    targets = _targets(start)
    cohort_cache: dict = {}
    columns = [
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
    ]
    sql = f"COPY {EvaluationRun._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    step = (end - start) / count
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for i in range(count):
            rollout, periods = _pick(targets, rng.random())
            period, finished = _placed(periods, start + step * i)
            phase = period.phase
            arm = "candidate" if i % 2 else "baseline"
            # The internal cohort when the phase exposes it (ingestion refuses a cohort the phase does not expose).
            cohort = _internal_cohort(rollout, phase.kind, cohort_cache) if i % 3 else None
            metrics = {k: round(rng.gauss(*v), 4) for k, v in PROFILES[arm].items() if k != "compensation"}
            compensations = rng.randint(0, 6)
            metrics["guardrail_compensation_rate"] = compensations / CONVERSATIONS
            run_id = f"bench-{stamp}-{i:07d}"
            # Spread evenly in time, so the expired share of the outputs is the expired share of the runs.
            n_outputs = (i + 1) * outputs // count - i * outputs // count
            item = {
                "run_id": run_id,
                "rollout": rollout.slug,
                "phase": phase.kind,
                "arm": arm,
                "cohort": cohort.kind if cohort else None,
                "started_at": finished - dt.timedelta(minutes=20),
                "finished_at": finished,
                "conversations": CONVERSATIONS,
                "guardrail_compensations": compensations,
                "metrics": metrics,
                "harness_version": "bench-1",
                "outputs": [_output(run_id, k) for k in range(1, n_outputs + 1)],
            }
            copy.write_row(
                [
                    run_id,
                    rollout.pk,
                    phase.pk,
                    arm,
                    cohort.pk if cohort else None,
                    item["started_at"],
                    finished,
                    CONVERSATIONS,
                    compensations,
                    "bench-1",
                    *(metrics.get(k) for k in METRIC_KEYS),
                    _canonical_hash(_run_content(item)),
                    n_outputs,
                    finished + dt.timedelta(seconds=5),
                ]
            )
    return count


def _internal_cohort(rollout: Rollout, phase_kind: str, cache: dict) -> Cohort | None:
    """The rollout's internal cohort if ``phase_kind`` exposes it, else None (memoised in ``cache``)."""
    key = (rollout.pk, phase_kind)
    if key not in cache:
        cohorts = list(rollout.cohorts.all())
        exposed = _exposed_cohorts(cohorts, phase_kind)
        cache[key] = next((c for c in cohorts if c.kind == "internal" and c.kind in exposed), None)
    return cache[key]


def _output(run_id: str, k: int) -> dict:
    return {"conversation_id": f"{run_id}-c{k}", "transcript_excerpt": EXCERPT, "tokens": 400 + k}


def _outputs(stamp: int) -> int:
    """The outputs of the runs just written, set-based: exactly the ``outputs`` their content hash covers."""
    table = RunOutput._meta.db_table
    runs = EvaluationRun._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (run_id, conversation_id, data, run_finished_at)
            SELECT r.id, r.run_id || '-c' || k,
                   jsonb_build_object('transcript_excerpt', %s::text, 'tokens', 400 + k), r.finished_at
            FROM {runs} r CROSS JOIN LATERAL generate_series(1, r.output_count) AS k
            WHERE r.run_id LIKE %s
            """,  # noqa: S608 - table names from the models
            [EXCERPT, f"bench-{stamp}-%"],
        )
        return cursor.rowcount


def _analyze() -> int:
    """What autovacuum does soon after a bulk load: statistics, and (outside a transaction: VACUUM cannot run in
    one) the visibility map, without which an index-only scan (the export manifest's count, a keyset page) visits
    the heap for every row of a table that was just loaded."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE" if connection.in_atomic_block else "VACUUM (ANALYZE)")
    return 0
