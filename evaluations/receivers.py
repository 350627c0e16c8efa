"""Receivers for the rollout core's signals."""

from __future__ import annotations

from django.dispatch import receiver

from rollout.history import save_tracked
from rollout.signals import rollout_created

from .models import DEFAULT_SUCCESS_CRITERIA, SuccessCriterion


@receiver(rollout_created, dispatch_uid="evaluations.default_success_criteria")
def add_default_success_criteria(sender, rollout, actor, reason, **kwargs) -> None:
    """Runs inside the creating transaction: the rollout and its criteria appear together."""
    for metric, comparator, threshold in DEFAULT_SUCCESS_CRITERIA:
        save_tracked(
            SuccessCriterion(rollout=rollout, metric=metric, comparator=comparator, threshold=threshold),
            actor=actor,
            reason=reason,
        )
