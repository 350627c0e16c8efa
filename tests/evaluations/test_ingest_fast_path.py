"""The ingest's fast paths give exactly what the slow ones give.

``schemas.fast_validated_runs`` must accept nothing ``EvaluationRunBatchSerializer`` refuses and return the same
validated data for what it accepts; runs and outputs stored with COPY must read back as the ORM stored them.
"""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
from django.utils import timezone

from evaluations import services
from evaluations.models import EvaluationRun, RunOutput
from evaluations.schemas import EvaluationRunBatchSerializer, fast_validated_runs
from rollout.inputs import InputRejected, load_json
from tests.evaluations.conftest import run


def _base() -> dict:
    body = run("acme", cohort="internal", outputs=[{"conversation_id": "c1", "tokens": 3}, {"conversation_id": "c2"}])
    body["metrics"] = {"task_success_rate": 0.9, "latency_p95_ms": 1500, "critic_revision_rate": None}
    return body


def _drf(payload):
    serializer = EvaluationRunBatchSerializer(data=copy.deepcopy(payload))
    return serializer.validated_data["runs"] if serializer.is_valid() else None


future = (timezone.now() + dt.timedelta(hours=1)).isoformat()
# One change each to an otherwise valid run: every value the serializers refuse, and some they accept.
VARIANTS: list[tuple[str, object]] = [
    ("run_id", ""),
    ("run_id", " run-1"),
    ("run_id", "run-1\n"),
    ("run_id", "run 1"),
    ("run_id", "r" * 200),
    ("run_id", "r" * 201),
    ("run_id", 12),
    ("run_id", None),
    ("rollout", "Acme!"),
    ("rollout", "a" * 81),
    ("rollout", 5),
    ("phase", "nope"),
    ("phase", "Canary"),
    ("phase", None),
    ("arm", "both"),
    ("arm", ["candidate"]),
    ("cohort", None),
    ("cohort", ""),
    ("cohort", "mars"),
    ("cohort", 1),
    ("started_at", "2026-01-01T00:00:00"),
    ("started_at", "yesterday"),
    ("started_at", 1700000000),
    ("started_at", "0001-01-01T00:00:00+00:00"),
    ("finished_at", future),
    ("finished_at", "2000-01-01T00:00:00Z"),
    ("finished_at", "2026-11-30T10:00:00+02:00"),
    ("conversations", 0),
    ("conversations", 1),
    ("conversations", 2**31),
    ("conversations", True),
    ("conversations", 100.0),
    ("conversations", "100"),
    ("guardrail_compensations", -1),
    ("guardrail_compensations", 101),
    ("guardrail_compensations", 100),
    ("guardrail_compensations", False),
    ("metrics", None),
    ("metrics", []),
    ("metrics", {}),
    ("metrics", {"task_success_rate": 1.5}),
    ("metrics", {"task_success_rate": -0.1}),
    ("metrics", {"task_success_rate": 1}),
    ("metrics", {"task_success_rate": True}),
    ("metrics", {"task_success_rate": "0.5"}),
    ("metrics", {"latency_p95_ms": 1e308}),
    ("metrics", {"latency_p95_ms": float("nan")}),
    ("metrics", {"latency_p95_ms": -0.0}),
    ("metrics", {"unknown_metric": 1.0}),
    ("harness_version", ""),
    ("harness_version", "   "),
    ("harness_version", " h-1 "),
    ("harness_version", "h" * 100),
    ("harness_version", "h" * 101),
    ("harness_version", 3),
    ("harness_version", "h\x00"),
    ("outputs", None),
    ("outputs", []),
    ("outputs", {"conversation_id": "c1"}),
    ("outputs", [{"conversation_id": "c1"}, {"conversation_id": "c1"}]),
    ("outputs", [{"conversation_id": ""}]),
    ("outputs", [{"conversation_id": 7}]),
    ("outputs", [{"conversation_id": "c" * 201}]),
    ("outputs", ["c1"]),
    ("outputs", [{"conversation_id": f"c{i}"} for i in range(1001)]),
    ("unknown", 1),
]


# Ids must be the same in every xdist worker: the future moment is named, not printed.
IDS = [f"{k}={'<an hour from now>' if v is future else repr(str(v)[:20])}" for k, v in VARIANTS]


