"""Ingest throughput: 100,000 runs (x --scale) sent as 500-run requests through the API.

Each request goes through the whole stack with Django's test client:
middleware (body limit), bearer-token authentication, DRF's JSON parsing,
validation of every field, the idempotency check and the bulk insert of runs
and outputs in one transaction. Request bodies are encoded before the clock
starts (that is the harness's work). Each run carries 2 outputs. The trigger
evaluation that each ingest schedules on commit is counted but not run here
(it runs on a worker); its cost is measured apart: one evaluation over the
canary's candidate runs.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from typing import Any

BATCH = 500
OUTPUTS_PER_RUN = 2
SLUG = "bench-rollout"


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
    rollout = rollout_create_from_playbook(name="Bench rollout", slug=SLUG, owner=owner)
    for item in rollout.checklist_items.filter(kind=ChecklistKind.READINESS):
        checklist_item_tick(item=item, actor=owner, evidence_url="https://example.com/e")
    rollout_advance(rollout=rollout, to="canary", actor=None, reason="bench")
    return rollout


def make_runs(total: int, seed: int = 1) -> list[dict[str, Any]]:
    """``total`` runs over the last 30 days: preparation then canary, both arms, a few outputs each."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    runs = []
    for i in range(total):
        finished = now - dt.timedelta(seconds=(total - i) * 30 * 86400 / total)
        arm = "candidate" if i % 2 else "baseline"
        phase = "preparation" if i < total // 2 else "canary"
        candidate = arm == "candidate"
        runs.append(
            {
                "run_id": f"bench-{seed}-{i:07d}",
                "rollout": SLUG,
                "phase": phase,
                "arm": arm,
                "cohort": "internal",
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


def ingest_through_api(runs: list[dict[str, Any]]) -> dict[str, float]:
    from django.test import Client

    from evaluations import tasks
    from evaluations.services import api_token_create

    _token, raw = api_token_create(name=f"bench-{time.time_ns()}", scopes=["ingest"], actor=None)
    client = Client()
    bodies = [json.dumps({"runs": runs[i : i + BATCH]}).encode() for i in range(0, len(runs), BATCH)]
    scheduled = []
    original = tasks.evaluate_triggers.delay
    tasks.evaluate_triggers.delay = lambda rollout_id: scheduled.append(rollout_id)
    try:
        started = time.perf_counter()
        for body in bodies:
            response = client.post(
                "/api/v1/evaluation-runs/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
            )
            if response.status_code != 201:
                raise RuntimeError(f"ingest failed: {response.status_code} {response.content[:500]!r}")
        seconds = time.perf_counter() - started
    finally:
        tasks.evaluate_triggers.delay = original
    return {
        "requests": len(bodies),
        "body_mb_per_request": round(sum(map(len, bodies)) / len(bodies) / 1e6, 3),
        "seconds": round(seconds, 2),
        "runs_per_second": round(len(runs) / seconds),
        "evaluations_scheduled": len(scheduled),
    }


def run(args) -> dict:
    from django.conf import settings
    from django.db import connection

    from evaluations import services
    from evaluations.models import EvaluationRun, RunOutput

    total = int(100_000 * args.scale)
    rollout = setup_rollout()
    runs = make_runs(total)
    figures = {"database": connection.vendor, "runs": total, "outputs_per_run": OUTPUTS_PER_RUN}
    figures.update(ingest_through_api(runs))
    assert EvaluationRun.objects.filter(rollout=rollout).count() >= total
    figures["outputs_stored"] = RunOutput.objects.filter(run__rollout=rollout).count()

    # Sending the first 500 again: every run is a duplicate, nothing is written.
    started = time.perf_counter()
    result = services.ingest_runs(payload={"runs": runs[:BATCH]})
    figures["duplicate_batch_seconds"] = round(time.perf_counter() - started, 3)
    assert len(result.duplicates) == BATCH

    # What the worker does after each ingest: one evaluation over the active phase's candidate runs. The bench
    # runs finished before the canary was entered a moment ago; move the entry back so all of them are in the window.
    from rollout.models import Phase

    Phase.objects.filter(rollout=rollout, kind="canary").update(entered_at=runs[0]["started_at"])
    figures["runs_in_trigger_window"] = EvaluationRun.objects.filter(
        rollout=rollout, phase__kind="canary", arm="candidate"
    ).count()
    started = time.perf_counter()
    fired = services.evaluate_triggers(rollout_id=rollout.pk)
    assert fired is None, "bench data must not fire a trigger"
    figures["trigger_evaluation_seconds"] = round(time.perf_counter() - started, 3)
    figures["api_max_body_bytes"] = settings.API_MAX_BODY_BYTES
    return figures
