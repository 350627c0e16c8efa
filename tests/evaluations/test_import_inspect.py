"""Issue 12, part 1: Inspect AI logs become evaluation runs (``manage.py import_inspect_log``, the API).

The logs are real: ``inspect eval`` (the CLI of the ``inspect-ai`` dev dependency) runs our own small task
(``inspect_task/support_eval.py``) offline, once per session, with no model (``--model none``; the task's agent
calls ``mockllm/model`` with custom outputs that carry token usage, priced with ``set_model_info``). The
expected numbers are worked out from the task's fixed replies, and the times from Inspect's own reader.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evaluations.models import EvaluationRun, RunOutput
from rollout.outbox import OutboxMessage
from tests.evaluations.conftest import run as run_body
from tests.evaluations.import_tools import finish, inspect_eval

REPO = Path(__file__).resolve().parents[2]
SLUG = "react-rollout"  # the rollout fixture's slug ("ReAct rollout")


@pytest.fixture(scope="session")
def inspect_logs(tmp_path_factory) -> dict[str, Path]:
    """Three real logs, made concurrently: a successful .eval (zstd) with one errored sample, a successful JSON
    log of the baseline arm, and a log whose evaluation errored."""
    root = tmp_path_factory.mktemp("inspect-logs")
    specs = {
        "candidate": (
            "-T",
            "explode=t5",
            "--no-fail-on-error",
            "--metadata",
            f"rollout={SLUG}",
            "--metadata",
            "phase=canary",
            "--metadata",
            "cohort=internal",
        ),
        "baseline_json": ("-T", "arm=baseline", "--log-format", "json"),
        "errored": ("-T", "explode=t3"),
    }
    procs = {name: inspect_eval(root / name, *args) for name, args in specs.items()}
    return {name: finish(proc, root / name, name) for name, proc in procs.items()}


def read(path: Path):
    from inspect_ai.log import read_eval_log

    return read_eval_log(str(path))


def call(*args: str) -> str:
    out = StringIO()
    call_command("import_inspect_log", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_task_writes_zstd_eval_and_json_logs(inspect_logs):
    import zipfile

    with zipfile.ZipFile(inspect_logs["candidate"]) as archive:
        assert {info.compress_type for info in archive.infolist()} == {93}  # zstd: Inspect's default now
    assert inspect_logs["baseline_json"].suffix == ".json"
    assert json.loads(inspect_logs["baseline_json"].read_text())["status"] == "success"
    assert read(inspect_logs["errored"]).status == "error"


@pytest.mark.django_db
def test_an_eval_log_becomes_one_run_with_the_fields_the_issue_lists(live_canary, inspect_logs):
    log = read(inspect_logs["candidate"])
    queued = OutboxMessage.objects.filter(task="evaluations.tasks.evaluate_triggers").count()
    out = call(str(inspect_logs["candidate"]))
    run = EvaluationRun.objects.get()
    assert run.run_id == f"inspect-{log.eval.eval_id}"
    # rollout, phase, cohort from --metadata; arm from the task's default argument (-T would override it).
    assert (run.rollout.slug, run.phase.kind, run.arm, run.cohort.kind) == (SLUG, "canary", "candidate", "internal")
    assert run.started_at == dt.datetime.fromisoformat(log.stats.started_at)
    assert run.finished_at == dt.datetime.fromisoformat(log.stats.completed_at)
    # Five samples, t5 raised: four conversations. t2 and t4 handed over: two compensations.
    assert (run.conversations, run.guardrail_compensations) == (4, 2)
    assert run.task_success_rate == 1.0  # task_success.accuracy, over the four
    assert run.guardrail_compensation_rate == 0.5
    assert run.tool_call_accuracy is None  # not mapped by default
    # 100 input tokens at $2/M + 20 output at $10/M = $0.0004 per generate; four generates.
    assert run.cost_per_conversation_usd == pytest.approx(0.0004)
    good = sorted(s.total_time for s in log.samples if s.error is None)
    expected_p95 = (good[2] + (good[3] - good[2]) * 0.85) * 1000  # rank 2.85 of 0..3
    assert run.latency_p95_ms == pytest.approx(expected_p95, abs=1e-3)
    import inspect_ai

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    version, task, git = run.harness_version.split("; ")
    assert version == f"inspect_ai {inspect_ai.__version__}"
    assert task == "support_requests v2"
    assert git.startswith("git ") and head.stdout.startswith(git.removeprefix("git ").removesuffix("+dirty"))
    assert log.eval.revision.commit.startswith(git.removeprefix("git ").removesuffix("+dirty"))
    # One output per sample (the errored one too, with its error), no message history.
    outputs = {o.conversation_id: o.data for o in RunOutput.objects.filter(run=run)}
    assert sorted(outputs) == ["t1", "t2", "t3", "t4", "t5"]
    assert outputs["t5"]["error"] == "RuntimeError('the order service timed out for t5')"
    assert outputs["t2"]["scores"]["guardrail_compensation"] == {"value": 1, "explanation": "handed over"}
    assert outputs["t2"]["completion"] == "REFUND issued; [handoff] a human checks the carrier claim."
    assert outputs["t1"]["metadata"] == {"intent": "billing"}
    assert outputs["t1"]["model_usage"]["mockllm/model"]["total_cost"] == pytest.approx(0.0004)
    assert outputs["t1"]["model_usage"]["mockllm/model"]["input_tokens"] == 100
    assert "messages" not in outputs["t1"] and "events" not in outputs["t1"]
    assert {"started_at", "completed_at", "total_time", "working_time"} <= set(outputs["t1"])
    assert f"{run.run_id}: {SLUG}/canary/candidate/internal, 4 conversation(s), 2 compensation(s), 5 output(s)" in out
    assert "1 sample(s) with an error are not counted" in out
    assert "1 run(s): 1 were created, 0 duplicate(s)." in out
    # Through the ingest service: its trigger evaluation is queued in the same transaction.
    assert OutboxMessage.objects.filter(task="evaluations.tasks.evaluate_triggers").count() == queued + 1


@pytest.mark.django_db
def test_importing_the_same_log_again_counts_a_duplicate(live_canary, inspect_logs):
    call(str(inspect_logs["candidate"]))
    out = call(str(inspect_logs["candidate"]))
    assert "1 run(s): 0 were created, 1 duplicate(s)." in out
    assert EvaluationRun.objects.count() == 1 and RunOutput.objects.count() == 5
    # The same log with another arm is other content under the same run id: a conflict, nothing stored.
    with pytest.raises(CommandError, match="already ingested with other content"):
        call(str(inspect_logs["candidate"]), "--arm", "baseline")


@pytest.mark.django_db
def test_a_json_log_and_an_eval_log_in_one_call_with_options_and_a_mapping(live_canary, inspect_logs, tmp_path):
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "metrics": {"task_success_rate": "task_success.accuracy", "tool_call_accuracy": "tool_use.accuracy"},
                "compensations": {"score": "guardrail_compensation", "values": [1]},
                "outputs": {"messages": True},
            }
        )
    )
    out = call(
        str(inspect_logs["baseline_json"]),
        str(inspect_logs["candidate"]),
        "--rollout",
        SLUG,
        "--phase",
        "canary",
        "--mapping",
        str(mapping),
    )
    assert "2 run(s): 2 were created" in out
    base = EvaluationRun.objects.get(arm="baseline")
    cand = EvaluationRun.objects.get(arm="candidate")
    # The JSON log: all five samples answered; t5 (shipping) fails tool use; the arm from -T arm=baseline.
    assert (base.conversations, base.guardrail_compensations, base.cohort) == (5, 2, None)
    assert (base.tool_call_accuracy, cand.tool_call_accuracy) == (0.8, 1.0)
    assert base.cost_per_conversation_usd == pytest.approx(0.0004)
    messages = RunOutput.objects.get(run=base, conversation_id="t1").data["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == "REFUND issued for order 1001."


@pytest.mark.django_db
def test_dry_run_checks_everything_and_stores_nothing(live_canary, inspect_logs):
    queued = OutboxMessage.objects.count()
    out = call(str(inspect_logs["candidate"]), "--dry-run")
    assert "1 run(s): 1 would be created, 0 duplicate(s) (dry run: nothing stored)." in out
    assert EvaluationRun.objects.count() == 0 and RunOutput.objects.count() == 0
    assert OutboxMessage.objects.count() == queued


@pytest.mark.django_db
def test_an_errored_log_is_refused(live_canary, inspect_logs):
    with pytest.raises(CommandError) as exc:
        call(str(inspect_logs["errored"]), "--rollout", SLUG, "--phase", "canary")
    message = str(exc.value)
    assert "the evaluation's status is 'error'" in message
    assert "the order service timed out for t3" in message
    assert "Nothing was stored." in message
    assert EvaluationRun.objects.count() == 0


@pytest.mark.django_db
def test_what_the_log_and_the_options_do_not_say_is_refused_naming_it(live_canary, inspect_logs, tmp_path):
    # The JSON log has no phase in its metadata nor its task arguments.
    with pytest.raises(CommandError) as exc:
        call(str(inspect_logs["baseline_json"]), "--rollout", SLUG)
    assert "/eval/metadata/phase: No phase: give --phase" in str(exc.value)
    # A metric the mapping asks for that the log does not have.
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"metrics": {"critic_revision_rate": "critic.mean"}}))
    with pytest.raises(CommandError, match=r"has no scorer metric 'critic\.mean'"):
        call(str(inspect_logs["candidate"]), "--mapping", str(mapping))
    mapping.write_text(json.dumps({"compensations": {"score": "handover"}}))
    with pytest.raises(CommandError, match="no sample has the score 'handover'"):
        call(str(inspect_logs["candidate"]), "--mapping", str(mapping))
    mapping.write_text(json.dumps({"metric": {}}))
    with pytest.raises(CommandError, match="Unknown mapping key"):
        call(str(inspect_logs["candidate"]), "--mapping", str(mapping))
    # A file that is no Inspect log, and one that is not there. All of it in one call: nothing stored.
    junk = tmp_path / "junk.eval"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CommandError, match="is not an Inspect log"):
        call(str(inspect_logs["candidate"]), str(junk))
    with pytest.raises(CommandError, match="Cannot read"):
        call(str(tmp_path / "missing.eval"))
    assert EvaluationRun.objects.count() == 0


@pytest.mark.django_db
def test_the_ingest_rules_apply_a_phase_not_started(canary, inspect_logs):
    # The logs ended before this canary was entered (just now), and limited beta has not started at all.
    with pytest.raises(CommandError) as exc:
        call(str(inspect_logs["candidate"]), "--phase", "limited_beta")
    assert "/runs/0/" in str(exc.value) and "Nothing was stored." in str(exc.value)
    assert EvaluationRun.objects.count() == 0


# --- The API -------------------------------------------------------------------------------------------------


def post_log(client, raw_token: str, path: Path, content_type: str, **params: str):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.generic(
        "POST",
        f"/api/v1/imports/inspect/{'?' + query if query else ''}",
        path.read_bytes(),
        content_type=content_type,
        headers={"Authorization": f"Bearer {raw_token}"},
    )


@pytest.mark.django_db
def test_api_imports_an_eval_log_posted_as_the_body(client, live_canary, inspect_logs, token):
    raw = token("ingest")
    log = read(inspect_logs["candidate"])
    response = post_log(client, raw, inspect_logs["candidate"], "application/zip", arm="candidate")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created_ids"] == [f"inspect-{log.eval.eval_id}"] and body["duplicates"] == 0
    assert body["dry_run"] is False
    assert body["runs"][0]["conversations"] == 4 and body["runs"][0]["outputs"] == 5
    again = post_log(client, raw, inspect_logs["candidate"], "application/octet-stream", arm="candidate")
    assert again.status_code == 201 and again.json()["duplicate_ids"] == [f"inspect-{log.eval.eval_id}"]
    json_log = post_log(
        client, raw, inspect_logs["baseline_json"], "application/json", rollout=SLUG, phase="canary", dry_run="true"
    )
    assert json_log.status_code == 201 and json_log.json()["dry_run"] is True
    assert EvaluationRun.objects.count() == 1


@pytest.mark.django_db
def test_api_refusals_are_problems_and_store_nothing(client, live_canary, inspect_logs, token, tmp_path):
    raw = token("ingest")
    response = post_log(client, raw, inspect_logs["errored"], "application/zip", rollout=SLUG, phase="canary")
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "import-refused" and body["errors"] == [
        {"pointer": "/status", "message": "Status 'error', not 'success'."}
    ]
    junk = tmp_path / "junk.json"
    junk.write_text('{"not": "a log"}')
    response = post_log(client, raw, junk, "application/json", rollout=SLUG)
    assert response.status_code == 422 and response.json()["code"] == "import-refused"
    response = post_log(client, raw, inspect_logs["candidate"], "application/zip", mapping="{nope")
    assert response.status_code == 400 and response.json()["code"] == "invalid-parameter"
    response = post_log(client, raw, inspect_logs["candidate"], "text/plain")
    assert response.status_code == 415
    response = post_log(client, raw, inspect_logs["candidate"], "application/zip", rollout="no-such-rollout")
    assert response.status_code == 404 and response.json()["errors"][0]["pointer"] == "/runs/0/rollout"
    response = post_log(client, token("read"), inspect_logs["candidate"], "application/zip")
    assert response.status_code == 403
    assert EvaluationRun.objects.count() == 0


@pytest.mark.django_db
def test_a_run_built_from_a_log_meets_the_same_rules_as_a_posted_one(live_canary, inspect_logs, make_run):
    """The importer adds nothing the API would refuse: the run it sends, posted as JSON, is accepted the same."""
    from evaluations.importers.inspect_logs import import_inspect_logs
    from evaluations.services import ingest_runs

    outcome = import_inspect_logs(
        [("log", inspect_logs["candidate"].read_bytes())], options={"arm": "candidate"}, dry_run=True
    )
    sent = outcome.runs[0]
    assert ingest_runs(payload={"runs": [sent]}).created == [sent["run_id"]]
    assert set(sent) == set(run_body(SLUG)) | {"cohort", "outputs"}