@pytest.mark.parametrize(("key", "value"), VARIANTS, ids=IDS)
def test_fast_validation_never_differs_from_the_serializers(key, value):
    body = _base()
    body[key] = value
    payload = {"runs": [_base(), body]}
    fast, slow = fast_validated_runs(copy.deepcopy(payload)), _drf(payload)
    if slow is None:
        assert fast is None
    else:
        assert fast is None or fast == slow


@pytest.mark.parametrize("missing", ["run_id", "rollout", "finished_at", "conversations", "harness_version"])
def test_fast_validation_leaves_missing_fields_to_the_serializers(missing):
    body = _base()
    del body[missing]
    assert fast_validated_runs({"runs": [body]}) is None
    assert _drf({"runs": [body]}) is None


def test_fast_validation_takes_plain_batches_and_gives_what_the_serializers_give():
    bodies = [_base() for _ in range(3)]
    del bodies[1]["cohort"], bodies[1]["metrics"], bodies[1]["outputs"]
    payload = {"runs": bodies}
    fast = fast_validated_runs(copy.deepcopy(payload))
    assert fast is not None
    assert fast == _drf(payload)
    assert [sorted(r) for r in fast] == [sorted(r) for r in _drf(payload)]
    assert all(r["finished_at"].tzinfo == dt.UTC for r in fast)


@pytest.mark.parametrize(
    "payload",
    [None, [], {}, {"runs": []}, {"runs": {}}, {"runs": [_base()], "extra": 1}, {"runs": [_base()] * 501}],
    ids=["null", "list", "empty", "no-runs", "runs-object", "extra-key", "too-many"],
)
def test_fast_validation_leaves_odd_batches_to_the_serializers(payload):
    assert fast_validated_runs(payload) is None


@pytest.mark.parametrize(
    "text",
    ['{"a": "\\u0000"}', '{"a": "\\ud800"}', '{"\\u0000": 1}', '{"a": ["x", "\\udfff"]}'],
)
def test_the_boundary_still_finds_bad_text_behind_escapes(text):
    with pytest.raises(InputRejected) as caught:
        load_json(text.encode())
    assert caught.value.code == "invalid-text"


def test_the_boundary_finds_a_raw_surrogate_byte_sequence():
    with pytest.raises(InputRejected) as caught:
        load_json('{"a": "\ud800"}'.encode("utf-8", "surrogatepass"))
    assert caught.value.code == "invalid-text"
    assert load_json('{"a": "\ud7ff \\ud83d\\ude00"}'.encode()) == {"a": "\ud7ff \U0001f600"}


def test_copy_stores_runs_and_outputs_as_the_orm_reads_them(canary):
    finished = timezone.now() - dt.timedelta(minutes=5)
    odd = 'tab\there, newline\nthere, backslash \\ and \\N, quote " and ü'
    body = run(
        canary.slug,
        finished=finished,
        cohort="internal",
        metrics={"task_success_rate": 0.875, "latency_p95_ms": 1234.5, "critic_revision_rate": None},
        outputs=[
            {"conversation_id": odd, "text": odd, "nested": {"list": [1, 2.5, None, True]}},
            {"conversation_id": "\\.", "text": "\\."},
        ],
    )
    result = services.ingest_runs(payload={"runs": [body]})
    assert result.created == [body["run_id"]]
    stored = EvaluationRun.objects.get(run_id=body["run_id"])
    assert (stored.phase.kind, stored.arm, stored.cohort.kind) == ("canary", "candidate", "internal")
    assert stored.late is False
    assert (stored.finished_at, stored.started_at) == (finished, finished - dt.timedelta(minutes=30))
    assert (stored.task_success_rate, stored.latency_p95_ms, stored.critic_revision_rate) == (0.875, 1234.5, None)
    assert (stored.conversations, stored.guardrail_compensations, stored.harness_version) == (100, 2, "h-1")
    assert stored.output_count == 2 and stored.outputs_purged_at is None
    [validated] = fast_validated_runs({"runs": [body]})
    assert stored.content_hash == services._canonical_hash(services._run_content(validated))
    outputs = {o.conversation_id: o for o in RunOutput.objects.filter(run=stored)}
    assert outputs[odd].data == {"text": odd, "nested": {"list": [1, 2.5, None, True]}}
    assert outputs["\\."].data == {"text": "\\."}
    assert {o.run_finished_at for o in outputs.values()} == {finished}
    # Sent again, it is a duplicate: the stored hash is the one ingestion computes.
    assert services.ingest_runs(payload=json.loads(json.dumps({"runs": [body]}))).duplicates == [body["run_id"]]
