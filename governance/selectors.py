"""Reads for governance: plan versions, gates, requests, "My work" and the audit ledger.

Each function runs a fixed number of queries whatever the data size; the page
tests pin the counts at two sizes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Model, Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from evaluations.models import RunOutput, SuccessCriterion
from evaluations.selectors import PhaseDeltas, TriggerStatus, deltas, ga_gate, trigger_statuses
from evaluations.stats import Verdict
from rollout.models import (
    ChecklistItem,
    ChecklistKind,
    Cohort,
    CohortMembership,
    EscalationContact,
    Incident,
    IncidentKind,
    IncidentStatus,
    Phase,
    PhaseKind,
    PhaseStatus,
    Rollout,
    RolloutStatus,
)
from rollout.roles import LEAD_ROLES, Role, user_roles
from rollout.services import PLAN_FIELDS, active_phase, next_target, reentry_target

from . import jobs, retention
from .ledger import canonical_json
from .models import (
    DEFAULT_APPROVING_ROLES,
    PENDING_STATUSES,
    ApprovingRole,
    AuditEvent,
    ChangeStatus,
    DailyDeltaReport,
    Decision,
    Job,
    JobRun,
    JobStatus,
    LegalHold,
    PlanSignOff,
    ProcessingRecord,
    RecordChange,
    RequestKind,
    RequestStatus,
    RetentionReceipt,
    ScheduledReview,
    TelemetryField,
    TransitionApproval,
    TransitionRequest,
    TransitionTarget,
)
from .records import TELEMETRY_RECORD

ROLE_LABELS: dict[str, str] = {r.value: r.label for r in Role}
LEAD_ROLE_VALUES: tuple[str, ...] = tuple(r.value for r in LEAD_ROLES)
OPEN_ROLLOUT_STATUSES = (RolloutStatus.DRAFT, RolloutStatus.IN_PROGRESS, RolloutStatus.ROLLED_BACK)


def target_label(target: str) -> str:
    return dict(TransitionTarget.choices).get(target, target)


def step_label(target: str, kind: str = RequestKind.ADVANCE) -> str:
    """How a step reads in a sentence: "move into Limited beta" or "re-entry into Canary (internal QA)"."""
    return f"{'re-entry' if kind == RequestKind.REENTRY else 'move'} into {target_label(target)}"


def next_step(rollout: Rollout, current: Phase | None) -> tuple[str | None, str]:
    """The one step a rollout can be asked to make next, and its kind: the next phase (advance), or, after a
    rollback, back into the rolled-back phase (reentry)."""
    target = next_target(rollout, current)
    if target is not None:
        return target, RequestKind.ADVANCE
    again = reentry_target(rollout)
    return (again, RequestKind.REENTRY) if again else (None, RequestKind.ADVANCE)


# --- The plan and its version ------------------------------------------------------------


# What ``rollout.selectors.rollout_detail`` prefetches onto the page's rollout: the plan is then hashed from it.
_PLAN_PREFETCHED = ("phases", "cohorts", "escalation_contacts", "success_criteria")


def plan_content(rollout: Rollout) -> dict[str, Any]:
    """Everything the leads sign, read fresh from the database (six queries).

    Success criteria, SLA and guardrail thresholds, cohorts and their members,
    the deployment calendar and the escalation matrix.

    On the rollout page, whose selector loaded the rollout with its phases, cohorts, escalation contacts and
    success criteria in this request, those are used as loaded (one query: the cohorts' members). Services get a
    rollout without these prefetches and read everything fresh. Both give the same content in the same order
    (``tests/governance/test_signoff.py``): the sorts below are on choice values and numbers, whose order is the
    same in Python as under any collation.
    """
    cached = getattr(rollout, "_prefetched_objects_cache", {})
    if all(name in cached for name in _PLAN_PREFETCHED):
        values: dict[str, Any] = {name: getattr(rollout, name) for name in PLAN_FIELDS}
        phase_rows = [(p.kind, p.planned_start) for p in sorted(rollout.phases.all(), key=lambda p: p.order)]
        cohort_rows = [
            (c.pk, c.kind, c.name, c.entry_phase) for c in sorted(rollout.cohorts.all(), key=lambda c: c.kind)
        ]
        escalation_rows = [
            (e.severity, e.contact, e.role, e.channel)
            for e in sorted(rollout.escalation_contacts.all(), key=lambda e: (e.severity, e.order, e.pk))
        ]
        criteria_rows = [
            (c.metric, c.comparator, c.threshold)
            for c in sorted(rollout.success_criteria.all(), key=lambda c: c.metric)
        ]
    else:
        values = Rollout.objects.values(*PLAN_FIELDS).get(pk=rollout.pk)
        phase_rows = list(Phase.objects.filter(rollout=rollout).order_by("order").values_list("kind", "planned_start"))
        cohort_rows = list(
            Cohort.objects.filter(rollout=rollout).order_by("kind").values_list("pk", "kind", "name", "entry_phase")
        )
        escalation_rows = list(
            EscalationContact.objects.filter(rollout=rollout)
            .order_by("severity", "order", "id")
            .values_list("severity", "contact", "role", "channel")
        )
        criteria_rows = list(
            SuccessCriterion.objects.filter(rollout=rollout)
            .order_by("metric")
            .values_list("metric", "comparator", "threshold")
        )
    thresholds = {
        name: (str(Decimal(value).quantize(Decimal("0.0001"))) if isinstance(value, Decimal) else value)
        for name, value in values.items()
    }
    calendar = [{"phase": kind, "planned_start": start.isoformat() if start else None} for kind, start in phase_rows]
    members: dict[int, list[str]] = {}
    for cohort_id, slug in CohortMembership.objects.filter(rollout=rollout).values_list("cohort_id", "tenant__slug"):
        members.setdefault(cohort_id, []).append(slug)
    cohorts = [
        {"kind": kind, "name": name, "entry_phase": entry, "tenants": sorted(members.get(pk, []))}
        for pk, kind, name, entry in cohort_rows
    ]
    escalation = [list(row) for row in escalation_rows]
    criteria = [
        {"metric": metric, "comparator": comparator, "threshold": float(threshold)}
        for metric, comparator, threshold in criteria_rows
    ]
    return {
        "thresholds": thresholds,
        "calendar": calendar,
        "cohorts": cohorts,
        "escalation_matrix": escalation,
        "success_criteria": criteria,
    }


def short_version(version: str) -> str:
    return f"{version[:12]}…" if len(version) > 12 else version


def request_version(request: TransitionRequest, approvals: Sequence[TransitionApproval]) -> str:
    """A transition request's state as a page shows it: status and the decisions in force.

    Decision and apply forms carry it; a void, a new decision or a status change
    makes another version, and the service refuses a form that shows an older one.
    """
    state = {
        "request": request.pk,
        "status": request.status,
        "decisions": sorted([a.pk, a.role, a.decision] for a in approvals if a.voided_at is None),
    }
    return hashlib.sha256(canonical_json(state).encode("ascii")).hexdigest()[:20]


def plan_hash(rollout: Rollout) -> str:
    """The plan's version: SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(plan_content(rollout)).encode("ascii")).hexdigest()


@dataclass
class SignOffState:
    plan_hash: str
    current: dict[str, PlanSignOff]  # role -> sign-off on the current version
    superseded: list[PlanSignOff]

    @property
    def approved_roles(self) -> list[str]:
        return [role for role in LEAD_ROLE_VALUES if (s := self.current.get(role)) and s.decision == Decision.APPROVE]

    @property
    def rejected_roles(self) -> list[str]:
        return [role for role in LEAD_ROLE_VALUES if (s := self.current.get(role)) and s.decision == Decision.REJECT]

    @property
    def rows(self) -> list[tuple[str, str, PlanSignOff | None]]:
        return [(role, ROLE_LABELS[role], self.current.get(role)) for role in LEAD_ROLE_VALUES]

    def signable_roles(self, user) -> list[tuple[str, str]]:
        """The lead roles ``user`` may still sign in: held, unsigned, and the user has not signed another."""
        if any(s.signer_id == user.pk for s in self.current.values()):
            return []
        held = user_roles(user)
        return [(role, ROLE_LABELS[role]) for role in LEAD_ROLE_VALUES if role in held and role not in self.current]


def sign_off_state(rollout: Rollout, *, superseded_limit: int = 20) -> SignOffState:
    """Current sign-offs count only when given on the current plan version (8 queries)."""
    version = plan_hash(rollout)
    live = list(
        PlanSignOff.objects.filter(rollout=rollout, superseded_at__isnull=True).select_related("signer").order_by("id")
    )
    superseded = list(
        PlanSignOff.objects.filter(rollout=rollout, superseded_at__isnull=False).order_by("-superseded_at", "-id")[
            :superseded_limit
        ]
    )
    return SignOffState(
        plan_hash=version, current={s.role: s for s in live if s.plan_hash == version}, superseded=superseded
    )


# --- Approving roles ------------------------------------------------------------------------------


def approving_role_rows(rollout: Rollout | int) -> QuerySet:
    """The rollout's own (target, role) rows, which ``approver_config_from`` reads."""
    return ApprovingRole.objects.filter(rollout=rollout).values_list("target", "role")


def approver_config(rollout: Rollout) -> dict[str, tuple[str, ...]]:
    """Approving roles per target: the rollout's own rows, else design section 3's defaults."""
    return approver_config_from(approving_role_rows(rollout))


def approver_config_from(rows: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """``approver_config`` from the rows of ``approving_role_rows`` (read together with other rows)."""
    own: dict[str, list[str]] = {}
    for target, role in rows:
        own.setdefault(target, []).append(role)
    return {
        target: tuple(r for r in LEAD_ROLE_VALUES if r in own[target])
        if target in own
        else tuple(str(r) for r in DEFAULT_APPROVING_ROLES[target])
        for target in TransitionTarget.values
    }


def configs_for(rollout_ids: Sequence[int]) -> dict[int, dict[str, tuple[str, ...]]]:
    """``approver_config`` for many rollouts in one query."""
    own: dict[int, dict[str, list[str]]] = {}
    for rollout_id, target, role in ApprovingRole.objects.filter(rollout_id__in=rollout_ids).values_list(
        "rollout_id", "target", "role"
    ):
        own.setdefault(rollout_id, {}).setdefault(target, []).append(role)
    result = {}
    for rollout_id in rollout_ids:
        mine = own.get(rollout_id, {})
        result[rollout_id] = {
            target: tuple(r for r in LEAD_ROLE_VALUES if r in mine[target])
            if target in mine
            else tuple(str(r) for r in DEFAULT_APPROVING_ROLES[target])
            for target in TransitionTarget.values
        }
    return result


# --- Gates ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    key: str
    label: str
    passed: bool
    detail: str
    # When a failing gate that only needs time (the soak) will pass, if nothing else changes.
    passes_at: dt.datetime | None = None

    @property
    def state(self) -> str:
        return "pass" if self.passed else "fail"


def _hours(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() // 3600)


def _sign_off_gate(rollout: Rollout, sign_offs: SignOffState | None) -> Gate:
    state = sign_offs or sign_off_state(rollout, superseded_limit=0)
    approved, rejected = state.approved_roles, state.rejected_roles
    detail = f"plan signed {len(approved)}/{len(LEAD_ROLE_VALUES)} (version {state.plan_hash[:12]})"
    missing = [ROLE_LABELS[r] for r in LEAD_ROLE_VALUES if r not in approved]
    if rejected:
        detail += "; rejected by " + ", ".join(ROLE_LABELS[r] for r in rejected)
    elif missing:
        detail += "; waiting for " + ", ".join(missing)
    return Gate("sign_off", "Plan signed off by all four leads", len(approved) == len(LEAD_ROLE_VALUES), detail)


def reentry_gates(rollout: Rollout, target: str, *, sign_offs: SignOffState | None = None) -> list[Gate]:
    """The gates of a re-entry into the rolled-back phase ``target`` (issue 9, seam 3): the rollout is rolled back
    out of that phase, its rollback incident is closed with a published retrospective, and the four leads signed
    the plan at its current version. Four queries (plus the sign-offs when not given)."""
    again = reentry_target(rollout)
    gates = [
        Gate(
            "state",
            "Rollout state",
            again == target,
            f"{rollout.get_status_display()}; "
            + (f"{target_label(again)} was rolled back" if again else "no rolled-back phase to re-enter"),
        )
    ]
    incidents = list(
        Incident.objects.filter(rollout=rollout)
        .select_related("retrospective")
        .order_by("-opened_at", "-id")
        .only("pk", "status", "closed_at", "phase__kind", "retrospective__published_at", "rollout_id")
        .select_related("phase")[:20]
    )
    open_incidents = [i for i in incidents if i.status == IncidentStatus.OPEN]
    rollback = next((i for i in incidents if i.phase and i.phase.kind == target), None)
    if open_incidents:
        detail = ", ".join(f"incident #{i.pk} open" for i in open_incidents)
    elif rollback:
        detail = f"incident #{rollback.pk} closed {rollback.closed_at:%Y-%m-%d %H:%M} UTC"
    else:
        detail = "no rollback incident"
    gates.append(
        Gate("incident_closed", "Rollback incident closed", rollback is not None and not open_incidents, detail)
    )
    retro = rollback.retrospective if rollback else None
    published = retro is not None and retro.published_at is not None
    gates.append(
        Gate(
            "retrospective",
            "Retrospective published",
            published,
            f"retrospective published {retro.published_at:%Y-%m-%d %H:%M} UTC"
            if published
            else "no retrospective yet (it is written when the incident is closed)",
        )
    )
    gates.append(_sign_off_gate(rollout, sign_offs))
    return gates


def gates_for(
    rollout: Rollout,
    target: str,
    *,
    now: dt.datetime | None = None,
    sign_offs: SignOffState | None = None,
    kind: str = RequestKind.ADVANCE,
) -> list[Gate]:
    """Design section 3's automated gates into ``target``, each with pass/fail and why.

    ``sign_offs`` saves reading them again when the caller already has them. A re-entry after a
    rollback has gates of its own (``reentry_gates``).
    """
    if kind == RequestKind.REENTRY:
        return reentry_gates(rollout, target, sign_offs=sign_offs)
    now = now or timezone.now()
    phases = {p.kind: p for p in rollout.phases.all()}  # prefetched on the rollout page, else one query
    current = next((p for p in phases.values() if p.status == PhaseStatus.ACTIVE), None)
    expected = next_target(rollout, current)
    where = current.get_kind_display() if current else "no active phase"
    gates = [
        Gate(
            "state",
            "Rollout state",
            expected == target,
            f"{rollout.get_status_display()}, {where}; next step {target_label(expected) if expected else 'none'}",
        )
    ]
    if target in (TransitionTarget.CANARY, TransitionTarget.COMPLETED):
        kind = ChecklistKind.READINESS if target == TransitionTarget.CANARY else ChecklistKind.EXIT
        counts = ChecklistItem.objects.filter(rollout=rollout, kind=kind).aggregate(
            total=Count("id"), done=Count("id", filter=Q(completed_at__isnull=False))
        )
        name = "readiness" if kind == ChecklistKind.READINESS else "exit criteria"
        gates.append(
            Gate(
                kind,
                "Readiness checklist complete" if kind == ChecklistKind.READINESS else "Exit criteria complete",
                counts["total"] > 0 and counts["done"] == counts["total"],
                f"{name} {counts['done']}/{counts['total']}",
            )
        )
    if target == TransitionTarget.CANARY:
        gates.append(_sign_off_gate(rollout, sign_offs))
    if target in (TransitionTarget.LIMITED_BETA, TransitionTarget.GENERAL_AVAILABILITY):
        canary = phases.get(PhaseKind.CANARY)
        since = canary.entered_at if canary and canary.entered_at else None
        counts = Incident.objects.filter(rollout=rollout).aggregate(
            open=Count("id", filter=Q(status=IncidentStatus.OPEN)),
            fired=Count(
                "id",
                filter=Q(kind=IncidentKind.AUTOMATIC, phase__kind=PhaseKind.CANARY)
                & (Q(opened_at__gte=since) if since else Q()),
            ),
        )
        if target == TransitionTarget.LIMITED_BETA:
            soak = rollout.canary_soak_hours
            if canary and canary.status == PhaseStatus.ACTIVE and canary.entered_at:
                hours = _hours(now - canary.entered_at)
                passes_at = canary.entered_at + dt.timedelta(hours=soak)
                gates.append(
                    Gate(
                        "canary_soak",
                        f"Canary active ≥ {soak} h",
                        hours >= soak,
                        f"canary soak {hours} h of {soak} h",
                        passes_at=None if hours >= soak else passes_at,
                    )
                )
            else:
                gates.append(Gate("canary_soak", f"Canary active ≥ {soak} h", False, "canary is not active"))
        gates.append(
            Gate(
                "no_open_incident",
                "No open incident",
                counts["open"] == 0,
                f"{counts['open']} open incident{'s' if counts['open'] != 1 else ''}",
            )
        )
        if target == TransitionTarget.LIMITED_BETA:
            fired = counts["fired"]
            gates.append(
                Gate(
                    "no_trigger_in_canary",
                    "No rollback trigger fired in canary",
                    fired == 0,
                    f"{fired} trigger{'s' if fired != 1 else ''} fired since canary was entered"
                    + (f" {since:%Y-%m-%d %H:%M}" if since else ""),
                )
            )
    if target == TransitionTarget.GENERAL_AVAILABILITY:
        ga = ga_gate(rollout)
        gates.append(
            Gate("success_streak", "Success criteria met on consecutive limited-beta runs", ga.passed, str(ga))
        )
    return gates


def failed(gates: Sequence[Gate]) -> list[Gate]:
    return [g for g in gates if not g.passed]


# --- Transition requests ----------------------------------------------------------------------------------


@dataclass
class RoleDecision:
    role: str
    label: str
    approval: TransitionApproval | None


@dataclass
class TransitionView:
    request: TransitionRequest
    required: tuple[str, ...]
    approvals: list[TransitionApproval]  # current (not voided)
    voided: list[TransitionApproval]
    gates: list[Gate] = field(default_factory=list)

    @property
    def by_role(self) -> list[RoleDecision]:
        current = {a.role: a for a in self.approvals}
        return [RoleDecision(r, ROLE_LABELS[r], current.get(r)) for r in self.required]

    @property
    def approved_count(self) -> int:
        return sum(1 for a in self.approvals if a.decision == Decision.APPROVE and a.role in self.required)

    @property
    def all_approved(self) -> bool:
        return self.approved_count == len(self.required)

    @property
    def gates_pass(self) -> bool:
        return not failed(self.gates)

    @property
    def version(self) -> str:
        return request_version(self.request, self.approvals)

    def decidable_roles(self, user) -> list[tuple[str, str]]:
        """Roles ``user`` may decide in now: held, required, undecided; not the requester; no other role taken."""
        request = self.request
        if not request.is_pending or user.pk == request.requested_by_id:
            return []
        if any(a.approver_id == user.pk for a in self.approvals):
            return []
        decided = {a.role for a in self.approvals}
        held = user_roles(user)
        return [(r, ROLE_LABELS[r]) for r in self.required if r in held and r not in decided]


def transition_view(
    request: TransitionRequest,
    *,
    with_gates: bool = True,
    config: dict[str, tuple[str, ...]] | None = None,
    sign_offs: SignOffState | None = None,
) -> TransitionView:
    approvals = list(request.approvals.select_related("approver").order_by("decided_at", "id"))
    required = (config or approver_config(request.rollout))[request.target]
    view = TransitionView(
        request=request,
        required=required,
        approvals=[a for a in approvals if a.voided_at is None],
        voided=[a for a in approvals if a.voided_at is not None],
    )
    if with_gates and request.is_pending:
        view.gates = gates_for(request.rollout, request.target, sign_offs=sign_offs, kind=request.kind)
    return view


def transition_detail(slug: str, pk: int) -> TransitionView:
    request = get_object_or_404(
        TransitionRequest.objects.select_related("rollout", "requested_by"), rollout__slug=slug, pk=pk
    )
    return transition_view(request)


# --- The evidence in front of approvers -------------------------------------------------------------------------

VERDICT_ORDER: tuple[str, ...] = (
    Verdict.REGRESSED,
    Verdict.IMPROVED,
    Verdict.NO_CLEAR_CHANGE,
    Verdict.NOT_ENOUGH_DATA,
)


@dataclass
class TransitionEvidence:
    """What approvers of a pending request should see: the current phase's deltas, the triggers, open incidents.

    The phase is the active one, else (rolled back, nothing active) the phase the request moves on from.
    Everything comes from the evaluations selectors the full pages use, so the figures are the same.
    """

    rollout: Rollout
    phase: Phase | None
    deltas: PhaseDeltas | None
    triggers: list[TriggerStatus]
    open_incidents: list[Incident]

    @property
    def verdicts(self) -> list[tuple[str, int]]:
        """How many metrics got each verdict, worst first; verdicts no metric got are left out."""
        if self.deltas is None:
            return []
        counts = {v: 0 for v in VERDICT_ORDER}
        for m in self.deltas.metrics:
            counts[m.comparison.verdict] = counts.get(m.comparison.verdict, 0) + 1
        return [(v, n) for v, n in counts.items() if n]

    @property
    def criteria(self) -> list:
        """The metrics that have a success criterion."""
        return [m for m in self.deltas.metrics if m.criterion is not None] if self.deltas else []

    @property
    def criteria_met(self) -> int:
        return sum(1 for m in self.criteria if m.meets_criterion is True)

    @property
    def criteria_unmet(self) -> list:
        return [m for m in self.criteria if m.meets_criterion is False]

    @property
    def firing(self) -> list[TriggerStatus]:
        return [t for t in self.triggers if t.required and t.streak >= t.required]


def transition_evidence(request: TransitionRequest) -> TransitionEvidence:
    """The evidence panel of a request page. Nine queries whatever the number of runs, samples and incidents.

    Three for the deltas (phases, day summaries, criteria), five for the trigger streaks, one for the incidents.
    """
    rollout = request.rollout
    report = deltas(rollout)
    by_kind = {p.phase.kind: p for p in report.phases}
    current = next((p for p in report.phases if p.phase.status == PhaseStatus.ACTIVE), None)
    shown = current or by_kind.get(request.from_phase)
    return TransitionEvidence(
        rollout=rollout,
        phase=shown.phase if shown else None,
        deltas=shown,
        triggers=trigger_statuses(rollout, current.phase if current else None),
        open_incidents=list(
            rollout.incidents.filter(status=IncidentStatus.OPEN).select_related("phase").order_by("opened_at", "id")
        ),
    )


def transition_requests(rollout: Rollout) -> QuerySet[TransitionRequest]:
    return (
        TransitionRequest.objects.filter(rollout=rollout)
        .select_related("rollout")
        .annotate(
            approvals_in=Count(
                "approvals", filter=Q(approvals__voided_at__isnull=True, approvals__decision=Decision.APPROVE)
            ),
            rejections=Count(
                "approvals", filter=Q(approvals__voided_at__isnull=True, approvals__decision=Decision.REJECT)
            ),
        )
        .order_by("-requested_at", "-id")
    )


def pending_request(rollout: Rollout) -> TransitionRequest | None:
    return (
        TransitionRequest.objects.filter(rollout=rollout, status__in=PENDING_STATUSES)
        .select_related("rollout", "requested_by")
        .first()
    )


@dataclass
class RolloutGovernance:
    """The governance panel of a rollout page: plan sign-offs and the next transition."""

    rollout: Rollout
    sign_offs: SignOffState
    next_target: str | None
    pending: TransitionView | None
    next_gates: list[Gate]
    config: dict[str, tuple[str, ...]]
    request_count: int
    next_kind: str = RequestKind.ADVANCE

    @property
    def next_target_label(self) -> str | None:
        return target_label(self.next_target) if self.next_target else None

    @property
    def is_reentry(self) -> bool:
        return self.next_kind == RequestKind.REENTRY

    @property
    def next_step_label(self) -> str | None:
        """ "move into Limited beta" or "re-entry into Canary (internal QA)"."""
        return step_label(self.next_target, self.next_kind) if self.next_target else None

    @property
    def config_rows(self) -> list[tuple[str, str, list[str]]]:
        return [(t, target_label(t), [ROLE_LABELS[r] for r in roles]) for t, roles in self.config.items()]


def rollout_governance(rollout: Rollout) -> RolloutGovernance:
    state = sign_off_state(rollout)
    current = active_phase(rollout)
    target, kind = next_step(rollout, current)
    config = approver_config(rollout)
    pending = pending_request(rollout)
    if pending is not None:
        pending.rollout = rollout  # the page's rollout: its gates read the phases it prefetched
    view = transition_view(pending, config=config, sign_offs=state) if pending else None
    return RolloutGovernance(
        rollout=rollout,
        sign_offs=state,
        next_target=target,
        next_kind=kind,
        pending=view,
        next_gates=view.gates if view else (gates_for(rollout, target, sign_offs=state, kind=kind) if target else []),
        config=config,
        request_count=TransitionRequest.objects.filter(rollout=rollout).count(),
    )


def status_next_step(rollout: Rollout) -> dict[str, str] | None:
    """For the live status page: the pending request (and its state), or after a rollback the re-entry into the
    rolled-back phase that a rollout admin requests once the incident is closed. Three queries at most."""
    pending = pending_request(rollout)
    if pending is not None:
        label = f"{'Re-entry into ' if pending.is_reentry else ''}{pending.get_target_display()}"
        return {
            "label": label,
            "detail": f"request #{pending.pk} {pending.get_status_display().lower()}",
            "url": pending.get_absolute_url(),
        }
    again = reentry_target(rollout)
    if again is None:
        return None
    waiting = rollout.incidents.filter(status=IncidentStatus.OPEN).exists()
    return {
        "label": f"Re-entry into {target_label(again)}",
        "detail": "to be requested once the incident is closed with its retrospective"
        if waiting
        else "ready to be requested by a rollout admin",
        "url": "",
    }


# --- "My work" ------------------------------------------------------------------------------------------------


@dataclass
class MyWork:
    decisions: list[tuple[TransitionRequest, list[str]]]  # requests and the roles the user may decide in
    sign_offs: list[tuple[Rollout, list[str]]]
    to_apply: list[TransitionRequest]

    @property
    def empty(self) -> bool:
        return not (self.decisions or self.sign_offs or self.to_apply)


def my_work(user, *, limit: int = 10) -> MyWork | None:
    """Requests and sign-offs waiting for the user's roles; approved requests for those who apply them.

    ``None`` for users with neither a lead role nor the apply permission.
    """
    held = user_roles(user)
    leads = [r for r in LEAD_ROLE_VALUES if r in held]
    can_apply = user.has_perm("governance.apply_transitionrequest")
    if not leads and not can_apply:
        return None
    decisions: list[tuple[TransitionRequest, list[str]]] = []
    sign_offs: list[tuple[Rollout, list[str]]] = []
    if leads:
        pending = list(
            TransitionRequest.objects.filter(status=RequestStatus.OPEN)
            .select_related("rollout")
            .prefetch_related(Prefetch("approvals", queryset=TransitionApproval.objects.filter(voided_at__isnull=True)))
            .order_by("requested_at", "id")
        )
        configs = configs_for([r.rollout_id for r in pending])
        for request in pending:
            if request.requested_by_id == user.pk:
                continue
            approvals = list(request.approvals.all())
            if any(a.approver_id == user.pk for a in approvals):
                continue
            decided = {a.role for a in approvals}
            roles = [r for r in configs[request.rollout_id][request.target] if r in leads and r not in decided]
            if roles:
                decisions.append((request, [ROLE_LABELS[r] for r in roles]))
        rollouts = Rollout.objects.filter(status__in=OPEN_ROLLOUT_STATUSES).prefetch_related(
            Prefetch("sign_offs", queryset=PlanSignOff.objects.filter(superseded_at__isnull=True), to_attr="live")
        )
        for rollout in rollouts.order_by("-created_at", "-id"):
            if any(s.signer_id == user.pk for s in rollout.live):
                continue
            signed = {s.role for s in rollout.live}
            roles = [r for r in leads if r not in signed]
            if roles:
                sign_offs.append((rollout, [ROLE_LABELS[r] for r in roles]))
    to_apply = (
        list(
            TransitionRequest.objects.filter(status=RequestStatus.APPROVED)
            .select_related("rollout")
            .order_by("decided_at", "id")[:limit]
        )
        if can_apply
        else []
    )
    return MyWork(decisions=decisions[:limit], sign_offs=sign_offs[:limit], to_apply=to_apply)


# --- The audit ledger -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    rollout: Rollout | None = None
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    # "type:id" of an object whose history is asked for, and the objects it covers ("type:id" each): the object
    # and its parts (``history_objects``), resolved when the filter is made so an export's manifest can name them.
    history_of: str = ""
    history_objects: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        values = {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "rollout": self.rollout.slug if self.rollout else None,
            "actor": self.actor or None,
            "action": self.action or None,
            "object_type": self.object_type or None,
            "object_id": self.object_id or None,
        }
        if self.history_of:
            values.update(history_of=self.history_of, history_objects=list(self.history_objects))
        return values


# Objects whose history includes entries of other objects: type -> (what it is called, what its parts are called,
# the parts' model and the field naming the whole). A transition request's history holds its approvals' decisions.
HISTORY_PARTS: dict[str, tuple[str, str, type[Model], str]] = {
    "governance.transitionrequest": ("request", "decision", TransitionApproval, "request_id"),
}


@dataclass(frozen=True)
class HistoryOf:
    object_type: str
    object_id: str
    label: str
    parts_label: str
    objects: tuple[str, ...]

    @property
    def parts(self) -> int:
        return len(self.objects) - 1


def history_of(object_type: str, object_id: str) -> HistoryOf:
    """The object and its parts (``HISTORY_PARTS``) as "type:id" keys: at most one query."""
    keys = [f"{object_type}:{object_id}"]
    label, parts_label = object_type, "part"
    if object_type in HISTORY_PARTS:
        label, parts_label, model, field = HISTORY_PARTS[object_type]
        part_type = model._meta.label_lower
        if object_id.isdigit():
            pks = model.objects.filter(**{field: int(object_id)}).order_by("pk").values_list("pk", flat=True)
            keys += [f"{part_type}:{pk}" for pk in pks]
    return HistoryOf(object_type, object_id, f"{label} #{object_id}", parts_label, tuple(keys))


def audit_events(filters: AuditFilter) -> QuerySet[AuditEvent]:
    """Ledger entries matching the filter, newest first; time is half-open ``[since, until)``."""
    qs = AuditEvent.objects.all()
    if filters.since:
        qs = qs.filter(at__gte=filters.since)
    if filters.until:
        qs = qs.filter(at__lt=filters.until)
    if filters.rollout:
        qs = qs.filter(rollout_id=filters.rollout.pk)
    if filters.actor:
        qs = qs.filter(actor_name=filters.actor)
    if filters.action:
        qs = qs.filter(action=filters.action)
    if filters.object_type:
        qs = qs.filter(object_type=filters.object_type)
    if filters.object_id:
        qs = qs.filter(object_id=filters.object_id)
    if filters.history_of:
        wanted = Q(pk__in=[])
        for key in filters.history_objects:
            object_type, _, object_id = key.partition(":")
            wanted |= Q(object_type=object_type, object_id=object_id)
        qs = qs.filter(wanted)
    return qs.order_by("-sequence")


def ledger_holds(sequence: int, *, using: str) -> bool:
    """Whether the database behind ``using`` (a replica) holds the ledger up to ``sequence``: one index probe."""
    return sequence <= 0 or AuditEvent.objects.using(using).filter(sequence__gte=sequence).exists()


def rollout_names(ids: Sequence[int]) -> dict[int, Rollout]:
    return {r.pk: r for r in Rollout.objects.filter(pk__in=set(ids)).only("pk", "slug", "name")}


# --- Compliance: retention, records, reviews, jobs, delta reports (issue 5) -------------------------------------------


def ledger_alert() -> dict[str, Any] | None:
    """The latest completed ledger verification, if it found the chain broken (the banner). One indexed query."""
    latest = (
        JobRun.objects.filter(job=Job.VERIFY_AUDIT_LOG, status=JobStatus.SUCCEEDED)
        .order_by("-id")
        .values("alert", "summary", "finished_at", "result")
        .first()
    )
    return latest if latest and latest["alert"] else None


@dataclass
class RetentionOverview:
    policy: retention.Policy
    schedule: str
    next_cutoff: dt.datetime
    holds: list[LegalHold]
    oldest_output_at: dt.datetime | None
    last_receipt: RetentionReceipt | None


def retention_overview(now: dt.datetime | None = None) -> RetentionOverview:
    """The Retention page's header: policy, schedule, active holds, the oldest output still stored. Three queries."""
    now = now or timezone.now()
    rules = retention.policy()
    oldest = RunOutput.objects.order_by("run_finished_at").values_list("run_finished_at", flat=True).first()
    return RetentionOverview(
        policy=rules,
        schedule=jobs.describe_schedule(jobs.beat_schedule(Job.ENFORCE_RETENTION)),
        next_cutoff=rules.cutoff(now),
        holds=list(LegalHold.objects.filter(released_at__isnull=True).select_related("rollout").order_by("placed_at")),
        oldest_output_at=oldest,
        last_receipt=RetentionReceipt.objects.filter(dry_run=False).order_by("-id").first(),
    )


def retention_receipts() -> QuerySet[RetentionReceipt]:
    return RetentionReceipt.objects.select_related("job_run").order_by("-started_at", "-id")


def released_holds(limit: int = 20) -> list[LegalHold]:
    return list(
        LegalHold.objects.filter(released_at__isnull=False).select_related("rollout").order_by("-released_at")[:limit]
    )


def records_list() -> QuerySet[ProcessingRecord]:
    """Every record with its pending-change count (one query a page); ``mark_retention_mismatch`` per row."""
    return ProcessingRecord.objects.annotate(
        pending=Count("changes", filter=Q(changes__status=ChangeStatus.PENDING))
    ).order_by("name", "id")


def mark_retention_mismatch(record: ProcessingRecord) -> None:
    """Whether the record's retention period contradicts the policy it says applies."""
    record.retention_mismatch = (
        record.retention_policy_applies and record.retention_period_days != settings.RETENTION_DAYS
    )


@dataclass
class RecordDetail:
    record: ProcessingRecord
    pending: list[RecordChange]
    decided: list[RecordChange]
    retention_mismatch: bool
    telemetry: list[TelemetryField]


def record_detail(key: str, *, decided_limit: int = 50) -> RecordDetail:
    """A record, its pending and latest decided changes, and the telemetry inventory. Four queries."""
    record = get_object_or_404(ProcessingRecord, key=key)
    changes = record.changes.order_by("-detected_at", "-id")
    return RecordDetail(
        record=record,
        pending=list(changes.filter(status=ChangeStatus.PENDING).order_by("detected_at", "id")),
        decided=list(changes.exclude(status=ChangeStatus.PENDING).order_by("-decided_at", "-id")[:decided_limit]),
        retention_mismatch=record.retention_policy_applies and record.retention_period_days != settings.RETENTION_DAYS,
        telemetry=list(TelemetryField.objects.order_by("source", "name")) if record.key == TELEMETRY_RECORD else [],
    )


def reviews(*, status: str = "", kind: str = "") -> QuerySet[ScheduledReview]:
    """Scheduled reviews (the list page filters them with ``governance.filters.ReviewFilter``)."""
    qs = ScheduledReview.objects.all()
    now = timezone.now()
    if status == "overdue":
        qs = qs.filter(status="open", due_at__lte=now)
    elif status:
        qs = qs.filter(status=status)
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("-period_start", "kind", "id")


def review_detail(pk: int) -> ScheduledReview:
    return get_object_or_404(ScheduledReview, pk=pk)


@dataclass
class JobRow:
    spec: jobs.JobSpec
    schedule: str
    last: JobRun | None


def jobs_overview() -> list[JobRow]:
    """Each job with its schedule (from ``CELERY_BEAT_SCHEDULE``) and its latest run. One query."""
    latest_ids = JobRun.objects.values("job").annotate(last=Max("id")).values("last")
    last = {run.job: run for run in JobRun.objects.filter(pk__in=latest_ids)}
    return [
        JobRow(spec=spec, schedule=jobs.describe_schedule(jobs.beat_schedule(name)), last=last.get(name))
        for name, spec in jobs.JOBS.items()
    ]


def job_runs(job: str = "") -> QuerySet[JobRun]:
    qs = JobRun.objects.all()
    if job:
        qs = qs.filter(job=job)
    return qs.order_by("-queued_at", "-id")


def delta_reports(rollout: Rollout) -> QuerySet[DailyDeltaReport]:
    return DailyDeltaReport.objects.filter(rollout=rollout).select_related("rollout", "phase").order_by("-report_date")


def previous_report(report: DailyDeltaReport) -> DailyDeltaReport | None:
    return (
        DailyDeltaReport.objects.filter(rollout_id=report.rollout_id, report_date__lt=report.report_date)
        .order_by("-report_date")
        .first()
    )


def delta_report(slug: str, day: dt.date) -> tuple[DailyDeltaReport, DailyDeltaReport | None]:
    report = get_object_or_404(
        DailyDeltaReport.objects.select_related("rollout", "phase"), rollout__slug=slug, report_date=day
    )
    return report, previous_report(report)


@dataclass
class ComplianceHome:
    overdue: list[ScheduledReview]
    mine: list[ScheduledReview]  # open reviews assigned to the user's roles, not overdue
    pending_changes: int | None = None
    mismatched_records: int | None = None
    failed_jobs: list[JobRun] = field(default_factory=list)
    active_holds: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.overdue or self.mine or self.pending_changes or self.mismatched_records or self.failed_jobs)


def compliance_home(user, *, limit: int = 10) -> ComplianceHome | None:
    """The home page's compliance panel: overdue reviews for everyone, open ones of the user's roles, and for
    compliance reviewers the records waiting for them and failed jobs. Two queries, five for reviewers."""

    held = user_roles(user)
    now = timezone.now()
    open_reviews = list(ScheduledReview.objects.filter(status="open").order_by("due_at", "kind")[:100])
    overdue = [r for r in open_reviews if r.due_at <= now]
    mine = [r for r in open_reviews if r.due_at > now and r.assigned_role in held]
    panel = ComplianceHome(overdue=overdue[:limit], mine=mine[:limit])
    if Role.COMPLIANCE_REVIEWER in held:
        panel.pending_changes = RecordChange.objects.filter(status=ChangeStatus.PENDING).count()
        panel.mismatched_records = (
            ProcessingRecord.objects.filter(retention_policy_applies=True)
            .exclude(retention_period_days=settings.RETENTION_DAYS)
            .count()
        )
        panel.failed_jobs = list(
            JobRun.objects.filter(status=JobStatus.FAILED, queued_at__gte=now - dt.timedelta(days=7)).order_by("-id")[
                :5
            ]
        )
        panel.active_holds = LegalHold.objects.filter(released_at__isnull=True).count()
        return panel
    return None if panel.empty else panel


@dataclass
class RolloutCompliance:
    hold: LegalHold | None
    last_report: DailyDeltaReport | None


def rollout_compliance(rollout: Rollout) -> RolloutCompliance:
    """The rollout page's retention and delta-report line. Two queries."""
    last_report = DailyDeltaReport.objects.filter(rollout=rollout).order_by("-report_date").first()
    if last_report is not None:
        last_report.rollout = rollout  # its link needs the slug: no query for the rollout again
    return RolloutCompliance(
        hold=LegalHold.objects.filter(rollout=rollout, released_at__isnull=True).first(),
        last_report=last_report,
    )
