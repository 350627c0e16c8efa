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
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from evaluations.models import METRIC_KEYS, EvaluationRun, RunOutput
from evaluations.services import ingest_runs
from governance import ledger
from governance.models import AuditEvent
from rollout.models import Phase, PhasePeriod

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

    # Every run lies inside an activity period of its phase, as ingestion requires: the bench spreads its runs over
    # months (retention needs expired ones), so the demo rollouts' first periods begin that much earlier.
    periods = PhasePeriod.objects.filter(phase=OuterRef("phase"), entered_at__lte=OuterRef("finished_at")).filter(
        Q(exited_at__isnull=True) | Q(exited_at__gte=OuterRef("finished_at"))
    )
    assert not runs.exclude(Exists(periods)).exists()
    assert set(runs.values_list("phase__kind", flat=True)) >= {"preparation", "canary"}
    for phase in Phase.objects.filter(periods__isnull=False).distinct():
        assert phase.entered_at == phase.periods.order_by("-ordinal").first().entered_at

    # A seeded run sent again through ingestion is a duplicate (same content hash), not a conflict: the oldest one
    # (months ago, in the preparation period) as well as the newest canary run.
    oldest = runs.select_related("rollout", "phase", "cohort").order_by("finished_at", "id").first()
    newest = runs.filter(phase__kind="canary").select_related("rollout", "phase", "cohort").order_by("-id").first()
    assert oldest.finished_at < cutoff
    for run in (oldest, newest):
        _resend(run)


def _resend(run: EvaluationRun) -> None:
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


SMOKE = ["--scale", "0.0002", "--repeats", "1", "--requests", "8"]


def _smoke(module: str, tmp_path) -> tuple[str, dict]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = _run("-m", "benchmarks", module, *SMOKE, "--output", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    (figures,) = data["results"]
    assert figures["benchmark"] == module
    return done.stdout, figures


def _check_rows(rows: list[dict], repeats: int = 1) -> None:
    """Every row: medians of its samples, the ratio of the two, a verdict (the figures themselves are not asserted)."""
    for r in rows:
        assert r["figure"] > 0 and r["reference"] > 0, r
        assert r["ratio"] == round(r["figure"] / r["reference"], 2)  # of the rounded medians
        assert len(r["samples"]) == len(r["reference_samples"]) == repeats
        assert isinstance(r["passed"], bool) and r["target"] and r["reference_what"]


@pytest.mark.postgres
def test_bench_smoke_run_prints_a_row_per_benchmark(tmp_path):
    """The page benchmark end to end at a tiny size: seed, a copy at the small size, two gunicorns, 8 clients, rows,
    JSON. P12's query counts are the same at both sizes for every page."""
    stdout, figures = _smoke("pages", tmp_path)
    assert "| P1 | rollout detail page p95 |" in stdout
    rows = figures["rows"]
    assert [r["key"] for r in rows] == ["P1", "P2", "P3", "P4", "P5"] + ["P12"] * 5
    _check_rows(rows)
    assert figures["small"]["runs"] == 20 and figures["runs"] == 200
    counts = figures["query_counts"]
    assert list(counts) == ["P1", "P2", "P3", "P4", "P5"]
    assert [len(c["large"]) for c in counts.values()] == [1, 1, 3, 2, 2]
    for key, c in counts.items():
        assert c["small"] == c["large"], key
        assert all(n > 0 for n in c["large"]), key
    for r, (key, c) in zip(rows[5:], counts.items(), strict=True):
        assert r["what"].startswith(f"{key} at 200 vs 20 runs p95; queries {'/'.join(map(str, c['large']))} = ")
        assert r["reference_what"] == "the same pages at 20 runs"
        assert f"| P12 | {r['what']} |" in stdout


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("module", "key", "what"),
    [
        ("retention", "P8", "retention purge of "),
        ("ingest", "P9", "ingest over HTTP, 10 runs x 10 outputs a request (10 runs)"),
        ("writes", "P11", "governed write (approval with history and ledger entry)"),
        ("startup", "P13", "make run's start (migrate + seed_demo) at "),
    ],
)
def test_bench_smoke_run_of_the_reference_rows(tmp_path, module, key, what):
    """P8, P9, P11 and P13 end to end at a tiny size: one row each, alternated with its reference, in the table
    and JSON."""
    stdout, figures = _smoke(module, tmp_path)
    (r,) = figures["rows"]
    assert r["key"] == key and r["what"].startswith(what)
    _check_rows([r])
    assert f"| {key} | {r['what']} |" in stdout
    if module == "retention":
        # Both sides deleted the same rows and marked the same runs; the demo's legal hold kept its rollout's.
        assert figures["expired_outputs"] > 0 and figures["held_outputs"] > 0
        assert figures["runs_marked"] == figures["runs_marked_by_reference"]
        assert r["what"] == (
            f"retention purge of {figures['expired_outputs']:,} expired of {figures['outputs']:,} outputs "
            f"({figures['held_outputs']:,} more held)"
        )
    if module == "ingest":
        assert figures["outputs_stored"] == 30 * 10  # warm-up, figure and reference samples of 10 runs
    if module == "writes":
        assert figures["writes_per_sample"] == 5
    if module == "startup":
        # The seeded ledger plus the demo's own entries, named in the row.
        assert figures["ledger_entries"] > 1000
        assert r["what"] == f"make run's start (migrate + seed_demo) at {figures['ledger_entries']:,} ledger entries"
