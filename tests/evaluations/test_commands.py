"""``manage.py ingest_evaluations`` and the demo data."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evaluations.models import EvaluationRun, MonitoringSample, TriggerFiring
from tests.evaluations.conftest import run


def write_jsonl(path, runs) -> str:
    path.write_text("\n".join(json.dumps(r) for r in runs) + "\n\n")
    return str(path)


def test_ingest_evaluations_loads_a_file_in_batches_with_progress_and_summary(canary, tmp_path):
    runs = [run(canary.slug, outputs=[{"conversation_id": "c1"}]) for _ in range(7)]
    path = write_jsonl(tmp_path / "runs.jsonl", runs)
    out, err = StringIO(), StringIO()
    call_command("ingest_evaluations", path, "--batch-size", "3", stdout=out, stderr=err)
    assert EvaluationRun.objects.count() == 7
    assert "7 run(s) read: 7 created, 0 duplicate(s)" in out.getvalue()
    assert "7 read, 7 created" in err.getvalue()
    out = StringIO()
    call_command("ingest_evaluations", path, stdout=out, stderr=StringIO())
    assert "7 created" not in out.getvalue() and "0 created, 7 duplicate(s)" in out.getvalue()


def test_ingest_evaluations_names_the_bad_line_and_stores_nothing_of_its_batch(canary, tmp_path):
    runs = [run(canary.slug) for _ in range(4)]
    runs[2]["guardrail_compensations"] = 1000
    path = write_jsonl(tmp_path / "bad.jsonl", runs)
    with pytest.raises(CommandError) as exc:
        call_command("ingest_evaluations", path, "--batch-size", "2", stdout=StringIO(), stderr=StringIO())
    message = str(exc.value)
    assert "line 3 /guardrail_compensations: Cannot exceed conversations." in message
    assert "Lines 3-4 not stored." in message
    assert EvaluationRun.objects.count() == 2


def test_ingest_evaluations_refuses_a_line_that_is_not_json(canary, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(run(canary.slug)) + "\n{not json\n")
    with pytest.raises(CommandError, match="Line 2: not valid JSON"):
        call_command("ingest_evaluations", str(path), stdout=StringIO(), stderr=StringIO())
    assert EvaluationRun.objects.count() == 0


@pytest.mark.django_db
def test_demo_data_is_idempotent_and_fires_no_trigger(role_groups):
    from evaluations import services, tasks
    from evaluations.demo import seed_evaluations
    from rollout.demo import seed_demo

    seed_demo()
    created = seed_evaluations()
    assert created == ["32 demo evaluation runs", "48 monitoring samples"]
    assert seed_evaluations() == []
    assert EvaluationRun.objects.count() == 32 and MonitoringSample.objects.count() == 48
    assert tasks.sweep_triggers() == 0
    from rollout.models import Rollout

    rollout = Rollout.objects.get(slug="react-multi-agent")
    assert services.evaluate_triggers(rollout_id=rollout.pk) is None
    assert TriggerFiring.objects.count() == 0
    # Demo runs with their numbers: candidate compensations stay at or below 4%.
    assert max(r.compensation_ratio for r in EvaluationRun.objects.filter(arm="candidate")) <= 0.04
