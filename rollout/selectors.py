"""Reads for the rollout pages, each with a fixed number of queries whatever the data size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Case, CharField, Count, F, OuterRef, Prefetch, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Cast, Coalesce, Concat
from django.shortcuts import get_object_or_404

from .models import (
    ChecklistItem,
    ChecklistKind,
    Cohort,
    CohortMembership,
    Communication,
    CommunicationKind,
    EscalationContact,
    FeatureFlag,
    FlagExposure,
    FlagKey,
    Incident,
    IncidentEvent,
    IncidentStatus,
    IncidentStep,
    Phase,
    PhaseFeedback,
    PhaseKind,
    PhasePeriod,
    PhaseStatus,
    Rollout,
    RolloutStatus,
    Tenant,
    WebhookDelivery,
)
from .services import TARGET_COMPLETED, next_target
from .signals import status_facts


def rollout_list() -> QuerySet[Rollout]:
    """Rollouts for the home page, with current phase, readiness and open incidents in SQL."""
    active = Phase.objects.filter(rollout=OuterRef("pk"), status=PhaseStatus.ACTIVE)
    return (
        Rollout.objects.select_related("owner")
        .annotate(
            current_phase_kind=Subquery(active.values("kind")[:1]),
            readiness_total=Count(
                "checklist_items", filter=Q(checklist_items__kind=ChecklistKind.READINESS), distinct=True
            ),
            readiness_done=Count(
                "checklist_items",
                filter=Q(checklist_items__kind=ChecklistKind.READINESS, checklist_items__completed_at__isnull=False),
                distinct=True,
            ),
            open_incidents=Count("incidents", filter=Q(incidents__status=IncidentStatus.OPEN), distinct=True),
        )
        .order_by("-created_at", "-id")
    )


def phase_label(kind: str | None) -> str:
    return dict(Phase._meta.get_field("kind").choices).get(kind, "—") if kind else "—"


def readiness_percent(done: int, total: int) -> int:
    return round(100 * done / total) if total else 0


@dataclass
class FlagRow:
    flag: FeatureFlag
    cells: list[tuple[Cohort, int, int]]  # (cohort, tenants on, members)

    @property
    def is_kill_switch(self) -> bool:
        return self.flag.key == FlagKey.AGENT_V1_FALLBACK


@dataclass
class RolloutDetail:
    rollout: Rollout
    phases: list[Phase]
    current_phase: Phase | None
    next_target: str | None
    readiness: list[ChecklistItem]
    exit_criteria: list[ChecklistItem]
    cohorts: list[Cohort]
    flag_rows: list[FlagRow]
    kill_switch_on: int
    member_count: int
    communications: list[Communication]
    open_incidents: list[Incident]
    escalation: list[EscalationContact]
    history: list[dict[str, Any]] = field(default_factory=list)
    reentry_phase: Phase | None = None  # after a rollback: the phase a re-entry request would go back into

    @property
    def readiness_done(self) -> int:
        return sum(1 for i in self.readiness if i.is_done)

    @property
    def readiness_percent(self) -> int:
        return readiness_percent(self.readiness_done, len(self.readiness))

    @property
    def exit_done(self) -> int:
        return sum(1 for i in self.exit_criteria if i.is_done)

    @property
    def next_target_label(self) -> str | None:
        if self.next_target == TARGET_COMPLETED:
            return "Completed"
        return phase_label(self.next_target) if self.next_target else None


def _flag_rows(rollout: Rollout, flags: list[FeatureFlag], cohorts: list[Cohort]) -> tuple[list[FlagRow], int]:
    on_counts: dict[tuple[int, int], int] = {}
    rows = (
        FlagExposure.objects.filter(flag__rollout=rollout, enabled=True, tenant__memberships__rollout=rollout)
        .values_list("flag_id", "tenant__memberships__cohort_id")
        .annotate(n=Count("id"))
    )
    for flag_id, cohort_id, n in rows:
        on_counts[(flag_id, cohort_id)] = n
    result = [
        FlagRow(flag=f, cells=[(c, on_counts.get((f.pk, c.pk), 0), c.member_count) for c in cohorts]) for f in flags
    ]
    kill = next((r for r in result if r.is_kill_switch), None)
    return result, sum(n for _, n, _ in kill.cells) if kill else 0


def _choice_label(field: str, choices: list[tuple[str, str]]) -> Case:
    return Case(*(When(**{field: value}, then=Value(str(label))) for value, label in choices), default=F(field))


def _history_union(rollout_pk: int, limit: int) -> QuerySet:
    """The ``UNION ALL`` of each tracked model's newest ``limit`` history records of one rollout."""
    sources = [
        (Rollout.history.filter(id=rollout_pk), "Rollout", F("name")),
        (Phase.history.filter(rollout_id=rollout_pk), "Phase", _choice_label("kind", PhaseKind.choices)),
        (ChecklistItem.history.filter(rollout_id=rollout_pk), "Checklist item", F("title")),
        (
            FlagExposure.history.filter(flag__rollout_id=rollout_pk),
            "Flag exposure",
            Concat(
                F("flag__key"),
                Case(When(enabled=True, then=Value(" on for ")), default=Value(" off for ")),
                F("tenant__name"),
            ),
        ),
        (Communication.history.filter(rollout_id=rollout_pk), "Communication", F("title")),
        (Incident.history.filter(rollout_id=rollout_pk), "Incident", F("title")),
        (Cohort.history.filter(rollout_id=rollout_pk), "Cohort", F("name")),
    ]
    # PostgreSQL takes each part's newest ``limit`` rows; SQLite (the embedded demo database) cannot limit the parts
    # of a compound statement, so it unions whole (small) histories.
    per_part = connection.features.supports_slicing_ordering_in_compound
    parts = [
        qs.annotate(
            source=Value(index),
            label=Value(label),
            described=Cast(describe, CharField()),
            username=Coalesce(F("history_user__username"), Value("system")),
        )
        .values(
            "history_date",
            "history_id",
            "history_type",
            "history_change_reason",
            "source",
            "label",
            "described",
            "username",
        )
        .order_by(*(("-history_date", "-history_id") if per_part else ()))[: limit if per_part else None]
        for index, (qs, label, describe) in enumerate(sources)
    ]
    # Newest first; at the same moment in the order of the sources above, then the newest record.
    return parts[0].union(*parts[1:], all=True).order_by("-history_date", "source", "-history_id")[:limit]


