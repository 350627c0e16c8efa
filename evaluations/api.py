"""The REST API under ``/api/v1/``: the evaluation harness pushes, the configuration service and others read.

Authentication is a bearer token (``evaluations.ApiToken``) and nothing else:
a token reaches only the API, and the HTML pages never accept one. Each
view parses, calls one service or selector, and answers; errors are
problem+json (``evaluations.problems``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.db.models import OuterRef, Subquery
from django.shortcuts import get_object_or_404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.db_router import replica_reads
from rollout import selectors as rollout_selectors
from rollout.context import acting_as, current_actor
from rollout.models import Phase, PhaseStatus, Rollout

from . import selectors, services
from .authentication import BearerTokenAuthentication, HasScope
from .models import METRICS, ApiScope
from .schemas import EvaluationRunBatchSerializer, MonitoringSampleBatchSerializer


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "evaluations.authentication.BearerTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (scopes: ingest, read), created by an admin or `manage.py create_api_token`.",
        }


class ApiView(APIView):
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [HasScope]
    required_scope: str = ApiScope.READ

    @classmethod
    def as_view(cls, **initkwargs):
        # The API authenticates by token, not by session: the login-required middleware must let it through.
        return login_not_required(super().as_view(**initkwargs))

    def dispatch(self, request, *args, **kwargs):
        # The token's actor lasts for this request only, not for the next one served by this thread.
        with acting_as(current_actor()):
            return super().dispatch(request, *args, **kwargs)


# --- Shared schema pieces --------------------------------------------------------------------


class ProblemSerializer(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField()
    code = serializers.CharField()
    errors = inline_serializer(
        "ProblemFieldError", {"pointer": serializers.CharField(), "message": serializers.CharField()}, many=True
    )


def problem_responses(*statuses: int) -> dict[tuple[int, str], OpenApiResponse]:
    text = {
        400: "Malformed JSON, JSON nested too deeply, or a query parameter that cannot be read",
        401: "Missing, unknown, expired or revoked token",
        403: "The token lacks the scope",
        404: "Not found (for an ingest: a rollout the body names does not exist; `errors` points at it)",
        409: "A run_id (or interval) already ingested with different content",
        411: "Chunked body on a server that cannot read it",
        413: "Body over the limit (also chunked bodies)",
        415: "Not JSON",
        422: "Validation failed, or a run or interval that ended while its phase was not active (or names a cohort "
        "the phase does not expose); `errors` points at each bad field",
        429: "Over the token's or the client address's rate; `Retry-After` says when to retry",
    }
    # Any operation can meet the input boundary (a NUL in a query parameter) and the throttles.
    every = sorted({*statuses, 400, 429})
    return {(s, "application/problem+json"): OpenApiResponse(ProblemSerializer, description=text[s]) for s in every}


# What rollout.inputs enforces on every body, in words (JSON Schema cannot say it of free-form outputs).
INPUT_RULES = (
    "No string or key holds a NUL character or a lone surrogate; JSON nests at most 64 levels; times lie between "
    "0001-01-02 and 9999-12-30 UTC; integers fit 32 bits."
)


class IngestResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    created_ids = serializers.ListField(child=serializers.CharField())
    duplicate_ids = serializers.ListField(child=serializers.CharField())


# --- Ingestion ------------------------------------------------------------------------------------


class EvaluationRunIngestView(ApiView):
    required_scope = ApiScope.INGEST

    @extend_schema(
        operation_id="evaluation_runs_ingest",
        summary="Ingest harness runs (1 to 500 per request)",
        description="All or nothing. Idempotent on run_id: the same run again is a duplicate; the same run_id with "
        "different content is a 409 and nothing of the request is stored. " + INPUT_RULES + " finished_at is not "
        "before started_at nor in the future; guardrail_compensations is at most conversations; conversation_id is "
        "unique within a run. An unknown rollout is a 404. finished_at must lie in one of the phase's activity periods "
        "(422 at finished_at, saying when the phase was active); a cohort, when given, must be one the phase exposes "
        "(422 at cohort). A run for a period that has ended is accepted as a late arrival: shown, never counted by a "
        "live trigger, the soak or the GA streak.",
        request=EvaluationRunBatchSerializer,
        responses={201: IngestResultSerializer, **problem_responses(400, 401, 403, 404, 409, 411, 413, 415, 422)},
    )
    def post(self, request: Request) -> Response:
        result = services.ingest_runs(payload=request.data, actor=current_actor())
        return Response(result.as_dict(), status=201)


class MonitoringSampleIngestView(ApiView):
    required_scope = ApiScope.INGEST

    @extend_schema(
        operation_id="monitoring_samples_ingest",
        summary="Ingest monitoring intervals (1 to 1,000 per request)",
        description="All or nothing; idempotent on (rollout, phase, interval_start). " + INPUT_RULES + " interval_end "
        "is after interval_start and not in the future. An unknown rollout is a 404. interval_end must lie in one of "
        "the phase's activity periods (422 at interval_end, saying when the phase was active).",
        request=MonitoringSampleBatchSerializer,
        responses={201: IngestResultSerializer, **problem_responses(400, 401, 403, 404, 409, 411, 413, 415, 422)},
    )
    def post(self, request: Request) -> Response:
        result = services.ingest_samples(payload=request.data, actor=current_actor())
        return Response(result.as_dict(), status=201)


# --- Reads -------------------------------------------------------------------------------------


class PhaseOutSerializer(serializers.Serializer):
    kind = serializers.CharField()
    order = serializers.IntegerField()
    status = serializers.CharField()
    planned_start = serializers.DateField(allow_null=True)
    entered_at = serializers.DateTimeField(allow_null=True)
    exited_at = serializers.DateTimeField(allow_null=True)
    guardrail_mode = serializers.CharField()


class RolloutSummarySerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    current_phase = serializers.CharField(source="current_phase_kind", allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RolloutListView(ListAPIView, ApiView):
    serializer_class = RolloutSummarySerializer

    def get_queryset(self):
        active = Phase.objects.filter(rollout=OuterRef("pk"), status=PhaseStatus.ACTIVE)
        return Rollout.objects.annotate(current_phase_kind=Subquery(active.values("kind")[:1])).order_by(
            "-created_at", "-id"
        )

    @extend_schema(
        operation_id="rollouts_list",
        responses={200: RolloutSummarySerializer(many=True), **problem_responses(400, 401, 403, 404)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _rollout(slug: str) -> Rollout:
    return get_object_or_404(Rollout, slug=slug)


class FlagStateSerializer(serializers.Serializer):
    rollout = serializers.CharField()
    status = serializers.CharField()
    cohorts = inline_serializer(
        "CohortFlags",
        {
            "cohort": serializers.CharField(),
            "name": serializers.CharField(),
            "tenants": inline_serializer(
                "TenantFlags",
                {
                    "tenant": serializers.CharField(),
                    "name": serializers.CharField(),
                    "flags": serializers.DictField(child=serializers.BooleanField()),
                },
                many=True,
            ),
        },
        many=True,
    )


class RolloutFlagsView(ApiView):
    @extend_schema(
        operation_id="rollouts_flags",
        summary="Desired flag state per cohort and tenant (for the configuration service)",
        responses={200: FlagStateSerializer, **problem_responses(401, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        return Response(rollout_selectors.desired_flag_state(_rollout(slug)))


def _arm(stats) -> dict[str, Any]:
    return {"n": stats.n, "mean": stats.mean, "sd": stats.sd}


ArmSerializer = inline_serializer(
    "ArmStats",
    {
        "n": serializers.IntegerField(),
        "mean": serializers.FloatField(allow_null=True),
        "sd": serializers.FloatField(allow_null=True),
    },
)


class MetricDeltaSerializer(serializers.Serializer):
    metric = serializers.CharField()
    unit = serializers.CharField()
    direction = serializers.CharField()
    baseline = ArmSerializer
    candidate = ArmSerializer
    delta = serializers.FloatField(allow_null=True)
    relative_delta = serializers.FloatField(allow_null=True)
    ci95_low = serializers.FloatField(allow_null=True)
    ci95_high = serializers.FloatField(allow_null=True)
    verdict = serializers.ChoiceField(choices=["improved", "regressed", "no clear change", "not enough data"])
    criterion = serializers.CharField(allow_null=True)
    meets_criterion = serializers.BooleanField(allow_null=True)


class PhaseDeltasSerializer(serializers.Serializer):
    phase = serializers.CharField()
    status = serializers.CharField()
    runs = serializers.IntegerField()
    metrics = MetricDeltaSerializer(many=True)


class DeltasSerializer(serializers.Serializer):
    rollout = serializers.CharField()
    phases = PhaseDeltasSerializer(many=True)


def deltas_json(report: selectors.DeltaReport) -> dict[str, Any]:
    return {
        "rollout": report.rollout.slug,
        "phases": [
            {
                "phase": p.phase.kind,
                "status": p.phase.status,
                "runs": p.runs,
                "metrics": [
                    {
                        "metric": m.spec.key,
                        "unit": m.spec.unit,
                        "direction": m.spec.direction,
                        "baseline": _arm(m.baseline),
                        "candidate": _arm(m.candidate),
                        "delta": m.comparison.delta,
                        "relative_delta": m.comparison.relative,
                        "ci95_low": m.comparison.ci_low,
                        "ci95_high": m.comparison.ci_high,
                        "verdict": m.comparison.verdict,
                        "criterion": str(m.criterion) if m.criterion else None,
                        "meets_criterion": m.meets_criterion,
                    }
                    for m in p.metrics
                ],
            }
            for p in report.phases
        ],
    }


class RolloutDeltasView(ApiView):
    @extend_schema(
        operation_id="rollouts_deltas",
        summary="Deltas by phase: both arms, Welch 95% CI of candidate - baseline, verdict, criterion",
        responses={200: DeltasSerializer, **problem_responses(401, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        # A report that looks back: the replica's (authentication and throttles above ran on the primary).
        with replica_reads():
            return Response(deltas_json(selectors.deltas(_rollout(slug))))


class RunOutSerializer(serializers.Serializer):
    run_id = serializers.CharField()
    rollout = serializers.CharField(source="rollout.slug")
    phase = serializers.CharField(source="phase.kind")
    arm = serializers.CharField()
    cohort = serializers.CharField(source="cohort.kind", allow_null=True, default=None)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()
    conversations = serializers.IntegerField()
    guardrail_compensations = serializers.IntegerField()
    harness_version = serializers.CharField()
    metrics = serializers.SerializerMethodField()
    output_count = serializers.IntegerField()
    outputs_purged_at = serializers.DateTimeField(allow_null=True)
    ingested_at = serializers.DateTimeField()

    def get_metrics(self, run) -> dict[str, float]:
        return {key: run.metric(key) for key in METRICS if run.metric(key) is not None}


class EvaluationRunDetailView(ApiView):
    @extend_schema(
        operation_id="evaluation_runs_retrieve",
        summary="A run, its metrics, its output count and when its outputs were purged",
        responses={200: RunOutSerializer, **problem_responses(401, 403, 404)},
    )
    def get(self, request: Request, run_id: str) -> Response:
        return Response(RunOutSerializer(selectors.run_detail(run_id)).data)
