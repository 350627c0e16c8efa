"""factory-boy factories and small builders shared by the test suites."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from rollout import services
from rollout.models import ChecklistKind, CohortKind, PhaseKind, Rollout, Tenant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pw")


def tenant(name: str, tier: str = CohortKind.GENERAL, confirmed: bool = False) -> Tenant:
    return services.tenant_create(
        name=name,
        tier=tier,
        transcript_ingestion_confirmed=confirmed,
        account_manager="Dana Whitfield" if tier == CohortKind.BETA else "",
    )


def default_tenants() -> dict[str, Tenant]:
    """Two internal, two beta, two general tenants; one of each pair has transcript ingestion confirmed."""
    specs = [
        ("Internal A", CohortKind.INTERNAL, True),
        ("Internal B", CohortKind.INTERNAL, False),
        ("Beta A", CohortKind.BETA, True),
        ("Beta B", CohortKind.BETA, False),
        ("General A", CohortKind.GENERAL, True),
        ("General B", CohortKind.GENERAL, False),
    ]
    return {name: tenant(name, tier, confirmed) for name, tier, confirmed in specs}


def complete_readiness(rollout: Rollout, actor) -> None:
    for item in rollout.checklist_items.filter(kind=ChecklistKind.READINESS, completed_at__isnull=True):
        services.checklist_item_tick(item=item, actor=actor, evidence_url=f"https://evidence.example.com/{item.key}")


def advance_to(rollout: Rollout, kind: str, actor, at=None) -> Rollout:
    """Drive the state machine directly (no governance gates) up to phase ``kind``, entered at ``at`` (now)."""
    from rollout.models import PHASE_SEQUENCE

    for step in PHASE_SEQUENCE[1 : PHASE_SEQUENCE.index(kind) + 1]:
        if rollout.phases.get(kind=step).status == "pending":
            services.rollout_advance(rollout=rollout, to=step, actor=actor, reason=f"test: into {step}", now=at)
    rollout.refresh_from_db()
    return rollout


__all__ = ["PhaseKind", "UserFactory", "advance_to", "complete_readiness", "default_tenants", "tenant"]
