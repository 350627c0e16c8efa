"""Demo evaluation data for ``make run``: baseline and candidate runs with a few outputs, and monitoring samples.

Everything goes through the ingest services, so it obeys the same rules as the
harness: every run and sample ends inside an activity period of its phase
(``rollout.demo``'s timeline: preparation from 10 days back, canary from 4.5).
The preparation runs are sent while preparation is active (``seed_demo`` calls
this before it enters canary), so none of them is a late arrival. Running it
again finds the demo runs and changes nothing. The numbers stay clear of both
rollback triggers.
"""

from __future__ import annotations

import datetime as dt
import random

from django.utils import timezone

from rollout.demo import CANARY_DAYS_AGO, CREATED_DAYS_AGO, MAIN_SLUG
from rollout.models import PhaseKind, Rollout

from . import services
from .models import EvaluationRun

# (phase, days before now of the first run, days of the last run)
SCHEDULE = ((PhaseKind.PREPARATION, 9.0, 5.0), (PhaseKind.CANARY, 4.0, 0.25))
assert SCHEDULE[0][1] < CREATED_DAYS_AGO and SCHEDULE[0][2] > CANARY_DAYS_AGO > SCHEDULE[1][1]
RUNS_PER_ARM = 8
# arm -> metric -> (mean, sd); the baseline has no critic, so it reports no critic revision rate.
PROFILES = {
    "baseline": {
        "task_success_rate": (0.80, 0.015),
        "latency_p95_ms": (1480.0, 60.0),
        "cost_per_conversation_usd": (0.052, 0.003),
        "tool_call_accuracy": (0.885, 0.01),
        "compensation": (0.030, 0.006),
    },
    "candidate": {
        "task_success_rate": (0.872, 0.015),
        "latency_p95_ms": (1730.0, 70.0),
        "cost_per_conversation_usd": (0.066, 0.004),
        "tool_call_accuracy": (0.93, 0.01),
        "critic_revision_rate": (0.21, 0.02),
        "compensation": (0.024, 0.006),
    },
}
CONVERSATIONS = 200
VERDICTS = ("resolved", "resolved", "resolved", "escalated", "needs clarification")


def _run(rng: random.Random, *, phase: str, arm: str, index: int, finished: dt.datetime) -> dict:
    profile = PROFILES[arm]
    rate = min(max(rng.gauss(*profile["compensation"]), 0.0), 0.04)
    metrics = {
        key: round(min(max(rng.gauss(mean, sd), 0.0), 1.0) if key != "latency_p95_ms" else rng.gauss(mean, sd), 4)
        for key, (mean, sd) in profile.items()
        if key != "compensation"
    }
    compensations = round(rate * CONVERSATIONS)
    metrics["guardrail_compensation_rate"] = compensations / CONVERSATIONS
    run_id = f"demo-{phase}-{arm}-{index:02d}"
    return {
        "run_id": run_id,
        "rollout": MAIN_SLUG,
        "phase": phase,
        "arm": arm,
        "cohort": "internal" if phase == PhaseKind.CANARY else None,
        "started_at": (finished - dt.timedelta(minutes=42)).isoformat(),
        "finished_at": finished.isoformat(),
        "conversations": CONVERSATIONS,
        "guardrail_compensations": compensations,
        "metrics": metrics,
        "harness_version": "harness-2.4.1",
        "outputs": [
            {
                "conversation_id": f"{run_id}-c{n}",
                "transcript_excerpt": rng.choice(
                    [
                        "User: I was charged twice for my order. Assistant: I found both charges; refunding one now.",
                        "User: Move my delivery to Friday. Assistant: Done — Friday 9-12, confirmation sent.",
                        "User: Why is my invoice higher? Assistant: Two seats were added on the 3rd; here is the line.",
                    ]
                ),
                "tool_calls": [{"tool": "orders.lookup", "ok": True}, {"tool": "payments.refund", "ok": n != 2}],
                "verdict": rng.choice(VERDICTS),
            }
            for n in range(1, 4)
        ],
    }


def seed_evaluations(*, now: dt.datetime | None = None, phases: tuple[str, ...] | None = None) -> list[str]:
    """Add the demo runs (and, with the canary, its samples) of ``phases`` (all) to the demo rollout; returns what it
    created (nothing for a phase that has its demo runs already)."""
    rollout = Rollout.objects.filter(slug=MAIN_SLUG).first()
    if rollout is None:
        return []
    now = now or timezone.now()
    rng = random.Random(20260501)
    runs = []
    seeded = []
    for phase, first_days, last_days in SCHEDULE:
        wanted = phases is None or phase in phases
        for arm in ("baseline", "candidate"):
            for i in range(RUNS_PER_ARM):
                days = first_days - (first_days - last_days) * i / (RUNS_PER_ARM - 1)
                finished = now - dt.timedelta(days=days, minutes=7 if arm == "candidate" else 0)
                # Drawn whether wanted or not, so each phase's numbers are the same however it is seeded.
                item = _run(rng, phase=phase, arm=arm, index=i + 1, finished=finished)
                if wanted:
                    runs.append(item)
        if wanted and not EvaluationRun.objects.filter(rollout=rollout, run_id__startswith=f"demo-{phase}-").exists():
            seeded.append(phase)
    runs = [r for r in runs if r["phase"] in seeded]
    created = services.ingest_runs(payload={"runs": runs}).created if runs else []
    result = [f"{len(created)} demo evaluation runs"] if created else []
    if PhaseKind.CANARY not in seeded:
        return result
    end = now.replace(minute=(now.minute // 15) * 15, second=0, microsecond=0)
    samples = [
        {
            "rollout": MAIN_SLUG,
            "phase": PhaseKind.CANARY,
            "interval_start": (end - dt.timedelta(minutes=15 * (k + 1))).isoformat(),
            "interval_end": (end - dt.timedelta(minutes=15 * k)).isoformat(),
            "latency_p95_ms": round(rng.gauss(1650, 90), 1),
            "requests": rng.randint(800, 1400),
        }
        for k in range(48)
    ]
    services.ingest_samples(payload={"samples": samples})
    return [*result, f"{len(samples)} monitoring samples"]
