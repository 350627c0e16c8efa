"""Demo data for ``make run``: a user per role, tenants, and the playbook's rollout in canary.

Every write goes through the services; running it again finds what exists and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from . import services
from .models import (
    ChecklistKind,
    CohortKind,
    CommunicationKind,
    FeedbackSeverity,
    PhaseKind,
    Rollout,
    Tenant,
)
from .roles import Role
from .selectors import prelaunch_draft

MAIN_SLUG = "react-multi-agent"
SECOND_SLUG = "voice-insights-expansion"

TENANTS: tuple[tuple[str, str, bool, str, str], ...] = (
    # name, tier, transcript ingestion confirmed, account manager, email
    ("Acme Internal QA", CohortKind.INTERNAL, True, "", ""),
    ("Support Sandbox", CohortKind.INTERNAL, False, "", ""),
    ("Northwind Health", CohortKind.BETA, True, "Dana Whitfield", "dana.whitfield@example.com"),
    ("Globex Retail", CohortKind.BETA, False, "Ravi Menon", "ravi.menon@example.com"),
    ("Initech Finance", CohortKind.BETA, True, "Dana Whitfield", "dana.whitfield@example.com"),
    ("Umbrella Logistics", CohortKind.GENERAL, False, "", ""),
    ("Stark Media", CohortKind.GENERAL, True, "", ""),
    ("Wayne Energy", CohortKind.GENERAL, False, "", ""),
    ("Hooli Cloud", CohortKind.GENERAL, False, "", ""),
)


@dataclass
class SeedResult:
    created: list[str] = field(default_factory=list)
    usernames: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.created:
            return "Demo data already present: nothing changed."
        return "Demo data loaded: " + ", ".join(self.created) + "."


def _users(password: str, result: SeedResult) -> dict[str, object]:
    User = get_user_model()
    users = {}
    for role in Role:
        user, created = User.objects.get_or_create(
            username=role.value, defaults={"email": f"{role.value}@example.com", "first_name": role.label}
        )
        if created:
            user.set_password(password)
            user.save(update_fields=["password"])
            user.groups.add(Group.objects.get(name=role.value))
            result.created.append(f"user {role.value}")
        users[role.value] = user
        result.usernames.append(role.value)
    admin, created = User.objects.get_or_create(
        username="admin", defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True}
    )
    if created:
        admin.set_password(password)
        admin.save(update_fields=["password"])
        result.created.append("superuser admin")
    result.usernames.append("admin")
    return users


def _tenants(result: SeedResult) -> None:
    for name, tier, confirmed, manager, email in TENANTS:
        if not Tenant.objects.filter(name=name).exists():
            services.tenant_create(
                name=name,
                tier=tier,
                transcript_ingestion_confirmed=confirmed,
                account_manager=manager,
                account_manager_email=email,
                reason="Demo data",
            )
            result.created.append(f"tenant {name}")


# The main rollout's timeline, in days before the seed: created (preparation entered), then canary entered. The
# demo runs (evaluations/demo.py) lie inside these periods: preparation runs 9 to 5 days back, canary runs from
# 4 days back, so the canary has soaked well past its 48 h and the pending limited-beta request can be applied
# once approved.
CREATED_DAYS_AGO = 10.0
CANARY_DAYS_AGO = 4.5

# How the main rollout gets into canary, at the given moment. The top app passes its own (sign-offs, an
# approved and applied transition request, each dated before it); this app alone advances directly.
EnterCanary = Callable[[Rollout, dict, dt.datetime], None]


def _advance_directly(rollout: Rollout, users: dict, at: dt.datetime) -> None:
    services.rollout_advance(
        rollout=rollout, to=PhaseKind.CANARY, actor=users[Role.ROLLOUT_ADMIN], reason="Demo: canary started", now=at
    )


def _main_rollout(users: dict, result: SeedResult, enter_canary: EnterCanary) -> None:
    if Rollout.objects.filter(slug=MAIN_SLUG).exists():
        return
    admin = users[Role.ROLLOUT_ADMIN]
    now = timezone.now()
    rollout = services.rollout_create_from_playbook(
        now=now - dt.timedelta(days=CREATED_DAYS_AGO),
        name="ReAct + multi-agent assistant",
        slug=MAIN_SLUG,
        owner=admin,
        description="Move the AI assistant from the legacy single-agent pipeline to the ReAct + multi-agent stack.",
        expected_impacts=(
            "Slightly longer first-token latency while the planner runs; better multi-step task success; "
            "voice insights for tenants with confirmed transcript ingestion."
        ),
    )
    for item in rollout.checklist_items.filter(kind=ChecklistKind.READINESS):
        services.checklist_item_tick(
            item=item, actor=admin, evidence_url=f"https://wiki.example.com/ai-assistant/readiness/{item.key}"
        )
    title, body = prelaunch_draft(rollout)
    services.communication_create(
        rollout=rollout, kind=CommunicationKind.PRELAUNCH, title=title, body=body, actor=admin, publish=True
    )
    enter_canary(rollout, users, now - dt.timedelta(days=CANARY_DAYS_AGO))
    services.communication_create(
        rollout=rollout,
        kind=CommunicationKind.STATUS_UPDATE,
        title="Canary started for internal QA tenants",
        body="The ReAct loop, multi-agent runner and critic revision are on for **internal tenants**. "
        "We watch evaluation runs, guardrail compensations and latency alerts for 48 hours.",
        actor=admin,
        publish=True,
    )
    canary = rollout.phases.get(kind=PhaseKind.CANARY)
    support = users[Role.SUPPORT_LEAD]
    services.phase_feedback_add(
        phase=canary,
        actor=support,
        severity=FeedbackSeverity.MEDIUM,
        text="Planner sometimes asks a clarifying question twice on refund flows.",
        link="https://tracker.example.com/AI-431",
    )
    services.phase_feedback_add(
        phase=canary,
        actor=support,
        severity=FeedbackSeverity.LOW,
        text="Critic revisions read well; answers are noticeably more complete.",
    )
    result.created.append(f"rollout {MAIN_SLUG} (canary active)")


def _second_rollout(users: dict, result: SeedResult) -> None:
    if Rollout.objects.filter(slug=SECOND_SLUG).exists():
        return
    admin = users[Role.ROLLOUT_ADMIN]
    rollout = services.rollout_create_from_playbook(
        name="Voice insights expansion",
        slug=SECOND_SLUG,
        owner=admin,
        description="Second wave: voice insights for every tenant with confirmed transcript ingestion.",
    )
    for item in rollout.checklist_items.filter(kind=ChecklistKind.READINESS).order_by("order")[:5]:
        services.checklist_item_tick(
            item=item, actor=admin, evidence_url=f"https://wiki.example.com/voice/readiness/{item.key}"
        )
    result.created.append(f"rollout {SECOND_SLUG} (preparation)")


@transaction.atomic
def seed_demo(*, password: str = "demo", enter_canary: EnterCanary = _advance_directly) -> SeedResult:  # noqa: S107
    result = SeedResult()
    users = _users(password, result)
    _tenants(result)
    _main_rollout(users, result, enter_canary)
    _second_rollout(users, result)
    return result
