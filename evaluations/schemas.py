"""The ingestion payloads: one definition that validates them and documents them (OpenAPI).

The ingest service validates with these serializers, whether the payload came
through the API or from ``manage.py ingest_evaluations``; drf-spectacular reads
the same classes for the schema, so the docs say what is really accepted.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from rollout.inputs import column_range, datetime_problem
from rollout.models import CohortKind, PhaseKind

from .models import METRICS, Arm, EvaluationRun, MonitoringSample

MAX_RUNS_PER_REQUEST = 500
MAX_OUTPUTS_PER_RUN = 1000
MAX_SAMPLES_PER_REQUEST = 1000
# Harness clocks drift a little; a run "finishing" later than this is a bad clock, not data.
CLOCK_SKEW = dt.timedelta(minutes=5)
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"


class StrictFloatField(serializers.FloatField):
    """A JSON number: no strings, no booleans, no NaN or infinity."""

    default_error_messages = {"invalid": "A number is required.", "finite": "The number must be finite."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        try:
            # A JSON integer past float's range (10**400) raises rather than becoming infinity.
            finite = math.isfinite(data)
        except OverflowError:
            finite = False
        if not finite:
            self.fail("finite")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, booleans or fractions."""

    default_error_messages = {"invalid": "An integer is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class AwareDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a UTC offset (``Z`` or ``+00:00``); a naive time is ambiguous and refused."""

    default_error_messages = {
        "naive": "The time needs a UTC offset, e.g. 2026-05-01T12:00:00Z.",
        "range": "The time is out of the supported range.",
    }

    def to_internal_value(self, value: Any) -> dt.datetime:
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        moment = super().to_internal_value(value)
        why = datetime_problem(moment)
        if why:
            raise serializers.ValidationError(why, code="range")
        return moment.astimezone(dt.UTC)

    def enforce_timezone(self, value: dt.datetime) -> dt.datetime:
        if timezone.is_naive(value):
            self.fail("naive")
        return value


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, so a misspelt field is an error rather than silently dropped."""

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


class MetricsSerializer(StrictSerializer):
    """The metric catalogue (catalogue keys to numbers); a metric a run did not measure is left out or null.
    Unknown keys are refused."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = {}
        for key, spec in METRICS.items():
            bounds = {"min_value": 0.0, "max_value": 1.0} if spec.unit == "ratio" else {"min_value": 0.0}
            fields[key] = StrictFloatField(
                required=False, allow_null=True, help_text=f"{spec.label} ({spec.unit}; {spec.direction})", **bounds
            )
        return fields

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(METRICS))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"Unknown metric; the catalogue has: {', '.join(METRICS)}."] for key in unknown}
                )
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "type": "object",
        "required": ["conversation_id"],
        "properties": {"conversation_id": {"type": "string", "minLength": 1, "maxLength": 200}},
        "additionalProperties": True,
        "description": "One conversation's raw output: its id and free-form JSON (transcript excerpts, "
        "tool calls, verdicts).",
    }
)
class OutputField(serializers.Field):
    default_error_messages = {
        "object": "An output must be a JSON object.",
        "conversation_id": "conversation_id must be a non-empty string of at most 200 characters.",
    }

    def to_internal_value(self, data: Any) -> dict:
        if not isinstance(data, dict):
            self.fail("object")
        cid = data.get("conversation_id")
        if not isinstance(cid, str) or not cid or len(cid) > 200:
            self.fail("conversation_id")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class EvaluationRunInSerializer(StrictSerializer):
    """One harness run on one arm in one phase (design section 4). Unknown keys are refused."""

    run_id = serializers.RegexField(
        RUN_ID_PATTERN,
        max_length=200,
        help_text="Unique id of the run; the idempotency key. Letters, digits and . _ : - only.",
    )
    rollout = serializers.SlugField(max_length=80, help_text="The rollout's slug.")
    phase = serializers.ChoiceField(choices=PhaseKind.choices, help_text="A phase that has started.")
    arm = serializers.ChoiceField(choices=Arm.choices)
    cohort = serializers.ChoiceField(choices=CohortKind.choices, required=False, allow_null=True)
    started_at = AwareDateTimeField()
    finished_at = AwareDateTimeField()
    conversations = StrictIntegerField(min_value=1, max_value=column_range(EvaluationRun, "conversations")[1])
    guardrail_compensations = StrictIntegerField(
        min_value=0,
        max_value=column_range(EvaluationRun, "guardrail_compensations")[1],
        help_text="At most ``conversations``.",
    )
    metrics = MetricsSerializer(required=False)
    harness_version = serializers.CharField(max_length=100)
    outputs = serializers.ListField(child=OutputField(), required=False, max_length=MAX_OUTPUTS_PER_RUN)

    def validate(self, attrs: dict) -> dict:
        errors: dict[str, list[str]] = {}
        if attrs["guardrail_compensations"] > attrs["conversations"]:
            errors["guardrail_compensations"] = ["Cannot exceed conversations."]
        if attrs["finished_at"] < attrs["started_at"]:
            errors["finished_at"] = ["A run cannot finish before it started."]
        elif attrs["finished_at"] > timezone.now() + CLOCK_SKEW:
            errors["finished_at"] = ["finished_at is in the future."]
        seen: set[str] = set()
        for index, output in enumerate(attrs.get("outputs") or []):
            if output["conversation_id"] in seen:
                errors.setdefault("outputs", []).append(
                    f"Output {index}: conversation_id {output['conversation_id']!r} appears twice."
                )
            seen.add(output["conversation_id"])
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class EvaluationRunBatchSerializer(StrictSerializer):
    """1 to 500 runs, stored all or nothing."""

    runs = EvaluationRunInSerializer(many=True, min_length=1, max_length=MAX_RUNS_PER_REQUEST)