# A rollout id no rollout has (within a 32-bit integer column's range: the ORM compiles an id outside it to no rows),
# compiled into the history statement once, then replaced by the real one: one parameter in each of the seven parts.
_HISTORY_PK_PLACEHOLDER = -2_147_480_009
_HISTORY_PARTS = 7
_history_sql: dict[tuple[str, int], tuple[str, tuple[Any, ...]] | None] = {}


def _is_placeholder(param: Any) -> bool:
    # The PostgreSQL backend passes some integers wrapped in the driver's typed subclasses (Int8): kept as they are.
    return isinstance(param, int) and not isinstance(param, bool) and param == _HISTORY_PK_PLACEHOLDER


def _history_rows(rollout_pk: int, limit: int) -> list[dict[str, Any]]:
    """The rows of ``_history_union``. On PostgreSQL its SQL is compiled once per process and limit (building and
    compiling the seven-part statement cost more CPU than everything else of the query, per page view); the
    rollout's id is its only parameter that varies. PostgreSQL's driver returns these columns as the ORM would
    (no converters apply to them there); other databases take the ORM's path."""
    key = (connection.alias, limit)
    if key not in _history_sql:
        compiled = None
        if connection.vendor == "postgresql":
            sql, params = _history_union(_HISTORY_PK_PLACEHOLDER, limit).query.sql_with_params()
            if sum(1 for p in params if _is_placeholder(p)) == _HISTORY_PARTS:
                compiled = (sql, tuple(params))
        _history_sql[key] = compiled
    if _history_sql[key] is None:
        return list(_history_union(rollout_pk, limit))
    sql, template = _history_sql[key]
    params = [type(p)(rollout_pk) if _is_placeholder(p) else p for p in template]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def rollout_history(rollout: Rollout, limit: int = 10) -> list[dict[str, Any]]:
    """The newest history records of the rollout and its parts: one query, a ``UNION ALL`` of each tracked model's
    newest ``limit`` records (as many rows at most whatever the history's length)."""
    return [
        {
            "at": r["history_date"],
            "model": r["label"],
            "object": r["described"],
            "type": {"+": "created", "~": "changed", "-": "deleted"}[r["history_type"]],
            "user": r["username"],
            "reason": r["history_change_reason"] or "",
        }
        for r in _history_rows(rollout.pk, limit)
    ]


