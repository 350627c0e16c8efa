"""Ingest over HTTP (P9): 50,000 runs (x --scale) of 10 outputs each, POSTed as 500-run requests to our own gunicorn
(2 sync workers, as in the page benchmarks) by one client, one request after another; against psycopg's COPY of the
same rows (runs, then their outputs, ids reserved from the sequence, one transaction), alternated in the same run.

Each request goes through the whole stack: middleware (body limit), bearer-token authentication, DRF's JSON
parsing, validation of every field, the idempotency check, the insert of runs and outputs and the day-summary
upsert in one transaction, the ledger entry, and the trigger evaluation scheduled on commit (sent to the broker,
not run: it runs on a worker; the queue is purged afterwards). Request bodies and COPY rows are built before the
clock starts (that is the harness's work). Every sample sends runs of its own (new run ids), so none is a duplicate.
Besides the row: the duplicate batch's seconds (a batch sent again writes nothing) and one trigger evaluation over
the canary's candidate runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import random
import time
from typing import Any

BATCH = 500
OUTPUTS_PER_RUN = 10
RUNS = 50_000
SLUG = "bench-rollout"


SPAN_DAYS = 30
CANARY_DAYS_AGO = 15


def setup_rollout():
    from django.contrib.auth import get_user_model

    from rollout.models import ChecklistKind, Rollout
    from rollout.services import checklist_item_tick, rollout_advance, rollout_create_from_playbook, tenant_create

    existing = Rollout.objects.filter(slug=SLUG).first()
    if existing:
        return existing
    owner = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    for i, tier in enumerate(["internal", "beta", "general"]):
        tenant_create(name=f"Bench tenant {i}", tier=tier, account_manager="AM" if tier == "beta" else "")
    # Runs are accepted only inside their phase's activity period: the rollout began before the oldest bench run
    # and entered canary at CANARY_DAYS_AGO, between the preparation runs and the canary runs (make_runs).
    now = dt.datetime.now(dt.UTC)
    rollout = rollout_create_from_playbook(
        name="Bench rollout", slug=SLUG, owner=owner, now=now - dt.timedelta(days=SPAN_DAYS + 1)
    )
    for item in rollout.checklist_items.filter(kind=ChecklistKind.READINESS):
        checklist_item_tick(item=item, actor=owner, evidence_url="https://example.com/e")
    rollout_advance(
        rollout=rollout, to="canary", actor=None, reason="bench", now=now - dt.timedelta(days=CANARY_DAYS_AGO)
    )
    return rollout


def make_runs(total: int, seed: int = 1) -> list[dict[str, Any]]:
    """``total`` runs over the last 30 days: preparation then canary, both arms, a few outputs each."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    runs = []
    canary_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=CANARY_DAYS_AGO)
    for i in range(total):
        finished = now - dt.timedelta(seconds=(total - i) * SPAN_DAYS * 86400 / total)
        arm = "candidate" if i % 2 else "baseline"
        # Each run in the phase that was active when it finished (setup_rollout's timeline).
        phase = "canary" if finished > canary_at else "preparation"
        candidate = arm == "candidate"
        runs.append(
            {
                "run_id": f"bench-{seed}-{i:07d}",
                "rollout": SLUG,
                "phase": phase,
                "arm": arm,
                # Preparation exposes no cohort; the canary exposes the internal one.
                "cohort": "internal" if phase == "canary" else None,
                "started_at": (finished - dt.timedelta(minutes=20)).isoformat(),
                "finished_at": finished.isoformat(),
                "conversations": 200,
                "guardrail_compensations": rng.randint(0, 8),  # at most 4%: no trigger fires
                "metrics": {
                    "task_success_rate": round(rng.gauss(0.87 if candidate else 0.80, 0.02), 4),
                    "guardrail_compensation_rate": round(rng.uniform(0, 0.04), 4),
                    "latency_p95_ms": round(rng.gauss(1700 if candidate else 1500, 80), 1),
                    "cost_per_conversation_usd": round(rng.gauss(0.065 if candidate else 0.052, 0.004), 4),
                    "tool_call_accuracy": round(rng.gauss(0.93 if candidate else 0.88, 0.01), 4),
                    **({"critic_revision_rate": round(rng.gauss(0.2, 0.02), 4)} if candidate else {}),
                },
                "harness_version": "bench-1",
                "outputs": [
                    {"conversation_id": f"c{k}", "transcript_excerpt": "User: refund? Assistant: done.", "tokens": 412}
                    for k in range(OUTPUTS_PER_RUN)
                ],
            }
        )
    return runs


