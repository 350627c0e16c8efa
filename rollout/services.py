"""Every write to the rollout core goes through a function here.

Each service validates, locks the rollout row (``select_for_update``), writes in
one transaction, records the history user and change reason, and schedules side
effects with ``transaction.on_commit``. Callers (views, API, admin actions,
commands, tasks) never save these models themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from . import playbook, signals
from .errors import (
    ChecklistItemStateError,
    CohortOverlap,
    IncidentStateError,
    InvalidPlan,
    InvalidTransition,
    VoiceIngestionNotConfirmed,
)
from .history import delete_tracked, save_tracked
from .models import (
    COHORT_ENTRY_PHASE,
    MULTI_AGENT_FLAGS,
    PHASE_SEQUENCE,
    ChecklistItem,
    ChecklistKind,
    Cohort,
    CohortKind,
    CohortMembership,
    Communication,
    CommunicationKind,
    EscalationContact,
    FeatureFlag,
    FlagExposure,
    FlagKey,
    GuardrailMode,
    Incident,
    IncidentEvent,
    IncidentKind,
    IncidentStatus,
    IncidentStep,
    IncidentStepKey,
    PeriodEnd,
    Phase,
    PhaseFeedback,
    PhaseKind,
    PhasePeriod,
    PhaseStatus,
    Rollout,
    RolloutStatus,
    Tenant,
)
from .roles import require_perm
from .routes import reserved_segments

# --- State machine (design section 3) -------------------------------------------

PHASE_TRANSITIONS: dict[str, frozenset[str]] = {
    PhaseStatus.PENDING: frozenset({PhaseStatus.ACTIVE}),
    PhaseStatus.ACTIVE: frozenset({PhaseStatus.COMPLETED, PhaseStatus.ROLLED_BACK}),
    # A rolled-back phase may be entered again once the cause is fixed.
    PhaseStatus.ROLLED_BACK: frozenset({PhaseStatus.ACTIVE}),
    PhaseStatus.COMPLETED: frozenset(),
}

ROLLOUT_TRANSITIONS: dict[str, frozenset[str]] = {
    RolloutStatus.DRAFT: frozenset({RolloutStatus.IN_PROGRESS, RolloutStatus.CANCELLED}),
    RolloutStatus.IN_PROGRESS: frozenset({RolloutStatus.COMPLETED, RolloutStatus.ROLLED_BACK, RolloutStatus.CANCELLED}),
    RolloutStatus.ROLLED_BACK: frozenset({RolloutStatus.IN_PROGRESS, RolloutStatus.CANCELLED}),
    RolloutStatus.COMPLETED: frozenset(),
    RolloutStatus.CANCELLED: frozenset(),
}

# What a transition request can ask for: the next phase, or "completed" after GA.
TARGET_COMPLETED = "completed"
TRANSITION_TARGETS: tuple[str, ...] = (*PHASE_SEQUENCE[1:], TARGET_COMPLETED)


def _locked_rollout(rollout: Rollout) -> Rollout:
    return Rollout.objects.select_for_update().get(pk=rollout.pk)


def _set_phase_status(phase: Phase, to: str, *, actor: Any, reason: str, now: dt.datetime) -> None:
    if to not in PHASE_TRANSITIONS[phase.status]:
        raise InvalidTransition(f"The {phase.get_kind_display()} phase cannot go from {phase.status} to {to}.")
    phase.status = to
    if to == PhaseStatus.ACTIVE:
        phase.entered_at, phase.exited_at = now, None
    else:
        phase.exited_at = now
    save_tracked(phase, actor=actor, reason=reason)
    if to == PhaseStatus.ACTIVE:
        _open_period(phase, actor=actor, reason=reason, now=now)
    else:
        _close_period(phase, ended=PeriodEnd(to), actor=actor, reason=reason, now=now)


def _open_period(phase: Phase, *, actor: Any, reason: str, now: dt.datetime) -> PhasePeriod:
    """A new activity period of ``phase`` from ``now`` (its first entry, or a re-entry)."""
    last = PhasePeriod.objects.filter(phase=phase).order_by("-ordinal").values_list("ordinal", flat=True).first()
    return save_tracked(PhasePeriod(phase=phase, ordinal=(last or 0) + 1, entered_at=now), actor=actor, reason=reason)


def _close_period(phase: Phase, *, ended: str, actor: Any, reason: str, now: dt.datetime) -> PhasePeriod | None:
    period = PhasePeriod.objects.select_for_update().filter(phase=phase, exited_at__isnull=True).first()
    if period is None:
        return None
    period.exited_at, period.ended = now, ended
    return save_tracked(period, actor=actor, reason=reason)


def _set_rollout_status(rollout: Rollout, to: str, *, actor: Any, reason: str) -> None:
    if rollout.status == to:
        return
    if to not in ROLLOUT_TRANSITIONS[rollout.status]:
        raise InvalidTransition(f"The rollout cannot go from {rollout.status} to {to}.")
    rollout.status = to
    save_tracked(rollout, actor=actor, reason=reason)


def _moment(now: dt.datetime | None, current: Phase | None) -> dt.datetime:
    """The time a state change is recorded at: now, or a backdated moment that keeps the timeline in order."""
    real = timezone.now()
    if now is None:
        return real
    if now > real or (current is not None and current.entered_at is not None and now < current.entered_at):
        raise InvalidTransition("A state change cannot be dated in the future or before the current phase began.")
    return now


def active_phase(rollout: Rollout) -> Phase | None:
    """The active phase; from the rollout's prefetched phases when a page's selector loaded them (no query)."""
    cached = getattr(rollout, "_prefetched_objects_cache", {}).get("phases")
    if cached is not None:
        return next((p for p in cached if p.status == PhaseStatus.ACTIVE), None)
    return rollout.phases.filter(status=PhaseStatus.ACTIVE).first()


def next_target(rollout: Rollout, current: Phase | None) -> str | None:
    """The one transition a rollout can be asked to make next, or None."""
    if rollout.status not in {RolloutStatus.DRAFT, RolloutStatus.IN_PROGRESS} or current is None:
        return None
    index = PHASE_SEQUENCE.index(current.kind)
    return PHASE_SEQUENCE[index + 1] if index + 1 < len(PHASE_SEQUENCE) else TARGET_COMPLETED


@transaction.atomic
def rollout_advance(
    *, rollout: Rollout, to: str, actor: Any, reason: str, now: dt.datetime | None = None
) -> Phase | None:
    """Move the rollout one step: into the next phase, or to ``completed`` after GA.

    The governance app calls this once a transition request is approved and its
    gates pass; it only enforces the state machine. Entering a phase exposes the
    multi-agent flags to the cohorts whose entry phase has come; entering GA
    switches guardrail compensations to enforce. Returns the new active phase
    (``None`` once completed). ``now`` backdates the move (demo data only); it
    may not lie before the current phase was entered.
    """
    rollout = _locked_rollout(rollout)
    current = active_phase(rollout)
    now = _moment(now, current)
    expected = next_target(rollout, current)
    if expected is None or to != expected:
        where = current.get_kind_display() if current else rollout.get_status_display()
        raise InvalidTransition(
            f"A rollout in {where} cannot move to {to}"
            + (f"; the next step is {expected}." if expected else "; it has no next step.")
        )
    _set_phase_status(current, PhaseStatus.COMPLETED, actor=actor, reason=reason, now=now)
    # In this transaction (as a rollback's): the webhook deliveries and their outbox rows commit with the step.
    signals.transition_applied.send(sender=Rollout, rollout_id=rollout.pk, from_phase=current.kind, to=to)
    if to == TARGET_COMPLETED:
        _set_rollout_status(rollout, RolloutStatus.COMPLETED, actor=actor, reason=reason)
        return None
    new_phase = rollout.phases.get(kind=to)
    if to == PhaseKind.GENERAL_AVAILABILITY:
        new_phase.guardrail_mode = GuardrailMode.ENFORCE
    _set_phase_status(new_phase, PhaseStatus.ACTIVE, actor=actor, reason=reason, now=now)
    if rollout.status == RolloutStatus.DRAFT:
        _set_rollout_status(rollout, RolloutStatus.IN_PROGRESS, actor=actor, reason=reason)
    _sync_exposures(rollout, phase_kind=to, actor=actor, reason=reason)
    return new_phase


def reentry_target(rollout: Rollout) -> str | None:
    """The phase a rolled-back rollout can be asked to re-enter (the one rolled back), or None."""
    if rollout.status != RolloutStatus.ROLLED_BACK:
        return None
    return (
        rollout.phases.filter(status=PhaseStatus.ROLLED_BACK).order_by("-order").values_list("kind", flat=True).first()
    )


@transaction.atomic
def rollout_resume(*, rollout: Rollout, actor: Any, reason: str, now: dt.datetime | None = None) -> Phase:
    """Re-enter the phase that was rolled back, once the cause is fixed: a new activity period of it.

    The governance app calls this when an approved re-entry request is applied (its gates: incident closed,
    retrospective published, plan signed off). The multi-agent flags return for the phase's cohorts and
    ``agent_v1_fallback`` goes off; streaks, the soak and the GA gate count from the new entry.
    """
    rollout = _locked_rollout(rollout)
    if rollout.status != RolloutStatus.ROLLED_BACK:
        raise InvalidTransition("Only a rolled-back rollout can be resumed.")
    phase = rollout.phases.filter(status=PhaseStatus.ROLLED_BACK).order_by("-order").first()
    if phase is None:
        raise InvalidTransition("This rollout has no rolled-back phase to re-enter.")
    now = _moment(now, None)
    if phase.exited_at is not None and now < phase.exited_at:
        raise InvalidTransition("A re-entry cannot be dated before the rollback.")
    _set_phase_status(phase, PhaseStatus.ACTIVE, actor=actor, reason=reason, now=now)
    _set_rollout_status(rollout, RolloutStatus.IN_PROGRESS, actor=actor, reason=reason)
    _set_fallback(rollout, tenants=_member_tenants(rollout), on=False, actor=actor, reason=reason)
    _sync_exposures(rollout, phase_kind=phase.kind, actor=actor, reason=reason)
    return phase


@transaction.atomic
def rollout_cancel(*, rollout: Rollout, actor: Any, reason: str) -> Rollout:
    require_perm(actor, "rollout.change_rollout")
    if not reason.strip():
        raise InvalidTransition("Cancelling a rollout needs a reason.")
    rollout = _locked_rollout(rollout)
    _set_rollout_status(rollout, RolloutStatus.CANCELLED, actor=actor, reason=reason)
    current = active_phase(rollout)
    if current is not None:
        now = timezone.now()
        current.exited_at = now
        save_tracked(current, actor=actor, reason=reason)
        _close_period(current, ended=PeriodEnd.CANCELLED, actor=actor, reason=reason, now=now)
    signals.rollout_cancelled.send(sender=Rollout, rollout=rollout, actor=actor, reason=reason)
    return rollout


@transaction.atomic
def rollout_rollback(
    *,
    rollout: Rollout,
    actor: Any,
    reason: str,
    kind: str = IncidentKind.MANUAL,
    trigger: str = "",
    evidence: Sequence[Mapping[str, Any]] = (),
) -> Incident:
    """Roll the active phase back (playbook section 4) and open an incident.

    The phase and rollout become ``rolled_back``; for every tenant of a cohort
    already exposed, the multi-agent flags go off and ``agent_v1_fallback`` on.
    Listeners of ``signals.rollout_rolled_back`` (the ledger entry, the notifications' deliveries) run in the
    same transaction; the notifications themselves are sent by tasks after commit (the outbox).
    """
    if kind == IncidentKind.MANUAL:
        require_perm(actor, "rollout.roll_back_rollout")
    if not reason.strip():
        raise InvalidTransition("A rollback needs a reason.")
    rollout = _locked_rollout(rollout)
    current = active_phase(rollout)
    if rollout.status != RolloutStatus.IN_PROGRESS or current is None:
        raise InvalidTransition(
            f"Only a rollout in progress can be rolled back; this one is {rollout.get_status_display().lower()}."
        )
    now = timezone.now()
    _set_phase_status(current, PhaseStatus.ROLLED_BACK, actor=actor, reason=reason, now=now)
    _set_rollout_status(rollout, RolloutStatus.ROLLED_BACK, actor=actor, reason=reason)

    affected = _tenants_exposed_by(rollout, current.kind)
    for flag in rollout.flags.filter(key__in=MULTI_AGENT_FLAGS):
        _write_exposures(flag, affected, enabled=False, actor=actor, reason=reason)
    _set_fallback(rollout, tenants=affected, on=True, actor=actor, reason=reason)

    title = (
        f"Automatic rollback in {current.get_kind_display()}: {trigger} trigger"
        if kind == IncidentKind.AUTOMATIC
        else f"Manual rollback in {current.get_kind_display()}"
    )
    incident = save_tracked(
        Incident(
            rollout=rollout,
            phase=current,
            kind=kind,
            trigger=trigger,
            title=title,
            reason=reason,
            opened_by=actor,
            opened_at=now,
        ),
        actor=actor,
        reason=reason,
    )
    _incident_event(incident, kind="opened", message=reason, actor=actor, at=now)
    if evidence:
        _incident_event(
            incident,
            kind="evidence",
            message=f"{len(evidence)} {'run' if trigger == 'guardrail' else 'item'}(s) made the trigger fire.",
            actor=actor,
            at=now,
            data={"trigger": trigger, "evidence": list(evidence)},
        )
    _incident_event(
        incident,
        kind="flags",
        message=(
            f"Multi-agent flags off and agent_v1_fallback on for {len(affected)} tenant(s) of the exposed cohorts."
        ),
        actor=actor,
        at=now,
        data={"tenants": [t.slug for t in affected]},
    )
    for order, key in enumerate(IncidentStepKey.values, start=1):
        step = IncidentStep(incident=incident, key=key, order=order)
        if key == IncidentStepKey.DISABLE_FLAGS:
            # The service has just done step 1 itself.
            step.done_by, step.done_at = actor, now
        save_tracked(step, actor=actor, reason=reason)

    signals.rollback_recorded.send(sender=Incident, rollout=rollout, incident=incident, actor=actor, reason=reason)
    # In this transaction, not on commit: the ledger entry and the notifications' deliveries and outbox rows
    # commit with the rollback, so a process killed right after the commit loses none of them.
    signals.rollout_rolled_back.send(sender=Incident, incident_id=incident.pk)
    return incident


def _incident_event(
    incident: Incident, *, kind: str, message: str, actor: Any, at: dt.datetime, data: dict | None = None
) -> IncidentEvent:
    return save_tracked(
        IncidentEvent(
            incident=incident,
            at=at,
            actor=actor if getattr(actor, "is_authenticated", False) else None,
            kind=kind,
            message=message,
            data=data or {},
        ),
        actor=actor,
        reason=message,
    )


@transaction.atomic
def incident_add_event(
    *, incident: Incident, kind: str, message: str, actor: Any = None, data: dict | None = None
) -> IncidentEvent:
    """Append a line to an incident's timeline (notifications, notes)."""
    return _incident_event(incident, kind=kind, message=message, actor=actor, at=timezone.now(), data=data)


@transaction.atomic
def incident_tick_step(*, step: IncidentStep, actor: Any) -> IncidentStep:
    require_perm(actor, "rollout.change_incident")
    step = IncidentStep.objects.select_for_update().select_related("incident").get(pk=step.pk)
    if step.done_at is not None:
        raise IncidentStateError(f"“{step.get_key_display()}” was already ticked.")
    if step.incident.status != IncidentStatus.OPEN:
        raise IncidentStateError("The incident is closed.")
    step.done_by, step.done_at = actor, timezone.now()
    save_tracked(step, actor=actor, reason=f"Step done: {step.get_key_display()}")
    _incident_event(step.incident, kind="step", message=f"Done: {step.get_key_display()}", actor=actor, at=step.done_at)
    return step


@transaction.atomic
def incident_close(*, incident: Incident, actor: Any, retrospective: str) -> Incident:
    """Close an incident with its retrospective, which is kept in the communications log."""
    require_perm(actor, "rollout.change_incident")
    if not retrospective.strip():
        raise IncidentStateError("Closing an incident needs a retrospective.")
    incident = Incident.objects.select_for_update().get(pk=incident.pk)
    if incident.status != IncidentStatus.OPEN:
        raise IncidentStateError("The incident is already closed.")
    if incident.steps.filter(done_at__isnull=True).exists():
        raise IncidentStateError("Every rollback step must be ticked before the incident closes.")
    now = timezone.now()
    retro = save_tracked(
        Communication(
            rollout_id=incident.rollout_id,
            kind=CommunicationKind.RETROSPECTIVE,
            title=f"Retrospective: {incident.title}",
            body=retrospective,
            author=actor,
            published_at=now,
        ),
        actor=actor,
        reason="Incident retrospective",
    )
    incident.status, incident.closed_at, incident.closed_by = IncidentStatus.CLOSED, now, actor
    incident.retrospective = retro
    save_tracked(incident, actor=actor, reason="Incident closed with retrospective")
    _incident_event(incident, kind="closed", message="Closed with a retrospective.", actor=actor, at=now)
    signals.incident_closed.send(sender=Incident, incident_id=incident.pk)
    return incident


# --- Flags and exposure ----------------------------------------------------------


def _member_tenants(rollout: Rollout) -> list[Tenant]:
    return list(Tenant.objects.filter(memberships__rollout=rollout).order_by("pk"))


def _tenants_exposed_by(rollout: Rollout, phase_kind: str) -> list[Tenant]:
    """Tenants of the cohorts whose entry phase is at or before ``phase_kind``."""
    reached = PHASE_SEQUENCE[: PHASE_SEQUENCE.index(phase_kind) + 1]
    return list(
        Tenant.objects.filter(memberships__rollout=rollout, memberships__cohort__entry_phase__in=reached)
        .order_by("pk")
        .distinct()
    )


def _write_exposures(
    flag: FeatureFlag,
    tenants: Iterable[Tenant],
    *,
    enabled: bool,
    actor: Any,
    reason: str,
    audit_extra: dict[str, Any] | None = None,
) -> int:
    """Set ``flag`` for ``tenants``; only rows that change are written (and recorded)."""
    tenants = list(tenants)
    existing = {e.tenant_id: e for e in FlagExposure.objects.filter(flag=flag, tenant__in=tenants)}
    changed = 0
    for tenant in tenants:
        exposure = existing.get(tenant.pk) or FlagExposure(flag=flag, tenant=tenant, enabled=not enabled)
        if exposure.pk is None and not enabled:
            continue  # no row already means off
        if exposure.enabled == enabled and exposure.pk is not None:
            continue
        exposure.enabled = enabled
        save_tracked(exposure, actor=actor, reason=reason, audit_extra=audit_extra)
        changed += 1
    return changed


def _sync_exposures(rollout: Rollout, *, phase_kind: str, actor: Any, reason: str) -> None:
    """Make the multi-agent flags match the plan for ``phase_kind``.

    A tenant gets them once its cohort's entry phase has come; voice insights
    only where transcript ingestion is confirmed.
    """
    exposed = {t.pk for t in _tenants_exposed_by(rollout, phase_kind)}
    members = _member_tenants(rollout)
    for flag in rollout.flags.filter(key__in=MULTI_AGENT_FLAGS):
        on = [
            t
            for t in members
            if t.pk in exposed and (flag.key != FlagKey.VOICE_INSIGHTS or t.transcript_ingestion_confirmed)
        ]
        on_ids = {t.pk for t in on}
        _write_exposures(flag, on, enabled=True, actor=actor, reason=reason)
        _write_exposures(flag, [t for t in members if t.pk not in on_ids], enabled=False, actor=actor, reason=reason)


def _set_fallback(
    rollout: Rollout,
    *,
    tenants: Sequence[Tenant],
    on: bool,
    actor: Any,
    reason: str,
    audit_extra: dict[str, Any] | None = None,
) -> int:
    flag = rollout.flags.get(key=FlagKey.AGENT_V1_FALLBACK)
    return _write_exposures(flag, tenants, enabled=on, actor=actor, reason=reason, audit_extra=audit_extra)


@transaction.atomic
def flag_set_exposure(*, flag: FeatureFlag, tenants: Sequence[Tenant], enabled: bool, actor: Any, reason: str) -> int:
    """Turn a flag on or off for some tenants of the rollout; returns how many rows changed.

    Refuses voice insights for tenants without confirmed transcript ingestion,
    and the kill switch (which has its own break-glass service).
    """
    require_perm(actor, "rollout.change_flagexposure")
    if not reason.strip():
        raise InvalidPlan("Changing a flag's exposure needs a reason.", field="reason")
    _locked_rollout(flag.rollout)
    if flag.key == FlagKey.AGENT_V1_FALLBACK:
        raise InvalidPlan("agent_v1_fallback is the kill switch: use the kill-switch action.")
    members = set(CohortMembership.objects.filter(rollout_id=flag.rollout_id).values_list("tenant_id", flat=True))
    outsiders = [t.name for t in tenants if t.pk not in members]
    if outsiders:
        raise InvalidPlan(f"Not in any cohort of this rollout: {', '.join(outsiders)}.", field="tenants")
    if enabled and flag.key == FlagKey.VOICE_INSIGHTS:
        unconfirmed = sorted(t.name for t in tenants if not t.transcript_ingestion_confirmed)
        if unconfirmed:
            raise VoiceIngestionNotConfirmed(
                "Voice insights can only be exposed to tenants with confirmed transcript ingestion; "
                f"not confirmed: {', '.join(unconfirmed)}.",
                field="tenants",
            )
    return _write_exposures(flag, tenants, enabled=enabled, actor=actor, reason=reason)


@transaction.atomic
def kill_switch_set(*, rollout: Rollout, on: bool, actor: Any, reason: str, auth: dict[str, Any] | None = None) -> int:
    """Break-glass: turn ``agent_v1_fallback`` on or off for every tenant of the rollout.

    No approvals; needs a reason, and is recorded like any other change (with ``auth``, how and when the actor
    last authenticated, in each entry).
    """
    require_perm(actor, "rollout.operate_kill_switch")
    if not reason.strip():
        raise InvalidPlan("The kill switch needs a reason.", field="reason")
    rollout = _locked_rollout(rollout)
    return _set_fallback(
        rollout,
        tenants=_member_tenants(rollout),
        on=on,
        actor=actor,
        reason=reason,
        audit_extra={"auth": auth} if auth else None,
    )


# --- Tenants and cohorts ---------------------------------------------------------


@transaction.atomic
def tenant_save(*, tenant: Tenant, actor: Any, reason: str) -> Tenant:
    """Add a tenant or save changes to one (the admin's form calls this too).

    Withdrawing transcript ingestion turns voice insights off for the tenant in every rollout.
    """
    require_perm(actor, "rollout.change_tenant" if tenant.pk else "rollout.add_tenant")
    tenant.name = tenant.name.strip()
    if not tenant.slug:
        tenant.slug = slugify(tenant.name)[:80]
    if not tenant.slug:
        raise InvalidPlan("A tenant needs a name.", field="name")
    if tenant.tier == CohortKind.BETA and not tenant.account_manager.strip():
        raise InvalidPlan("A beta tenant needs a dedicated account manager.", field="account_manager")
    clash = Tenant.objects.filter(Q(name=tenant.name) | Q(slug=tenant.slug)).exclude(pk=tenant.pk)
    if clash.exists():
        raise InvalidPlan(f"A tenant named {tenant.name!r} already exists.", field="name")
    was_confirmed = (
        Tenant.objects.select_for_update()
        .filter(pk=tenant.pk)
        .values_list("transcript_ingestion_confirmed", flat=True)
        .first()
        if tenant.pk
        else None
    )
    save_tracked(tenant, actor=actor, reason=reason)
    if was_confirmed and not tenant.transcript_ingestion_confirmed:
        for exposure in FlagExposure.objects.filter(tenant=tenant, flag__key=FlagKey.VOICE_INSIGHTS, enabled=True):
            exposure.enabled = False
            save_tracked(exposure, actor=actor, reason=f"Transcript ingestion withdrawn: {reason}")
    return tenant


def tenant_create(
    *,
    name: str,
    tier: str = CohortKind.GENERAL,
    transcript_ingestion_confirmed: bool = False,
    account_manager: str = "",
    account_manager_email: str = "",
    actor: Any = None,
    reason: str = "Tenant added",
) -> Tenant:
    tenant = Tenant(
        name=name,
        tier=tier,
        transcript_ingestion_confirmed=transcript_ingestion_confirmed,
        account_manager=account_manager,
        account_manager_email=account_manager_email,
    )
    return tenant_save(tenant=tenant, actor=actor, reason=reason)


@transaction.atomic
def cohort_set_tenants(*, cohort: Cohort, tenants: Sequence[Tenant], actor: Any, reason: str) -> Cohort:
    """Replace a cohort's members; a tenant belongs to one cohort of a rollout at most.

    Members get the flags the current phase gives their cohort.
    """
    require_perm(actor, "rollout.change_cohort")
    rollout = _locked_rollout(cohort.rollout)
    wanted = {t.pk: t for t in tenants}
    elsewhere = (
        CohortMembership.objects.filter(rollout=rollout, tenant_id__in=wanted)
        .exclude(cohort=cohort)
        .select_related("tenant", "cohort")
    )
    clashes = [f"{m.tenant.name} ({m.cohort.name})" for m in elsewhere]
    if clashes:
        raise CohortOverlap(
            "A tenant can belong to one cohort of a rollout only; already elsewhere: " + ", ".join(clashes) + ".",
            field="tenants",
        )
    current = {m.tenant_id: m for m in cohort.memberships.all()}
    for tenant_id, membership in current.items():
        if tenant_id not in wanted:
            delete_tracked(membership, actor=actor, reason=reason)
    for tenant_id, tenant in wanted.items():
        if tenant_id not in current:
            save_tracked(CohortMembership(rollout=rollout, cohort=cohort, tenant=tenant), actor=actor, reason=reason)
    phase = active_phase(rollout)
    if phase is not None and rollout.status == RolloutStatus.IN_PROGRESS:
        _sync_exposures(rollout, phase_kind=phase.kind, actor=actor, reason=reason)
    removed = [tid for tid in current if tid not in wanted]
    if removed:
        for exposure in FlagExposure.objects.filter(flag__rollout=rollout, tenant_id__in=removed, enabled=True):
            exposure.enabled = False
            save_tracked(exposure, actor=actor, reason=f"Left the rollout's cohorts: {reason}")
    signals.plan_changed.send(sender=Rollout, rollout=rollout, actor=actor, reason=reason)
    return cohort


# --- Creating a rollout from the playbook ----------------------------------------------


def _unique_slug(name: str) -> str:
    """A free slug from the name; a word the URLs use where the slug goes (``new``) gets a suffix too."""
    base = slugify(name)[:70] or "rollout"
    reserved = reserved_segments("rollouts/")
    slug, n = base, 2
    while slug in reserved or Rollout.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@transaction.atomic
def rollout_create_from_playbook(
    *,
    name: str,
    owner: Any,
    actor: Any = None,
    description: str = "",
    expected_impacts: str = "",
    start_date: dt.date | None = None,
    slug: str | None = None,
    tenants: Iterable[Tenant] | None = None,
    reason: str = "Created from the playbook template",
    now: dt.datetime | None = None,
) -> Rollout:
    """Lay down a rollout with everything the playbook template holds, in one transaction.

    Four phases (preparation active) with a deployment calendar from
    ``start_date``, the readiness and exit-criteria checklists, the five flags
    (all off), the internal/beta/general cohorts filled from the tenants' tiers,
    a default escalation matrix and the playbook's rollback thresholds (model
    defaults). ``signals.rollout_created`` lets the evaluations app add the
    default success criteria in the same transaction.
    """
    actor = owner if actor is None else actor
    require_perm(actor, "rollout.add_rollout")
    name = name.strip()
    if not name:
        raise InvalidPlan("A rollout needs a name.", field="name")
    if slug:
        if slug in reserved_segments("rollouts/"):
            raise InvalidPlan(f"The slug {slug!r} is a word the dashboard's addresses use.", field="slug")
        if Rollout.objects.filter(slug=slug).exists():
            raise InvalidPlan(f"The slug {slug!r} is taken.", field="slug")
    else:
        slug = _unique_slug(name)
    start = start_date or timezone.localdate()
    try:
        with transaction.atomic():
            rollout = save_tracked(
                Rollout(name=name, slug=slug, description=description, owner=owner, expected_impacts=expected_impacts),
                actor=actor,
                reason=reason,
            )
    except IntegrityError as exc:
        raise InvalidPlan(f"The slug {slug!r} is taken.", field="slug") from exc
    now = _moment(now, None)
    for order, kind in enumerate(PHASE_SEQUENCE, start=1):
        phase = Phase(
            rollout=rollout,
            kind=kind,
            order=order,
            planned_start=start + dt.timedelta(days=playbook.PHASE_OFFSETS_DAYS[kind]),
        )
        if kind == PhaseKind.PREPARATION:
            phase.status, phase.entered_at = PhaseStatus.ACTIVE, now
        save_tracked(phase, actor=actor, reason=reason)
        if phase.status == PhaseStatus.ACTIVE:
            _open_period(phase, actor=actor, reason=reason, now=now)
    for kind, items in ((ChecklistKind.READINESS, playbook.READINESS_ITEMS), (ChecklistKind.EXIT, playbook.EXIT_ITEMS)):
        for order, (key, title) in enumerate(items, start=1):
            save_tracked(
                ChecklistItem(rollout=rollout, kind=kind, key=key, title=title, order=order), actor=actor, reason=reason
            )
    for key in FlagKey.values:
        save_tracked(
            FeatureFlag(rollout=rollout, key=key, description=playbook.FLAG_DESCRIPTIONS[key]),
            actor=actor,
            reason=reason,
        )
    cohorts = {}
    for kind in CohortKind.values:
        cohorts[kind] = save_tracked(
            Cohort(rollout=rollout, kind=kind, name=playbook.COHORT_NAMES[kind], entry_phase=COHORT_ENTRY_PHASE[kind]),
            actor=actor,
            reason=reason,
        )
    for tenant in Tenant.objects.all() if tenants is None else tenants:
        save_tracked(
            CohortMembership(rollout=rollout, cohort=cohorts[tenant.tier], tenant=tenant), actor=actor, reason=reason
        )
    for order, (severity, contact, role, channel) in enumerate(playbook.DEFAULT_ESCALATION_MATRIX):
        save_tracked(
            EscalationContact(
                rollout=rollout, severity=severity, contact=contact, role=role, channel=channel, order=order
            ),
            actor=actor,
            reason=reason,
        )
    signals.rollout_created.send(sender=Rollout, rollout=rollout, actor=actor, reason=reason)
    return rollout


# --- The plan: calendar, thresholds, escalation matrix ------------------------------

PLAN_FIELDS: tuple[str, ...] = (
    "expected_impacts",
    "guardrail_compensation_threshold",
    "guardrail_breach_runs",
    "latency_sla_ms",
    "latency_breach_intervals",
    "canary_soak_hours",
    "ga_consecutive_runs",
)


@transaction.atomic
@dataclass(frozen=True)
class PlanUpdate:
    """What a plan save did: whether anything changed, and which roles' sign-offs the new version superseded."""

    rollout: Rollout
    changed: bool
    resign_roles: tuple[str, ...] = ()


def _consequences(responses: list[tuple[Any, Any]]) -> tuple[str, ...]:
    roles: list[str] = []
    for _receiver, response in responses:
        if isinstance(response, dict):
            roles += [r for r in response.get("resign_roles", ()) if r not in roles]
    return tuple(roles)


def rollout_update_plan(
    *,
    rollout: Rollout,
    actor: Any,
    reason: str,
    planned_starts: Mapping[str, dt.date | None] | None = None,
    **fields: Any,
) -> PlanUpdate:
    """Change the deployment calendar and thresholds. Listeners may void plan sign-offs (``resign_roles``)."""
    require_perm(actor, "rollout.change_rollout")
    unknown = set(fields) - set(PLAN_FIELDS)
    if unknown:
        raise InvalidPlan(f"Not part of the plan: {', '.join(sorted(unknown))}.")
    if not reason.strip():
        raise InvalidPlan("Changing the plan needs a reason.", field="reason")
    rollout = _locked_rollout(rollout)
    if rollout.is_closed:
        raise InvalidPlan("A completed or cancelled rollout's plan cannot change.")
    phases = {p.kind: p for p in rollout.phases.all()}
    if planned_starts:
        dates = [planned_starts.get(k, phases[k].planned_start) for k in PHASE_SEQUENCE]
        known = [d for d in dates if d is not None]
        if known != sorted(known):
            raise InvalidPlan("Planned starts must follow the phase order.", field="planned_starts")
    changed = False
    for name, value in fields.items():
        if getattr(rollout, name) != value:
            setattr(rollout, name, value)
            changed = True
    if changed:
        rollout.full_clean(exclude=["owner", "slug"])
        save_tracked(rollout, actor=actor, reason=reason)
    for kind, date in (planned_starts or {}).items():
        phase = phases[kind]
        if phase.planned_start != date:
            phase.planned_start = date
            save_tracked(phase, actor=actor, reason=reason)
            changed = True
    resign: tuple[str, ...] = ()
    if changed:
        resign = _consequences(signals.plan_changed.send(sender=Rollout, rollout=rollout, actor=actor, reason=reason))
    return PlanUpdate(rollout=rollout, changed=changed, resign_roles=resign)


@dataclass(frozen=True)
class EscalationRow:
    severity: str
    contact: str
    role: str
    channel: str


@transaction.atomic
def escalation_matrix_replace(
    *, rollout: Rollout, rows: Sequence[EscalationRow], actor: Any, reason: str
) -> list[EscalationContact]:
    require_perm(actor, "rollout.change_escalationcontact")
    if not rows:
        raise InvalidPlan("The escalation matrix needs at least one contact.")
    rollout = _locked_rollout(rollout)
    current = list(rollout.escalation_contacts.order_by("severity", "order", "id"))
    if [(c.severity, c.contact, c.role, c.channel) for c in current] == [
        (r.severity, r.contact, r.role, r.channel) for r in sorted(rows, key=lambda r: r.severity)
    ]:
        return current
    for contact in current:
        delete_tracked(contact, actor=actor, reason=reason)
    created = [
        save_tracked(
            EscalationContact(
                rollout=rollout, severity=r.severity, contact=r.contact, role=r.role, channel=r.channel, order=i
            ),
            actor=actor,
            reason=reason,
        )
        for i, r in enumerate(rows)
    ]
    signals.plan_changed.send(sender=Rollout, rollout=rollout, actor=actor, reason=reason)
    return created


# --- Checklists -------------------------------------------------------------------------


@transaction.atomic
def checklist_item_tick(*, item: ChecklistItem, actor: Any, evidence_url: str, reason: str = "") -> ChecklistItem:
    require_perm(actor, "rollout.change_checklistitem")
    item = ChecklistItem.objects.select_for_update().get(pk=item.pk)
    if item.is_done:
        raise ChecklistItemStateError(f"“{item.title}” is already ticked.")
    if not evidence_url.strip():
        raise ChecklistItemStateError("Ticking an item needs a link to its evidence.", field="evidence_url")
    item.evidence_url = evidence_url.strip()
    item.completed_by, item.completed_at = actor, timezone.now()
    item.full_clean(exclude=["rollout", "completed_by"])
    save_tracked(item, actor=actor, reason=reason or f"Ticked: {item.title}")
    return item


@transaction.atomic
def checklist_item_untick(*, item: ChecklistItem, actor: Any, reason: str) -> ChecklistItem:
    require_perm(actor, "rollout.change_checklistitem")
    if not reason.strip():
        raise ChecklistItemStateError("Reopening an item needs a reason.", field="reason")
    item = ChecklistItem.objects.select_for_update().get(pk=item.pk)
    if not item.is_done:
        raise ChecklistItemStateError(f"“{item.title}” is not ticked.")
    item.completed_by, item.completed_at = None, None
    save_tracked(item, actor=actor, reason=reason)
    return item


# --- Communications and feedback ----------------------------------------------------------


@transaction.atomic
def communication_create(
    *, rollout: Rollout, kind: str, title: str, body: str, actor: Any, publish: bool = False
) -> Communication:
    require_perm(actor, "rollout.add_communication")
    if kind == CommunicationKind.RETROSPECTIVE:
        raise InvalidPlan("Retrospectives are written when an incident closes.", field="kind")
    if kind not in CommunicationKind.values:
        raise InvalidPlan(f"Unknown communication kind {kind!r}.", field="kind")
    if not title.strip() or not body.strip():
        raise InvalidPlan("A communication needs a title and a body.")
    comm = Communication(
        rollout=rollout,
        kind=kind,
        title=title.strip(),
        body=body,
        author=actor,
        published_at=timezone.now() if publish else None,
    )
    return save_tracked(comm, actor=actor, reason=f"{comm.get_kind_display()} {'published' if publish else 'drafted'}")


@transaction.atomic
def communication_update(*, communication: Communication, title: str, body: str, actor: Any) -> Communication:
    require_perm(actor, "rollout.change_communication")
    communication = Communication.objects.select_for_update().get(pk=communication.pk)
    if not communication.is_draft:
        raise InvalidPlan("A published communication is part of the record and cannot be edited.")
    if not title.strip() or not body.strip():
        raise InvalidPlan("A communication needs a title and a body.")
    communication.title, communication.body = title.strip(), body
    return save_tracked(communication, actor=actor, reason="Draft edited")


@transaction.atomic
def communication_publish(*, communication: Communication, actor: Any) -> Communication:
    require_perm(actor, "rollout.change_communication")
    communication = Communication.objects.select_for_update().get(pk=communication.pk)
    if not communication.is_draft:
        raise InvalidPlan("This communication is already published.")
    communication.published_at = timezone.now()
    return save_tracked(communication, actor=actor, reason=f"{communication.get_kind_display()} published")


@transaction.atomic
def phase_feedback_add(*, phase: Phase, actor: Any, severity: str, text: str, link: str = "") -> PhaseFeedback:
    require_perm(actor, "rollout.add_phasefeedback")
    if not text.strip():
        raise InvalidPlan("Feedback needs some text.", field="text")
    if phase.status == PhaseStatus.PENDING:
        raise InvalidPlan("Feedback is collected once a phase has started.")
    feedback = PhaseFeedback(phase=phase, author=actor, severity=severity, text=text.strip(), link=link.strip())
    feedback.full_clean(exclude=["phase", "author"])
    return save_tracked(feedback, actor=actor, reason=f"{feedback.get_severity_display()} feedback")