OPEN_INCIDENTS = "open_incidents_loaded"


def open_incidents(rollout: Rollout) -> list[Incident]:
    """The rollout's open incidents (with their phase): the ones ``rollout_detail`` prefetched, else one query."""
    loaded = getattr(rollout, OPEN_INCIDENTS, None)
    if loaded is not None:
        return list(loaded)
    return list(rollout.incidents.filter(status=IncidentStatus.OPEN).select_related("phase"))


def rollout_detail(slug: str) -> RolloutDetail:
    # The phases (each with its activity periods: the timeline shows every entry, re-entries included) and the open
    # incidents go into the rollout's prefetch caches: the panels (``active_phase``, ``open_incidents``, the gates)
    # read them from there instead of querying again. The cohorts, escalation contacts and success criteria do too,
    # so the governance panel's plan version is hashed from them (``governance.selectors.plan_content``).
    rollout = get_object_or_404(
        Rollout.objects.select_related("owner").prefetch_related(
            Prefetch(
                "phases",
                queryset=Phase.objects.prefetch_related(
                    Prefetch("periods", queryset=PhasePeriod.objects.order_by("ordinal"))
                ),
            ),
            Prefetch(
                "incidents",
                queryset=Incident.objects.filter(status=IncidentStatus.OPEN).select_related("phase"),
                to_attr=OPEN_INCIDENTS,
            ),
            "success_criteria",  # the GA gate's
            Prefetch("cohorts", queryset=Cohort.objects.annotate(member_count=Count("memberships"))),
            "escalation_contacts",
        ),
        slug=slug,
    )
    phases = list(rollout.phases.all())
    current = next((p for p in phases if p.status == PhaseStatus.ACTIVE), None)
    rolled_back = next((p for p in reversed(phases) if p.status == PhaseStatus.ROLLED_BACK), None)
    items = list(rollout.checklist_items.select_related("completed_by"))
    cohorts = list(rollout.cohorts.all())
    flags = list(rollout.flags.all())
    flag_rows, kill_on = _flag_rows(rollout, flags, cohorts)
    return RolloutDetail(
        rollout=rollout,
        phases=phases,
        current_phase=current,
        next_target=next_target(rollout, current),
        reentry_phase=rolled_back if rollout.status == RolloutStatus.ROLLED_BACK else None,
        readiness=[i for i in items if i.kind == ChecklistKind.READINESS],
        exit_criteria=[i for i in items if i.kind == ChecklistKind.EXIT],
        cohorts=cohorts,
        flag_rows=flag_rows,
        kill_switch_on=kill_on,
        member_count=sum(c.member_count for c in cohorts),
        communications=list(rollout.communications.select_related("author")[:10]),
        open_incidents=open_incidents(rollout),
        escalation=list(rollout.escalation_contacts.all()),  # prefetched
        history=rollout_history(rollout),
    )


@dataclass
class NextStep:
    label: str
    detail: str = ""
    url: str = ""


