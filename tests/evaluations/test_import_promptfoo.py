"""Issue 12, part 2: promptfoo results become evaluation runs (``manage.py import_promptfoo_results``, the API).

The results file is real: the promptfoo CLI (npm, pinned by ``promptfoo/package-lock.json``, installed by
``npm ci`` on first use) runs ``promptfoo/promptfooconfig.yaml`` offline, once per session, against a local
provider (``promptfoo/provider.js``) whose answers, latency and cost are fixed. Four tests, two providers:
"legacy" (the baseline, mapped) and "candidate". Refund requests pass and the candidate hands them over
("[handoff]", the ``guardrail_compensation`` named score); "Cancel my plan" fails for both.
"""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evaluations.models import EvaluationRun, RunOutput
from tests.evaluations.import_tools import promptfoo_eval, results_document

SLUG = "react-rollout"
ARMS = json.dumps({"arms": {"legacy": "baseline"}})


@pytest.fixture(scope="session")
def results_file(tmp_path_factory) -> Path:
    return promptfoo_eval(tmp_path_factory.mktemp("promptfoo") / "results.json")


@pytest.fixture
def arms_mapping(tmp_path) -> str:
    path = tmp_path / "mapping.json"
    path.write_text(ARMS)
    return str(path)


def call(*args: str) -> str:
    out = StringIO()
    call_command("import_promptfoo_results", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_promptfoo_writes_results_format_version_3(results_file):
    document = results_document(results_file)
    assert document["results"]["version"] == 3
    assert document["metadata"]["promptfooVersion"] == "0.121.20"
    rows = document["results"]["results"]
    assert len(rows) == 8
    assert {r["provider"]["label"] for r in rows} == {"legacy", "candidate"}
    # The provider's own latencyMs is kept (promptfoo measures it only when the provider gives none).
    assert sorted({r["latencyMs"] for r in rows if r["provider"]["label"] == "candidate"}) == [1024, 1027, 1031, 1037]


@pytest.mark.django_db
def test_one_run_per_provider_with_the_fields_the_issue_lists(live_canary, results_file, arms_mapping):
    document = results_document(results_file)
    out = call(str(results_file), "--rollout", SLUG, "--phase", "canary", "--mapping", arms_mapping)
    assert "2 run(s): 2 were created, 0 duplicate(s)." in out
    base = EvaluationRun.objects.get(arm="baseline")
    cand = EvaluationRun.objects.get(arm="candidate")
    eval_id = document["evalId"]
    assert base.run_id == f"promptfoo-{eval_id}-legacy" and cand.run_id == f"promptfoo-{eval_id}-candidate"
    started = dt.datetime.fromisoformat(document["results"]["timestamp"].replace("Z", "+00:00"))
    assert cand.started_at == started
    assert cand.finished_at == started + dt.timedelta(milliseconds=document["results"]["stats"]["durationMs"])
    for run in (base, cand):
        assert (run.rollout.slug, run.phase.kind, run.cohort) == (SLUG, "canary", None)
        assert run.conversations == 4
        assert run.task_success_rate == 0.75  # three of four tests pass
        assert run.harness_version == "promptfoo 0.121.20; support replies"
    # Latency: 1000 (candidate) or 2000 (legacy) + the prompt's length (37, 31, 27, 24); p95 of four = rank 2.85.
    assert cand.latency_p95_ms == pytest.approx(1031 + (1037 - 1031) * 0.85)
    assert base.latency_p95_ms == pytest.approx(2031 + (2037 - 2031) * 0.85)
    assert (base.cost_per_conversation_usd, cand.cost_per_conversation_usd) == (
        pytest.approx(0.001),
        pytest.approx(0.002),
    )
    # The candidate hands both refunds over: 2 of 4; the legacy arm none.
    assert (cand.guardrail_compensations, base.guardrail_compensations) == (2, 0)
    assert (cand.guardrail_compensation_rate, base.guardrail_compensation_rate) == (0.5, 0.0)
    outputs = {o.data["vars"]["message"]: o.data for o in RunOutput.objects.filter(run=cand)}
    assert len(outputs) == 4
    refund = outputs["Please refund order 2"]
    assert refund["output"] == "REFUND approved. [handoff]"
    assert refund["success"] is True and refund["named_scores"] == {"guardrail_compensation": 1}
    assert refund["latency_ms"] == 1031 and refund["cost"] == 0.002
    assert refund["token_usage"]["total"] == 30
    failed = outputs["Cancel my plan"]
    assert failed["success"] is False and failed["reason"] == 'Expected output to contain "cancelled"'
    ids = {r["id"] for r in document["results"]["results"]}
    assert {o.conversation_id for o in RunOutput.objects.all()} == ids


@pytest.mark.django_db
def test_the_same_file_again_counts_duplicates(live_canary, results_file, arms_mapping):
    call(str(results_file), "--rollout", SLUG, "--phase", "canary", "--mapping", arms_mapping)
    out = call(str(results_file), "--rollout", SLUG, "--phase", "canary", "--mapping", arms_mapping)
    assert "2 run(s): 0 were created, 2 duplicate(s)." in out
    assert EvaluationRun.objects.count() == 2 and RunOutput.objects.count() == 8


@pytest.mark.django_db
def test_compensations_from_an_assertion_and_metrics_from_named_scores(live_canary, results_file, tmp_path):
    mapping = tmp_path / "m.json"
    # The icontains assertion passing is counted here (refunds and "order 3"), and its named score's mean
    # stands for tool-call accuracy: a mapping can point both at what a suite records.
    mapping.write_text(
        json.dumps(
            {
                "arms": {"legacy": "baseline"},
                "compensations": {"assertion": "icontains", "when": "fail"},
                "metrics": {"tool_call_accuracy": "guardrail_compensation"},
                "cohort": "internal",
            }
        )
    )
    call(str(results_file), "--rollout", SLUG, "--phase", "canary", "--mapping", str(mapping))
    cand = EvaluationRun.objects.get(arm="candidate")
    assert cand.guardrail_compensations == 1  # only "Cancel my plan" fails its icontains
    assert cand.tool_call_accuracy == 0.5 and cand.cohort.kind == "internal"


@pytest.mark.django_db
def test_refusals_name_what_is_missing_and_store_nothing(live_canary, results_file, tmp_path, arms_mapping):
    # No arm for the "legacy" provider.
    with pytest.raises(CommandError) as exc:
        call(str(results_file), "--rollout", SLUG, "--phase", "canary")
    assert "Provider 'legacy' has no arm" in str(exc.value) and "/results/results/" in str(exc.value)
    # Another results format version.
    document = results_document(results_file)
    document["results"]["version"] = 2
    old = tmp_path / "v2.json"
    old.write_text(json.dumps(document))
    with pytest.raises(CommandError, match="format version 2; this import reads version 3"):
        call(str(old), "--rollout", SLUG, "--phase", "canary", "--mapping", arms_mapping)
    # An assertion the mapping counts by that the file does not have.
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"arms": {"legacy": "baseline"}, "compensations": {"assertion": "handover"}}))
    with pytest.raises(CommandError, match="No result has the assertion 'handover'"):
        call(str(results_file), "--rollout", SLUG, "--phase", "canary", "--mapping", str(mapping))
    # Not JSON at all.
    junk = tmp_path / "junk.json"
    junk.write_text("{nope")
    with pytest.raises(CommandError, match="not valid JSON"):
        call(str(junk), "--rollout", SLUG, "--phase", "canary")
    # The ingest's own rules: a phase that has not started.
    with pytest.raises(CommandError, match="/runs/0/"):
        call(str(results_file), "--rollout", SLUG, "--phase", "limited_beta", "--mapping", arms_mapping)
    assert EvaluationRun.objects.count() == 0


@pytest.mark.django_db
def test_api_imports_the_results_file_posted_as_the_body(client, live_canary, results_file, token):
    raw = token("ingest")
    url = f"/api/v1/imports/promptfoo/?rollout={SLUG}&phase=canary&mapping={ARMS}"
    headers = {"Authorization": f"Bearer {raw}"}
    body = results_file.read_bytes()
    response = client.post(url, body, content_type="application/json", headers=headers)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["created"] == 2 and data["notes"] == []
    assert sorted(r["arm"] for r in data["runs"]) == ["baseline", "candidate"]
    assert {r["outputs"] for r in data["runs"]} == {4}
    again = client.post(url, body, content_type="application/json", headers=headers)
    assert again.status_code == 201 and again.json()["duplicates"] == 2
    missing = client.post("/api/v1/imports/promptfoo/", body, content_type="application/json", headers=headers)
    assert missing.status_code == 422 and missing["Content-Type"] == "application/problem+json"
    assert [e["pointer"] for e in missing.json()["errors"]] == ["/rollout", "/phase"]
    wrong = client.post(url, b"[1, 2]", content_type="application/json", headers=headers)
    assert wrong.status_code == 422 and wrong.json()["code"] == "import-refused"
    assert EvaluationRun.objects.count() == 2
