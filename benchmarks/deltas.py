"""The deltas page at 100,000 runs (x --scale): server time of the whole page (aggregates, Welch CIs,
trend charts bucketed per day, template), median of 5 requests after one warm-up; and the same for the
API's deltas JSON. Loads the runs through the ingest service if ``benchmarks.ingest`` has not already."""

from __future__ import annotations

import statistics
import time


def _time(client, url: str, repeat: int = 5, **extra) -> dict[str, float]:
    response = client.get(url, **extra)
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code}")
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url, **extra)
        samples.append(time.perf_counter() - started)
    return {
        "median_ms": round(1000 * statistics.median(samples), 1),
        "max_ms": round(1000 * max(samples), 1),
        "bytes": len(response.content),
    }


def run(args) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from benchmarks.ingest import BATCH, SLUG, make_runs, setup_rollout
    from evaluations.models import EvaluationRun
    from evaluations.services import api_token_create, ingest_runs

    total = int(100_000 * args.scale)
    rollout = setup_rollout()
    have = EvaluationRun.objects.filter(rollout=rollout).count()
    if have < total:
        runs = make_runs(total - have, seed=2)
        for i in range(0, len(runs), BATCH):
            ingest_runs(payload={"runs": runs[i : i + BATCH]})
    runs_now = EvaluationRun.objects.filter(rollout=rollout).count()
    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    page = _time(client, f"/rollouts/{SLUG}/deltas/")
    _token, raw = api_token_create(name=f"bench-read-{time.time_ns()}", scopes=["read"], actor=None)
    api = _time(client, f"/api/v1/rollouts/{SLUG}/deltas/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    runs_first = _time(client, f"/rollouts/{SLUG}/runs/")
    runs_page = _time(client, f"/rollouts/{SLUG}/runs/?arm=candidate&page=100")
    rollout_page = _time(client, f"/rollouts/{SLUG}/")
    return {
        "database": connection.vendor,
        "runs": runs_now,
        "deltas_page": page,
        "deltas_api": api,
        "runs_list_first_page": runs_first,
        "runs_list_candidates_page_100": runs_page,
        "rollout_page_with_trigger_panel": rollout_page,
    }