@dataclass
class StatusPage:
    """The playbook's live status page: health, where the rollout is and what comes next."""

    rollout: Rollout
    phases: list[Phase]
    current_phase: Phase | None
    next_phase: Phase | None
    open_incidents: list[Incident]
    status_updates: list[Communication]
    kill_switch_on: int = 0
    member_count: int = 0
    rolled_back_phase: Phase | None = None
    problems: list[str] = field(default_factory=list)  # from the upper apps (fired triggers)
    next_step: NextStep | None = None

    @property
    def health_reasons(self) -> list[str]:
        """Why the rollout is not healthy, most serious first; empty when it is."""
        reasons = []
        if self.rollout.status == RolloutStatus.ROLLED_BACK:
            where = self.rolled_back_phase.get_kind_display() if self.rolled_back_phase else "the rollout"
            reasons.append(f"Rolled back out of {where}")
        if self.open_incidents:
            n = len(self.open_incidents)
            reasons.append(f"{n} open incident{'s' if n != 1 else ''}")
        if self.kill_switch_on:
            reasons.append(
                f"Kill switch on: agent_v1_fallback for {self.kill_switch_on} of {self.member_count} tenants"
            )
        return reasons + self.problems

    @property
    def health(self) -> str:
        """ "ok", "incident" (rolled back or an open incident) or "degraded" (kill switch on, a trigger fired)."""
        if self.rollout.status == RolloutStatus.ROLLED_BACK or self.open_incidents:
            return "incident"
        return "degraded" if self.health_reasons else "ok"

    @property
    def healthy(self) -> bool:
        return self.health == "ok"

    @property
    def health_label(self) -> str:
        if self.health == "ok":
            return "Healthy"
        if self.rollout.status == RolloutStatus.ROLLED_BACK:
            return "Rolled back"
        if self.open_incidents:
            n = len(self.open_incidents)
            return f"{n} open incident{'s' if n != 1 else ''}"
        return "Degraded"


def status_page(slug: str) -> StatusPage:
    """Six queries, plus those of the ``status_facts`` receivers (a fixed number each)."""
    rollout = get_object_or_404(Rollout.objects.select_related("owner"), slug=slug)
    phases = list(rollout.phases.all())
    current = next((p for p in phases if p.status == PhaseStatus.ACTIVE), None)
    pending = [p for p in phases if p.status == PhaseStatus.PENDING]
    rolled_back = next((p for p in reversed(phases) if p.status == PhaseStatus.ROLLED_BACK), None)
    members = CohortMembership.objects.filter(rollout=rollout)
    counts = members.aggregate(
        members=Count("tenant", distinct=True),
        fallback=Count(
            "tenant",
            distinct=True,
            filter=Q(
                tenant__flag_exposures__flag__rollout=rollout,
                tenant__flag_exposures__flag__key=FlagKey.AGENT_V1_FALLBACK,
                tenant__flag_exposures__enabled=True,
            ),
        ),
    )
    page = StatusPage(
        rollout=rollout,
        phases=phases,
        current_phase=current,
        next_phase=pending[0] if pending else None,
        open_incidents=list(rollout.incidents.filter(status=IncidentStatus.OPEN).select_related("phase")),
        status_updates=list(
            rollout.communications.filter(kind=CommunicationKind.STATUS_UPDATE, published_at__isnull=False)
            .select_related("author")
            .order_by("-published_at")[:5]
        ),
        kill_switch_on=counts["fallback"],
        member_count=counts["members"],
        rolled_back_phase=rolled_back if rollout.status == RolloutStatus.ROLLED_BACK else None,
    )
    for _receiver, facts in status_facts.send(sender=Rollout, rollout=rollout):
        if facts:
            page.problems.extend(facts.get("problems", []))
            if facts.get("next_step"):
                page.next_step = NextStep(**facts["next_step"])
    if page.next_step is None and page.rolled_back_phase is not None:
        page.next_step = NextStep(label=f"Re-entry into {page.rolled_back_phase.get_kind_display()}")
    return page


def phase_detail(slug: str, kind: str) -> tuple[Phase, QuerySet[PhaseFeedback]]:
    phase = get_object_or_404(Phase.objects.select_related("rollout"), rollout__slug=slug, kind=kind)
    return phase, phase.feedback.select_related("author").order_by("-created_at", "-id")


def communications_for(rollout: Rollout) -> QuerySet[Communication]:
    return rollout.communications.select_related("author").order_by("-created_at", "-id")


