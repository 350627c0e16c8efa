"""The API's rollout detail: status, phases, the gates of the next step and the trigger streaks.

It lives in governance because the gates are governance's (sign-offs, approvals):
the same ``selectors.gates_for`` the request page shows, so the API and the
pages never disagree. The rest of the API is in ``evaluations.api``.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from evaluations.api import ApiView, PhaseOutSerializer, problem_responses
from evaluations.selectors import ga_gate, trigger_statuses
from rollout.models import PhaseStatus, Rollout

from .selectors import gates_for, next_step

GateSerializer = inline_serializer(
    "Gate",
    {
        "key": serializers.CharField(),
        "label": serializers.CharField(),
        "passed": serializers.BooleanField(),
        "detail": serializers.CharField(help_text='Why, e.g. "readiness 12/12" or "canary soak 31 h of 48 h".'),
    },
    many=True,
)


class RolloutDetailSerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    current_phase = serializers.CharField(allow_null=True)
    phases = PhaseOutSerializer(many=True)
    next_step = serializers.CharField(
        allow_null=True, help_text="The one transition the rollout can be asked to make next (or null)."
    )
    next_step_kind = serializers.ChoiceField(
        choices=["advance", "reentry"],
        help_text="advance: into the next phase; reentry: after a rollback, back into the rolled-back phase.",
    )
    gates = GateSerializer
    gates_pass = serializers.BooleanField(help_text="Every automated gate of the next step passes.")
    ga_gate = inline_serializer(
        "GaGate",
        {
            "required": serializers.IntegerField(),
            "streak": serializers.IntegerField(),
            "passed": serializers.BooleanField(),
        },
    )
    triggers = inline_serializer(
        "TriggerStreak",
        {
            "trigger": serializers.CharField(),
            "threshold": serializers.CharField(),
            "required": serializers.IntegerField(),
            "streak": serializers.IntegerField(),
            "last_fired_at": serializers.DateTimeField(allow_null=True),
        },
        many=True,
    )


class RolloutDetailView(ApiView):
    @extend_schema(
        operation_id="rollouts_retrieve",
        summary="A rollout: status, phases, the gates of its next step, GA streak and trigger streaks",
        responses={200: RolloutDetailSerializer, **problem_responses(401, 403, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        # The phases into the rollout's prefetch cache: the gates read them from there instead of again.
        rollout = get_object_or_404(Rollout.objects.prefetch_related("phases"), slug=slug)
        phases = list(rollout.phases.all())
        current = next((p for p in phases if p.status == PhaseStatus.ACTIVE), None)
        target, kind = next_step(rollout, current)
        gates = gates_for(rollout, target, kind=kind) if target else []
        ga = ga_gate(rollout)
        data = {
            "slug": rollout.slug,
            "name": rollout.name,
            "status": rollout.status,
            "current_phase": current.kind if current else None,
            "phases": phases,
            "next_step": target,
            "next_step_kind": kind,
            "gates": [{"key": g.key, "label": g.label, "passed": g.passed, "detail": g.detail} for g in gates],
            "gates_pass": bool(gates) and all(g.passed for g in gates),
            "ga_gate": {"required": ga.required, "streak": ga.streak, "passed": ga.passed},
            "triggers": [
                {
                    "trigger": t.trigger,
                    "threshold": t.threshold,
                    "required": t.required,
                    "streak": t.streak,
                    "last_fired_at": t.last_firing.fired_at if t.last_firing else None,
                }
                for t in trigger_statuses(rollout, current)
            ],
        }
        return Response(RolloutDetailSerializer(data).data)