# --- The fast path for well-formed run batches ---------------------------------------------------------------------

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,80}")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_RUN_REQUIRED = frozenset(
    {
        "run_id",
        "rollout",
        "phase",
        "arm",
        "started_at",
        "finished_at",
        "conversations",
        "guardrail_compensations",
        "harness_version",
    }
)
_RUN_KEYS = _RUN_REQUIRED | {"cohort", "metrics", "outputs"}
_PHASES = frozenset(PhaseKind.values)
_ARMS = frozenset(Arm.values)
_COHORTS = frozenset(CohortKind.values)
_CONVERSATIONS = (1, column_range(EvaluationRun, "conversations")[1])
_COMPENSATIONS = (0, column_range(EvaluationRun, "guardrail_compensations")[1])
_METRIC_MAX = {key: 1.0 if spec.unit == "ratio" else math.inf for key, spec in METRICS.items()}
_MOMENT = AwareDateTimeField()


class _NotFast(Exception):
    """The fast path is unsure: the serializers decide (and word the errors)."""


def _fast_int(value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _NotFast
    return value


def _fast_moment(value: Any) -> dt.datetime:
    if type(value) is not str:
        raise _NotFast
    try:
        return _MOMENT.to_internal_value(value)
    except serializers.ValidationError:
        raise _NotFast from None


def _fast_metrics(data: Any) -> dict[str, float | None]:
    if type(data) is not dict:
        raise _NotFast
    out: dict[str, float | None] = {}
    for key, value in data.items():
        high = _METRIC_MAX.get(key)
        if high is None:
            raise _NotFast
        if value is None:
            out[key] = None
            continue
        kind = type(value)
        if kind is int:
            if not -(2**53) <= value <= 2**53:
                raise _NotFast
            value = float(value)
        elif kind is not float or not math.isfinite(value):
            raise _NotFast
        if not 0.0 <= value <= high:
            raise _NotFast
        out[key] = value
    return out


def _fast_run(data: Any, latest: dt.datetime) -> dict[str, Any]:
    if type(data) is not dict or not data.keys() >= _RUN_REQUIRED or not data.keys() <= _RUN_KEYS:
        raise _NotFast
    run_id, rollout, phase, arm = data["run_id"], data["rollout"], data["phase"], data["arm"]
    if type(run_id) is not str or not _RUN_ID.fullmatch(run_id):
        raise _NotFast
    if type(rollout) is not str or not _SLUG.fullmatch(rollout):
        raise _NotFast
    if type(phase) is not str or phase not in _PHASES or type(arm) is not str or arm not in _ARMS:
        raise _NotFast
    version = data["harness_version"]
    if type(version) is not str or not 0 < len(version) <= 100 or version != version.strip():
        raise _NotFast
    if _BAD_TEXT.search(version):
        raise _NotFast
    out: dict[str, Any] = {"run_id": run_id, "rollout": rollout, "phase": phase, "arm": arm}
    if "cohort" in data:
        cohort = data["cohort"]
        if cohort is not None and (type(cohort) is not str or cohort not in _COHORTS):
            raise _NotFast
        out["cohort"] = cohort
    out["started_at"] = started = _fast_moment(data["started_at"])
    out["finished_at"] = finished = _fast_moment(data["finished_at"])
    out["conversations"] = conversations = _fast_int(data["conversations"], *_CONVERSATIONS)
    out["guardrail_compensations"] = _fast_int(data["guardrail_compensations"], *_COMPENSATIONS)
    if out["guardrail_compensations"] > conversations or finished < started or finished > latest:
        raise _NotFast
    if "metrics" in data:
        out["metrics"] = _fast_metrics(data["metrics"])
    out["harness_version"] = version
    if "outputs" in data:
        outputs = data["outputs"]
        if type(outputs) is not list or len(outputs) > MAX_OUTPUTS_PER_RUN:
            raise _NotFast
        seen: set[str] = set()
        for output in outputs:
            if type(output) is not dict:
                raise _NotFast
            cid = output.get("conversation_id")
            if type(cid) is not str or not 0 < len(cid) <= 200 or cid in seen:
                raise _NotFast
            seen.add(cid)
        out["outputs"] = list(outputs)
    return out


def fast_validated_runs(payload: Any) -> list[dict[str, Any]] | None:
    """What ``EvaluationRunBatchSerializer(data=payload).validated_data["runs"]`` is, for a batch that is plainly
    valid (JSON types exactly as documented, nothing near a limit); None when unsure, and the serializers decide.

    DRF's field machinery costs about 60 us a run (30 ms a 500-run request, as much as storing it); this checks the
    same rules directly. It accepts nothing the serializers refuse and gives the same values
    (``tests/evaluations/test_api_ingest.py`` compares the two on valid and invalid runs); any doubt falls back.
    """
    if type(payload) is not dict or payload.keys() != {"runs"}:
        return None
    runs = payload["runs"]
    if type(runs) is not list or not 0 < len(runs) <= MAX_RUNS_PER_REQUEST:
        return None
    # Taken before any run is looked at: the serializer's "in the future" check reads the clock later, so a
    # moment this refuses near the limit goes to the serializer, never the other way round.
    latest = timezone.now() + CLOCK_SKEW
    try:
        return [_fast_run(item, latest) for item in runs]
    except _NotFast:
        return None


class MonitoringSampleInSerializer(StrictSerializer):
    """One monitoring interval's p95 latency and request count, for a phase that has started."""

    rollout = serializers.SlugField(max_length=80)
    phase = serializers.ChoiceField(choices=PhaseKind.choices, help_text="A phase that has started.")
    interval_start = AwareDateTimeField()
    interval_end = AwareDateTimeField()
    latency_p95_ms = StrictFloatField(min_value=0.0)
    requests = StrictIntegerField(min_value=0, max_value=column_range(MonitoringSample, "requests")[1])

    def validate(self, attrs: dict) -> dict:
        if attrs["interval_end"] <= attrs["interval_start"]:
            raise serializers.ValidationError({"interval_end": ["Must be after interval_start."]})
        if attrs["interval_end"] > timezone.now() + CLOCK_SKEW:
            raise serializers.ValidationError({"interval_end": ["interval_end is in the future."]})
        return attrs


class MonitoringSampleBatchSerializer(StrictSerializer):
    """1 to 1,000 intervals, stored all or nothing."""

    samples = MonitoringSampleInSerializer(many=True, min_length=1, max_length=MAX_SAMPLES_PER_REQUEST)


def error_pointers(errors: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested ``errors`` as a flat list of ``{"pointer", "message"}`` (JSON Pointers into the body)."""
    out: list[dict[str, str]] = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key in ("non_field_errors", "__all__"):
                out.extend(error_pointers(value, prefix))
            else:
                token = str(key).replace("~", "~0").replace("/", "~1")
                out.extend(error_pointers(value, f"{prefix}/{token}"))
    elif isinstance(errors, list | tuple):
        if all(isinstance(e, str) for e in errors):
            out.extend({"pointer": prefix, "message": str(e)} for e in errors)
        else:
            for index, value in enumerate(errors):
                if value:
                    out.extend(error_pointers(value, f"{prefix}/{index}"))
    elif errors:
        out.append({"pointer": prefix, "message": str(errors)})
    return out


def openapi_postprocess(result: dict, generator, request, public) -> dict:
    """drf-spectacular hook: say in the schema what the serializers enforce but drf-spectacular does not emit
    (unknown keys refused; the batch sizes)."""
    schemas = result.get("components", {}).get("schemas", {})
    for name in (
        "EvaluationRunBatchRequest",
        "EvaluationRunInRequest",
        "MetricsRequest",
        "MonitoringSampleBatchRequest",
        "MonitoringSampleInRequest",
    ):
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    for name, key, limit in (
        ("EvaluationRunBatchRequest", "runs", MAX_RUNS_PER_REQUEST),
        ("MonitoringSampleBatchRequest", "samples", MAX_SAMPLES_PER_REQUEST),
    ):
        if name in schemas:
            schemas[name]["properties"][key].update(minItems=1, maxItems=limit)
    return result