def incident_detail(slug: str, pk: int) -> Incident:
    return get_object_or_404(
        Incident.objects.select_related("rollout", "phase", "opened_by", "closed_by", "retrospective").prefetch_related(
            Prefetch("steps", queryset=IncidentStep.objects.select_related("done_by")),
            Prefetch("events", queryset=IncidentEvent.objects.select_related("actor")),
            Prefetch(
                "webhook_deliveries",
                queryset=WebhookDelivery.objects.select_related("endpoint").prefetch_related("attempts"),
            ),
        ),
        rollout__slug=slug,
        pk=pk,
    )


def tenant_list() -> QuerySet[Tenant]:
    return Tenant.objects.order_by("name")


def flags_on(*, rollout_ids: list[int], tenant_id: int | None = None) -> set[tuple[int, str, int]]:
    """The governed state, the one source of truth of every flag reader (the flags API and OFREP): the
    ``(rollout id, flag key, tenant id)`` that are on. A flag is on for a tenant when its exposure row says so
    (phase applies, rollbacks, the kill switch and the voice-insights rule all write those rows); no row is off.
    One query."""
    exposures = FlagExposure.objects.filter(flag__rollout_id__in=rollout_ids, enabled=True)
    if tenant_id is not None:
        exposures = exposures.filter(tenant_id=tenant_id)
    return set(exposures.values_list("flag__rollout_id", "flag__key", "tenant_id"))


def desired_flag_state(rollout: Rollout) -> dict[str, Any]:
    """The flags the configuration service should apply, per cohort and per tenant."""
    cohorts = list(rollout.cohorts.prefetch_related("memberships__tenant"))
    on = flags_on(rollout_ids=[rollout.pk])
    result = []
    for cohort in cohorts:
        tenants = []
        for m in cohort.memberships.all():
            tenants.append(
                {
                    "tenant": m.tenant.slug,
                    "name": m.tenant.name,
                    "flags": {key: (rollout.pk, key, m.tenant_id) in on for key in FlagKey.values},
                }
            )
        result.append({"cohort": cohort.kind, "name": cohort.name, "tenants": tenants})
    return {"rollout": rollout.slug, "status": rollout.status, "cohorts": result}


# Which rollout governs a flag for a tenant that is a member of several (OFREP, README "OpenFeature"): a rollout
# in progress or rolled back first, then a completed one, then a draft, then a cancelled one; among equals the
# newest. Only the governing rollout's exposure counts, so the answer is always that rollout's flags API.
GOVERNING_ORDER: dict[str, int] = {
    RolloutStatus.IN_PROGRESS: 0,
    RolloutStatus.ROLLED_BACK: 0,
    RolloutStatus.COMPLETED: 1,
    RolloutStatus.DRAFT: 2,
    RolloutStatus.CANCELLED: 3,
}


@dataclass(frozen=True)
class TenantFlag:
    """One flag's governed value for one tenant, and where it comes from (``rollout`` None: no rollout governs
    it, or the tenant is unknown)."""

    key: str
    value: bool
    tenant: Tenant | None = None
    rollout: Rollout | None = None
    phase: str = ""
    cohort: str = ""


def tenant_flags(tenant_slug: str) -> dict[str, TenantFlag]:
    """Every flag key's governed value for one tenant, by the governing rule above. Five queries,
    whatever the number of rollouts, tenants and exposures (one for an unknown tenant)."""
    tenant = Tenant.objects.filter(slug=tenant_slug).first()
    if tenant is None:
        return {key: TenantFlag(key=key, value=False) for key in FlagKey.values}
    memberships = list(
        CohortMembership.objects.filter(tenant=tenant).select_related("rollout", "cohort").order_by("rollout_id")
    )
    rollouts = {m.rollout_id: m for m in memberships}
    # The active phase; without one (rolled back), the latest phase rolled back.
    phases: dict[int, str] = {}
    for rollout_id, kind in (
        Phase.objects.filter(rollout_id__in=rollouts, status__in=[PhaseStatus.ACTIVE, PhaseStatus.ROLLED_BACK])
        .order_by(Case(When(status=PhaseStatus.ACTIVE, then=1), default=0), "order")
        .values_list("rollout_id", "kind")
    ):
        phases[rollout_id] = kind
    defined: dict[str, list[int]] = {}
    for rollout_id, key in FeatureFlag.objects.filter(rollout_id__in=rollouts).values_list("rollout_id", "key"):
        defined.setdefault(key, []).append(rollout_id)
    on = flags_on(rollout_ids=list(rollouts), tenant_id=tenant.pk)

    def rank(rollout_id: int) -> tuple[int, float, int]:
        r = rollouts[rollout_id].rollout
        return (GOVERNING_ORDER.get(r.status, 9), -r.created_at.timestamp(), -r.pk)

    result = {}
    for key in FlagKey.values:
        candidates = sorted(defined.get(key, []), key=rank)
        if not candidates:
            result[key] = TenantFlag(key=key, value=False, tenant=tenant)
            continue
        m = rollouts[candidates[0]]
        result[key] = TenantFlag(
            key=key,
            value=(m.rollout_id, key, tenant.pk) in on,
            tenant=tenant,
            rollout=m.rollout,
            phase=phases.get(m.rollout_id, ""),
            cohort=m.cohort.kind,
        )
    return result