def _bodies(runs: list[dict[str, Any]], batch: int) -> list[bytes]:
    return [json.dumps({"runs": runs[i : i + batch]}).encode() for i in range(0, len(runs), batch)]


def ingest_over_http(port: int, token: str, bodies: list[bytes]) -> float:
    """Seconds to POST every body, one after another; each must be a 201."""
    from .load import request

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.perf_counter()
    for body in bodies:
        status, _seconds, _size = request(port, "/api/v1/evaluation-runs/", headers, method="POST", body=body)
        if status != 201:
            raise RuntimeError(f"ingest over HTTP failed: {status}")
    return time.perf_counter() - started


def copy_rows(rollout, runs: list[dict[str, Any]]) -> tuple[list[list], list[list[tuple]]]:
    """The rows ingestion would store for ``runs``, ready for COPY (run columns; each run's output rows)."""
    from django.utils import timezone

    from evaluations.models import METRIC_KEYS

    phases = {p.kind: p.pk for p in rollout.phases.all()}
    cohorts = {c.kind: c.pk for c in rollout.cohorts.all()}
    now = timezone.now()
    run_rows, output_rows = [], []
    for item in runs:
        digest = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()
        run_rows.append(
            [
                item["run_id"],
                rollout.pk,
                phases[item["phase"]],
                item["arm"],
                cohorts.get(item["cohort"]),
                item["started_at"],
                item["finished_at"],
                item["conversations"],
                item["guardrail_compensations"],
                item["harness_version"],
                *(item["metrics"].get(k) for k in METRIC_KEYS),
                digest,
                len(item["outputs"]),
                now,
            ]
        )
        output_rows.append(
            [
                (o["conversation_id"], json.dumps({k: v for k, v in o.items() if k != "conversation_id"}))
                for o in item["outputs"]
            ]
        )
    return run_rows, output_rows


RUN_COLUMNS = (
    "id, run_id, rollout_id, phase_id, arm, cohort_id, started_at, finished_at, conversations, "
    "guardrail_compensations, harness_version, task_success_rate, guardrail_compensation_rate, latency_p95_ms, "
    "cost_per_conversation_usd, tool_call_accuracy, critic_revision_rate, content_hash, output_count, ingested_at"
)


def copy_in(run_rows: list[list], output_rows: list[list[tuple]]) -> float:
    """Seconds for psycopg's COPY of the runs (ids from the sequence) and then their outputs, in one transaction."""
    from django.db import connection, transaction

    from evaluations.models import METRIC_KEYS

    assert RUN_COLUMNS.count(",") == 10 + len(METRIC_KEYS) + 3, "RUN_COLUMNS must follow copy_rows"
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        raw.execute(
            "SELECT nextval(pg_get_serial_sequence('evaluations_evaluationrun', 'id')) FROM generate_series(1, %s)",
            [len(run_rows)],
        )
        ids = [r[0] for r in raw.fetchall()]
        with raw.copy(f"COPY evaluations_evaluationrun ({RUN_COLUMNS}) FROM STDIN") as copy:
            for pk, values in zip(ids, run_rows, strict=True):
                copy.write_row([pk, *values])
        sql = "COPY evaluations_runoutput (run_id, conversation_id, data, run_finished_at) FROM STDIN"
        with raw.copy(sql) as copy:
            for pk, values, outputs in zip(ids, run_rows, output_rows, strict=True):
                for conversation_id, data in outputs:
                    copy.write_row((pk, conversation_id, data, values[6]))
    return time.perf_counter() - started


