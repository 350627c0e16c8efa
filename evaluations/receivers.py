"""Receivers for the rollout core's signals: default success criteria, and the rollout page's panel."""

from __future__ import annotations

from django.db.models import F
from django.dispatch import receiver

from rollout.history import save_tracked
from rollout.signals import rollout_created, rollout_panels, status_facts

from .models import DEFAULT_SUCCESS_CRITERIA, SuccessCriterion, TriggerFiring


@receiver(rollout_created, dispatch_uid="evaluations.default_success_criteria")
def add_default_success_criteria(sender, rollout, actor, reason, **kwargs) -> None:
    """Runs inside the creating transaction: the rollout and its criteria appear together."""
    for metric, comparator, threshold in DEFAULT_SUCCESS_CRITERIA:
        save_tracked(
            SuccessCriterion(rollout=rollout, metric=metric, comparator=comparator, threshold=threshold),
            actor=actor,
            reason=reason,
        )


@receiver(rollout_panels, dispatch_uid="evaluations.trigger_panel")
def trigger_panel(sender, request, rollout, **kwargs) -> dict:
    """Each trigger's live streak and threshold, the GA gate, and open incidents, on the rollout page."""
    from .selectors import trigger_panel as build

    return {"template": "evaluations/_panel_triggers.html", **build(rollout).__dict__}


@receiver(status_facts, dispatch_uid="evaluations.status_fired_triggers")
def fired_triggers(sender, rollout, **kwargs) -> dict:
    """Triggers that fired in their phase's current activity period (until the phase is re-entered). One query."""
    firings = (
        TriggerFiring.objects.filter(rollout=rollout, fired_at__gte=F("phase__entered_at"))
        .select_related("phase")
        .order_by("fired_at", "id")
    )
    return {
        "problems": [
            f"{f.get_trigger_display()} trigger fired in {f.phase.get_kind_display()} "
            f"at {f.fired_at:%Y-%m-%d %H:%M} UTC"
            for f in firings
        ]
    }
