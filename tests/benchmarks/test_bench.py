"""``seed_bench`` and ``make bench``: the data they load is what ingestion leaves, and the harness runs end to end.

The harness runs here at a tiny scale only (a smoke run); its figures are never asserted: targets live in
``make bench``, not in timed tests.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Count, F, Q
from django.utils import timezone

from evaluations.models import METRIC_KEYS, EvaluationRun, RunOutput
from evaluations.services import ingest_runs
from governance import ledger
from governance.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
@pytest.mark.django_db
def test_seed_bench_leaves_data_as_ingestion_would():
    call_command("seed_bench", runs=400, ledger=300, outputs=1000, expired_fraction=0.5, stdout=io.StringIO())

    runs = EvaluationRun.objects.filter(run_id__startswith="bench-")
    assert runs.count() == 400
    assert set(runs.values_list("arm", flat=True)) == {"baseline", "candidate"}
    assert runs.values("rollout_id").distinct().count() == 2
    outputs = RunOutput.objects.filter(run__run_id__startswith="bench-")
    assert outputs.count() == 1000
    # output_count matches the rows, and every output carries its run's finished_at.
    mismatched = runs.annotate(n=Count("outputs")).exclude(n=F("output_count"))
    assert not mismatched.exists()
    assert not outputs.exclude(run_finished_at=F("run__finished_at")).exists()
    cutoff = timezone.now() - dt.timedelta(days=settings.RETENTION_DAYS)
    expired = outputs.filter(run_finished_at__lt=cutoff).count()
    assert 450 <= expired <= 550

    # The ledger is one valid chain: the demo's entries plus the 300 added.
    result = ledger.verify(ledger.database_records())
    assert result.ok, result.summary()
    assert result.entries == AuditEvent.objects.count() >= 300

    # A seeded run sent again through ingestion is a duplicate (same content hash), not a conflict. The bench spreads
    # its runs over months (retention needs expired ones), longer than the demo's phases were active, so the one
    # resent is a canary run inside the canary's activity period (ingestion refuses any other, 422).
    in_period = Q(phase__periods__entered_at__lte=F("finished_at")) & (
        Q(phase__periods__exited_at__isnull=True) | Q(phase__periods__exited_at__gte=F("finished_at"))
    )
    run = (
        runs.filter(in_period, phase__kind="canary")
        .select_related("rollout", "phase", "cohort")
        .order_by("-id")
        .first()
    )
    payload = {
        "run_id": run.run_id,
        "rollout": run.rollout.slug,
        "phase": run.phase.kind,
        "arm": run.arm,
        "cohort": run.cohort.kind if run.cohort else None,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "conversations": run.conversations,
        "guardrail_compensations": run.guardrail_compensations,
        "metrics": {k: getattr(run, k) for k in METRIC_KEYS if getattr(run, k) is not None},
        "harness_version": run.harness_version,
        "outputs": [{"conversation_id": o.conversation_id, **o.data} for o in run.outputs.order_by("id")],
    }
    assert ingest_runs(payload={"runs": [payload]}).duplicates == [run.run_id]


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_bench_and_seed_bench_refuse_sqlite(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    bench = _run("-m", "benchmarks", "pages", env=env)
    assert bench.returncode == 2
    assert "make bench needs PostgreSQL" in bench.stderr
    seed = _run("manage.py", "seed_bench", "--runs", "10", env=env)
    assert seed.returncode == 1
    assert "seed_bench needs PostgreSQL" in seed.stderr


@pytest.mark.postgres
def test_bench_smoke_run_prints_a_row_per_benchmark(tmp_path):
    """The page benchmark end to end at a tiny size: seed, gunicorn, 8 clients, rows, JSON."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    args = ["--scale", "0.0002", "--repeats", "1", "--requests", "8", "--output", str(tmp_path)]
    done = _run("-m", "benchmarks", "pages", *args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| P1 | rollout detail page p95 |" in done.stdout
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    rows = data["results"][0]["rows"]
    assert [r["key"] for r in rows] == ["P1", "P2", "P3", "P4", "P5"]
    for r in rows:
        assert (
            r["figure"] > 0 and r["reference"] > 0 and r["ratio"] == pytest.approx(r["figure"] / r["reference"], 0.01)
        )
        assert isinstance(r["passed"], bool)
