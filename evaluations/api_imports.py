"""``/api/v1/imports/``: the files Inspect AI and promptfoo write, posted as they are, become evaluation runs.

The body is the file; what it does not say (rollout, phase, arm, cohort, a mapping) comes as query
parameters. The importers build run objects and send them through the same ingest service as
``POST /api/v1/evaluation-runs/``: all or nothing, idempotent, problem+json on every refusal.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from rollout.context import current_actor
from rollout.inputs import InputRejected, load_json
from rollout.models import CohortKind, PhaseKind

from .api import INPUT_RULES, ApiView, IngestResultSerializer, problem_responses
from .errors import ImportRefused, InvalidParameter
from .importers.inspect_logs import import_inspect_logs
from .importers.promptfoo_results import import_promptfoo_results
from .models import ApiScope, Arm
from .parsers import BoundaryJSONParser, JSONFileParser, OctetStreamParser, ZipFileParser


class ImportResultSerializer(IngestResultSerializer):
    dry_run = serializers.BooleanField()
    runs = serializers.ListField(
        child=serializers.DictField(), help_text="Each run as it was sent to the ingest, its outputs counted."
    )
    notes = serializers.ListField(child=serializers.CharField(), help_text="Defaults taken, samples left out.")


def _choices(enum) -> list[str]:
    return [value for value, _label in enum.choices]


def _rollout(required: bool = False) -> OpenApiParameter:
    return OpenApiParameter(
        "rollout", OpenApiTypes.STR, description="The rollout's slug.", pattern=r"^[-a-zA-Z0-9_]+$", required=required
    )


def _phase(required: bool = False) -> OpenApiParameter:
    return OpenApiParameter(
        "phase", OpenApiTypes.STR, enum=_choices(PhaseKind), description="A phase that has started.", required=required
    )


ARM = OpenApiParameter("arm", OpenApiTypes.STR, enum=_choices(Arm))
COHORT = OpenApiParameter("cohort", OpenApiTypes.STR, enum=_choices(CohortKind), description="Optional.")
MAPPING = OpenApiParameter(
    "mapping",
    OpenApiTypes.STR,
    description="A mapping as a JSON object (the same as the commands' --mapping file), URL-encoded.",
)
DRY_RUN = OpenApiParameter("dry_run", OpenApiTypes.BOOL, description="Check everything, store nothing.")
BINARY = {"type": "string", "format": "binary"}


def _params(request: Request, *names: str) -> dict[str, Any]:
    return {name: request.query_params.get(name) or None for name in names}


def _mapping(request: Request) -> dict[str, Any] | None:
    raw = request.query_params.get("mapping")
    if not raw:
        return None
    try:
        mapping = load_json(raw)
    except InputRejected as exc:
        raise InvalidParameter(f"mapping must be a JSON object: {exc.message}", field="mapping") from exc
    if not isinstance(mapping, dict):
        raise InvalidParameter("mapping must be a JSON object.", field="mapping")
    return mapping


def _dry_run(request: Request) -> bool:
    raw = request.query_params.get("dry_run", "false").lower()
    if raw not in {"true", "false", "1", "0"}:
        raise InvalidParameter("dry_run must be true or false.", field="dry_run")
    return raw in {"true", "1"}


class InspectImportView(ApiView):
    required_scope = ApiScope.INGEST
    parser_classes = [ZipFileParser, OctetStreamParser, JSONFileParser]

    @extend_schema(
        operation_id="imports_inspect",
        summary="Import an Inspect AI log (.eval or JSON) as one evaluation run",
        description="The body is the log file as Inspect wrote it: the `.eval` format (a zip, zstd or deflate; "
        "`application/zip` or `application/octet-stream`) or `--log-format json` (`application/json`). rollout, "
        "phase, arm and cohort default to the log's eval.metadata, then its task_args. The run id is "
        "`inspect-<eval_id>`: the same log again is a duplicate. A log that errored or was cancelled, or lacks what "
        "the mapping needs, is a 422 (`import-refused`); the run built from it is checked as POST "
        "/api/v1/evaluation-runs/ checks it (" + INPUT_RULES + ") 501 when inspect-ai is not installed.",
        parameters=[_rollout(), _phase(), ARM, COHORT, MAPPING, DRY_RUN],
        request={"application/zip": BINARY, "application/octet-stream": BINARY, "application/json": BINARY},
        responses={201: ImportResultSerializer, **problem_responses(400, 401, 403, 404, 409, 411, 413, 415, 422)},
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if not isinstance(data, bytes) or not data:
            raise ImportRefused("The body must be an Inspect log file (.eval or JSON).")
        outcome = import_inspect_logs(
            [("the log", data)],
            options=_params(request, "rollout", "phase", "arm", "cohort"),
            mapping=_mapping(request),
            dry_run=_dry_run(request),
            actor=current_actor(),
        )
        return Response(outcome.as_dict(), status=201)


class PromptfooImportView(ApiView):
    required_scope = ApiScope.INGEST
    parser_classes = [BoundaryJSONParser]

    @extend_schema(
        operation_id="imports_promptfoo",
        summary="Import a promptfoo results file (promptfoo eval -o results.json) as one run per provider",
        description="The body is the JSON that `promptfoo eval -o results.json` writes (results format version 3). "
        "One run per provider, its arm from the mapping's `arms` (provider label or id) or the label itself when "
        "it is `baseline` or `candidate`; run ids `promptfoo-<evalId>-<provider>`: the same file again is a "
        "duplicate. A file of another version, or lacking what the mapping needs, is a 422 (`import-refused`). "
        + INPUT_RULES,
        parameters=[
            _rollout(required=True),
            _phase(required=True),
            COHORT,
            MAPPING,
            DRY_RUN,
        ],
        request={"application/json": {"type": "object", "additionalProperties": True}},
        responses={201: ImportResultSerializer, **problem_responses(400, 401, 403, 404, 409, 411, 413, 415, 422)},
    )
    def post(self, request: Request) -> Response:
        outcome = import_promptfoo_results(
            request.data,
            options=_params(request, "rollout", "phase", "cohort"),
            mapping=_mapping(request),
            dry_run=_dry_run(request),
            actor=current_actor(),
        )
        return Response(outcome.as_dict(), status=201)