def _purge_broker() -> None:
    """The trigger evaluations each ingest scheduled were sent to the broker with no worker: drop them."""
    from config.celery_app import app

    with contextlib.suppress(Exception):  # a broker that is gone has nothing to purge
        app.control.purge()


def run(args) -> dict:
    from django.db import connection

    from evaluations import services
    from evaluations.models import EvaluationRun, RunOutput
    from evaluations.services import api_token_create

    from .load import gunicorn
    from .pages import database_url
    from .rows import alternate, row

    total = max(10, int(RUNS * args.scale))
    batch = min(BATCH, total)
    rollout = setup_rollout()
    _token, raw = api_token_create(name=f"bench-ingest-{time.time_ns()}", scopes=["ingest"], actor=None)
    # Runs for every sample, built before the clock starts: HTTP bodies for the figure, COPY rows for the reference.
    http_sets = [_bodies(make_runs(total, seed=10 + k), batch) for k in range(args.repeats + 1)]
    copy_sets = [copy_rows(rollout, make_runs(total, seed=100 + k)) for k in range(args.repeats)]
    figures: dict = {
        "database": connection.vendor,
        "runs_per_sample": total,
        "runs_per_request": batch,
        "outputs_per_run": OUTPUTS_PER_RUN,
        "body_mb_per_request": round(sum(map(len, http_sets[0])) / len(http_sets[0]) / 1e6, 3),
    }
    again = json.loads(http_sets[0][0])["runs"]  # sent in the last sample; sent again below
    connection.close()
    try:
        with gunicorn(database_url()) as port:
            ingest_over_http(port, raw, http_sets.pop())  # warm up both workers
            measured, references = alternate(
                args.repeats,
                lambda: ingest_over_http(port, raw, http_sets.pop()),
                lambda: copy_in(*copy_sets.pop()),
            )
    finally:
        _purge_broker()
    stored = EvaluationRun.objects.filter(rollout=rollout).count()
    assert stored == total * (2 * args.repeats + 1), stored
    figures["outputs_stored"] = RunOutput.objects.filter(run__rollout=rollout).count()
    assert figures["outputs_stored"] == stored * OUTPUTS_PER_RUN, figures["outputs_stored"]
    figures["http_runs_per_second"] = [round(total / s) for s in measured]
    figures["copy_runs_per_second"] = [round(total / s) for s in references]
    rows = [
        row(
            "P9",
            f"ingest over HTTP, {batch} runs x {OUTPUTS_PER_RUN} outputs a request ({total} runs)",
            measured,
            references,
            unit="s",
            target="<= 3x",
            reference_what="psycopg COPY of the same rows",
            check=lambda _f, _r, ratio: ratio is not None and ratio <= 3.0,
        )
    ]

    # Sending a batch again: every run is a duplicate, nothing is written.
    started = time.perf_counter()
    result = services.ingest_runs(payload={"runs": again})
    figures["duplicate_batch_seconds"] = round(time.perf_counter() - started, 3)
    assert len(result.duplicates) == batch

    # What the worker does after each ingest: one evaluation over the active phase's candidate runs. The bench
    # runs finished before the canary was entered a moment ago; move the entry back so all of them are in the window.
    from rollout.models import Phase

    Phase.objects.filter(rollout=rollout, kind="canary").update(entered_at=again[0]["started_at"])
    figures["runs_in_trigger_window"] = EvaluationRun.objects.filter(
        rollout=rollout, phase__kind="canary", arm="candidate"
    ).count()
    started = time.perf_counter()
    fired = services.evaluate_triggers(rollout_id=rollout.pk)
    assert fired is None, "bench data must not fire a trigger"
    figures["trigger_evaluation_seconds"] = round(time.perf_counter() - started, 3)
    figures["rows"] = [r.as_dict() for r in rows]
    return figures