def prelaunch_draft(rollout: Rollout) -> tuple[str, str]:
    """Title and Markdown body of a pre-launch announcement (playbook section 3)."""
    phases = list(rollout.phases.all())
    contacts = list(rollout.escalation_contacts.all())
    lines = [
        f"We are about to roll out **{rollout.name}**: the upgraded AI assistant on the ReAct + multi-agent stack.",
        "",
        "## Deployment calendar",
        "",
        "| Phase | Planned start |",
        "|---|---|",
        *[
            f"| {p.get_kind_display()} | {p.planned_start:%Y-%m-%d} |"
            if p.planned_start
            else f"| {p.get_kind_display()} | to be scheduled |"
            for p in phases
        ],
        "",
        "## Expected impacts",
        "",
        rollout.expected_impacts.strip() or "_To be written._",
        "",
        "## Escalation matrix",
        "",
        "| Severity | Contact | Role | How |",
        "|---|---|---|---|",
        *[f"| {c.get_severity_display()} | {c.contact} | {c.role} | {c.channel} |" for c in contacts],
    ]
    return f"Pre-launch announcement: {rollout.name}", "\n".join(lines) + "\n"


# --- The kill switch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FallbackRow:
    """One member tenant's ``agent_v1_fallback``: on or off, since when, set by whom and why."""

    tenant: Tenant
    on: bool
    since: Any  # datetime of the last change, None if it was never set
    by: str
    reason: str


@dataclass
class KillSwitchState:
    rows: list[FallbackRow]

    @property
    def on_rows(self) -> list[FallbackRow]:
        return [r for r in self.rows if r.on]

    @property
    def on_count(self) -> int:
        return len(self.on_rows)

    @property
    def total(self) -> int:
        return len(self.rows)


def kill_switch_state(rollout: Rollout) -> KillSwitchState:
    """``agent_v1_fallback`` for every member tenant, with its last change from the flag's history. Two queries."""
    flag_id = (
        FeatureFlag.objects.filter(rollout=rollout, key=FlagKey.AGENT_V1_FALLBACK).values_list("pk", flat=True).first()
    )
    exposure = FlagExposure.objects.filter(flag_id=flag_id, tenant_id=OuterRef("pk"))
    last_change = FlagExposure.history.model.objects.filter(flag_id=flag_id, tenant_id=OuterRef("pk")).order_by(
        "-history_date", "-history_id"
    )
    tenants = (
        Tenant.objects.filter(memberships__rollout=rollout)
        .annotate(
            fallback_on=Subquery(exposure.values("enabled")[:1]),
            changed_at=Subquery(last_change.values("history_date")[:1]),
            changed_by=Subquery(last_change.values("history_user__username")[:1]),
            changed_why=Subquery(last_change.values("history_change_reason")[:1]),
        )
        .distinct()
        .order_by("name", "pk")
    )
    return KillSwitchState(
        rows=[
            FallbackRow(
                tenant=t,
                on=bool(t.fallback_on),
                since=t.changed_at,
                by=t.changed_by or ("the system" if t.changed_at else ""),
                reason=t.changed_why or "",
            )
            for t in tenants
        ]
    )
