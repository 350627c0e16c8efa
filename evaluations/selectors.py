"""Reads over evaluation runs: gates first (the governance app reads them)."""

from __future__ import annotations

from dataclasses import dataclass

from rollout.models import PhaseKind, Rollout

from .models import Arm, EvaluationRun, SuccessCriterion


@dataclass(frozen=True)
class RunCheck:
    run: EvaluationRun
    failed: tuple[str, ...]  # metrics that missed their criterion

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class GaGate:
    """The GA gate: the last N limited-beta candidate runs each meet every success criterion."""

    required: int
    streak: int
    checks: tuple[RunCheck, ...]  # the last ``required`` runs, newest first

    @property
    def passed(self) -> bool:
        return self.streak >= self.required

    def __str__(self) -> str:
        return f"{self.streak} of {self.required} consecutive passing runs"


def check_run(run: EvaluationRun, criteria: list[SuccessCriterion]) -> RunCheck:
    return RunCheck(run=run, failed=tuple(c.metric for c in criteria if not c.is_met_by(run.metric(c.metric))))


def ga_gate(rollout: Rollout) -> GaGate:
    """Two queries whatever the number of runs."""
    required = rollout.ga_consecutive_runs
    criteria = list(SuccessCriterion.objects.filter(rollout=rollout))
    runs = EvaluationRun.objects.filter(
        rollout=rollout, phase__kind=PhaseKind.LIMITED_BETA, arm=Arm.CANDIDATE
    ).order_by("-finished_at", "-id")[:required]
    checks = tuple(check_run(run, criteria) for run in runs)
    streak = 0
    for check in checks:
        if not check.passed:
            break
        streak += 1
    return GaGate(required=required, streak=streak, checks=checks)
