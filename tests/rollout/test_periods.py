"""Issue 9, seam 1: each entry of a phase is an activity period; the services open and close them."""

from __future__ import annotations

import datetime as dt
import importlib

import pytest
from django.apps import apps
from django.utils import timezone

from rollout import services
from rollout.models import Phase, PhasePeriod, PhaseStatus
from rollout.roles import Role
from tests.factories import advance_to, complete_readiness

pytestmark = pytest.mark.django_db


def periods(rollout) -> list[tuple[str, int, bool, str]]:
    return [
        (p.phase.kind, p.ordinal, p.exited_at is not None, p.ended)
        for p in PhasePeriod.objects.filter(phase__rollout=rollout).select_related("phase").order_by("entered_at", "id")
    ]


def test_entering_leaving_rolling_back_and_re_entering_keep_periods_and_phase_bounds(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    assert periods(rollout) == [("preparation", 1, False, "")]
    complete_readiness(rollout, admin)
    advance_to(rollout, "canary", admin)
    services.rollout_rollback(rollout=rollout, actor=admin, reason="Refund loop")
    services.rollout_resume(rollout=rollout, actor=admin, reason="Fixed")
    assert periods(rollout) == [
        ("preparation", 1, True, "completed"),
        ("canary", 1, True, "rolled_back"),
        ("canary", 2, False, ""),
    ]
    canary = rollout.phases.get(kind="canary")
    current = PhasePeriod.objects.get(phase=canary, ordinal=2)
    first = PhasePeriod.objects.get(phase=canary, ordinal=1)
    # Phase.entered_at/exited_at are the current period's bounds.
    assert (canary.entered_at, canary.exited_at) == (current.entered_at, None)
    assert first.exited_at <= current.entered_at
    services.rollout_cancel(rollout=rollout, actor=admin, reason="Superseded")
    assert periods(rollout)[-1] == ("canary", 2, True, "cancelled")


def test_a_backdated_move_cannot_precede_the_current_phase_nor_lie_in_the_future(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    from rollout.errors import InvalidTransition

    for at in (timezone.now() - dt.timedelta(days=60), timezone.now() + dt.timedelta(hours=1)):
        with pytest.raises(InvalidTransition):
            services.rollout_advance(rollout=rollout, to="canary", actor=admin, reason="x", now=at)
    assert rollout.phases.get(kind="canary").status == PhaseStatus.PENDING


def test_the_data_migration_gives_every_entered_phase_its_period(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    advance_to(rollout, "canary", admin)
    services.rollout_rollback(rollout=rollout, actor=admin, reason="Refund loop")
    PhasePeriod.objects.all().delete()
    migration = importlib.import_module("rollout.migrations.0005_phase_periods")
    migration.periods_for_existing_phases(apps, None)
    prep, canary = (rollout.phases.get(kind=k) for k in ("preparation", "canary"))
    assert [
        (p.phase_id, p.ordinal, p.entered_at, p.exited_at, p.ended)
        for p in PhasePeriod.objects.order_by("phase__order")
    ] == [
        (prep.pk, 1, prep.entered_at, prep.exited_at, "completed"),
        (canary.pk, 1, canary.entered_at, canary.exited_at, "rolled_back"),
    ]
    assert not Phase.objects.filter(rollout=rollout, status=PhaseStatus.PENDING, periods__isnull=False).exists()
