"""Every governance write: plan sign-offs, transition requests and decisions, apply, approvers, exports.

Each service validates, locks the rollout row first (then the request row), writes
in one transaction and saves tracked rows with ``save_tracked``; the ledger entry
of each historical record carries the governance action set here. Rules the
database can hold are constraints too (``models.py``): the services check first
so the user gets a named error, the constraints catch whatever slips past.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from rollout.context import user_actor
from rollout.errors import ActionNotAllowed, InvalidTransition
from rollout.history import actor_name, delete_tracked, save_tracked
from rollout.models import Rollout
from rollout.roles import has_role, require_perm
from rollout.services import active_phase, rollout_advance, rollout_resume

from . import ledger, manifest
from .errors import (
    AlreadyApplied,
    CommentRequired,
    GateNotMet,
    InvalidApprovers,
    InvalidAuditFilter,
    InvalidDecision,
    NotInRole,
    OneRolePerPerson,
    RequestAlreadyOpen,
    RequestClosed,
    RequestNotApproved,
    RoleAlreadyDecided,
    RoleNotRequired,
    RolloutClosed,
    SelfApprovalForbidden,
    StaleVersion,
)
from .models import (
    PENDING_STATUSES,
    ApprovingRole,
    AuditEvent,
    Decision,
    PlanSignOff,
    RequestKind,
    RequestStatus,
    TransitionApproval,
    TransitionRequest,
    TransitionTarget,
)
from .selectors import (
    LEAD_ROLE_VALUES,
    ROLE_LABELS,
    AuditFilter,
    approver_config,
    approver_config_from,
    approving_role_rows,
    audit_events,
    failed,
    gates_for,
    next_step,
    plan_hash,
    request_version,
    short_version,
    step_label,
    target_label,
)

EXPORT_FORMATS = ("csv", "jsonl")


def _when(now: dt.datetime | None) -> dt.datetime:
    """The moment a decision is recorded at: now, or an earlier one (demo data lays down a past timeline)."""
    real = timezone.now()
    if now is None:
        return real
    if now > real:
        raise InvalidDecision("A decision cannot be dated in the future.")
    return now


def _auth_extra(auth: dict[str, Any] | None) -> dict[str, Any] | None:
    """A decision's ledger data: how and when the actor last authenticated (``rollout.auth.decision_auth``)."""
    return {"auth": auth} if auth else None


def _lock(rollout_id: int) -> Rollout:
    return Rollout.objects.select_for_update().get(pk=rollout_id)


def _check_decision(decision: str, comment: str) -> None:
    if decision not in Decision.values:
        raise InvalidDecision(f"Unknown decision {decision!r}: approve or reject.", field="decision")
    if decision == Decision.REJECT and not comment.strip():
        raise CommentRequired("A rejection needs a comment saying why.", field="comment")


# --- Plan sign-off -------------------------------------------------------------------------------


@transaction.atomic
def plan_sign_off(
    *,
    rollout: Rollout,
    role: str,
    decision: str,
    comment: str,
    actor: Any,
    version: str | None = None,
    now: dt.datetime | None = None,
    auth: dict[str, Any] | None = None,
) -> PlanSignOff:
    """A lead approves or rejects the current version of the plan, in one role they hold.

    ``version`` is the plan hash the lead was shown (every form sends it): when
    the plan has changed since, nothing is recorded (``StaleVersion``).
    """
    role = str(role)
    if role not in LEAD_ROLE_VALUES:
        raise NotInRole(f"Only the product, support, compliance and SRE leads sign off a plan, not {role!r}.")
    if actor is None or not has_role(actor, role):
        raise NotInRole(f"Only a member of {ROLE_LABELS[role]} signs off for that role.", field="role")
    _check_decision(decision, comment)
    rollout = _lock(rollout.pk)
    if rollout.is_closed:
        raise RolloutClosed("A completed or cancelled rollout's plan is no longer signed.")
    current_version = plan_hash(rollout)
    if version is not None and version != current_version:
        raise StaleVersion(
            f"The plan changed since you loaded it: you saw version {short_version(version)}, it is now "
            f"{short_version(current_version)}. Nothing was recorded; read the current plan and sign again.",
            seen=version,
            current=current_version,
        )
    version = current_version
    # A plan change that did not announce itself still voids earlier sign-offs.
    _supersede(rollout, version, actor=actor, reason="Plan version changed")
    live = list(PlanSignOff.objects.select_for_update().filter(rollout=rollout, superseded_at__isnull=True))
    taken = next((s for s in live if s.role == role), None)
    if taken is not None:
        raise RoleAlreadyDecided(
            f"{ROLE_LABELS[role]} already {taken.decision}d this plan version ({taken.signer_name})."
        )
    if any(s.signer_id == actor.pk for s in live):
        raise OneRolePerPerson("You already signed this plan version in another role; one person signs in one role.")
    sign_off = PlanSignOff(
        rollout=rollout,
        role=role,
        signer=actor,
        signer_name=actor_name(actor),
        decision=decision,
        comment=comment.strip(),
        plan_hash=version,
        signed_at=_when(now),
    )
    verb = "approved" if decision == Decision.APPROVE else "rejected"
    return save_tracked(
        sign_off,
        action=f"signoff.{decision}",
        actor=actor,
        reason=comment.strip() or f"Plan {verb} by {ROLE_LABELS[role]}",
        audit_extra=_auth_extra(auth),
    )


def _supersede(rollout: Rollout, version: str, *, actor: Any, reason: str) -> list[PlanSignOff]:
    stale = PlanSignOff.objects.select_for_update().filter(rollout=rollout, superseded_at__isnull=True)
    now = timezone.now()
    superseded = []
    for sign_off in stale.exclude(plan_hash=version).order_by("id"):
        sign_off.superseded_at, sign_off.superseded_by_hash = now, version
        save_tracked(sign_off, action="signoff.supersede", actor=actor, reason=reason)
        superseded.append(sign_off)
    return superseded


@transaction.atomic
def sign_offs_supersede(*, rollout: Rollout, actor: Any, reason: str) -> list[PlanSignOff]:
    """After a plan change (inside its transaction): sign-offs of other versions stop counting.

    Returns the sign-offs it superseded: their roles must sign the new version.
    """
    return _supersede(rollout, plan_hash(rollout), actor=actor, reason=f"Plan changed: {reason}")


# --- Transition requests ------------------------------------------------------------------------------


@transaction.atomic
def transition_request_create(
    *, rollout: Rollout, justification: str, actor: Any, target: str | None = None, now: dt.datetime | None = None
) -> TransitionRequest:
    """A rollout-admin asks for the rollout's next step; the approving roles then decide."""
    require_perm(actor, "governance.add_transitionrequest")
    if not justification.strip():
        raise CommentRequired("A transition request needs a justification.", field="justification")
    rollout = _lock(rollout.pk)
    current = active_phase(rollout)
    expected, kind = next_step(rollout, current)
    if expected is None:
        raise InvalidTransition(f"A {rollout.get_status_display().lower()} rollout has no next step to request.")
    if target is not None and target != expected:
        raise InvalidTransition(f"The next step is the {step_label(expected, kind)}, not {target_label(target)}.")
    if TransitionRequest.objects.filter(rollout=rollout, status__in=PENDING_STATUSES).exists():
        raise RequestAlreadyOpen("This rollout already has an open transition request: decide or withdraw it first.")
    request = TransitionRequest(
        rollout=rollout,
        kind=kind,
        # A re-entry goes back into the phase it leaves from: the one rolled back.
        from_phase=current.kind if current else expected,
        target=expected,
        justification=justification.strip(),
        requested_by=actor,
        requester_name=actor_name(actor),
        requested_at=_when(now),
    )
    try:
        with transaction.atomic():
            return save_tracked(request, action="transition.request", actor=actor, reason=justification.strip())
    except IntegrityError as exc:  # the partial unique index, should the check above ever be bypassed
        raise RequestAlreadyOpen("This rollout already has an open transition request.") from exc


class _Reads:
    """Simple querysets (model rows or ``values_list`` tuples) compiled once per thread and evaluated together.

    On PostgreSQL with a client-side binding cursor (Django's default with psycopg 3) the statements go as one
    query string: they still run one after another, each waiting for its row locks before the next starts and
    each with its own snapshot (READ COMMITTED), exactly as separate queries would, minus the round trips.
    Compiling them (the models' default orderings included) cost more CPU than running them, so the SQL is kept
    and only the ids change: ``build(*ids)`` must give querysets whose only parameters are those ids, in order.
    Anything else (SQLite, server-side binding) evaluates the querysets one by one.
    """

    def __init__(self, build: Any) -> None:
        self.build = build
        self.local = threading.local()

    def _compiled(self, ids: Sequence[list[Any]]) -> list[tuple[bool, Any, str, str]]:
        """(values_list?, compiler, SQL, database) per queryset, compiled on this thread's first call."""
        from django.db.models.query import ValuesListIterable

        cached = getattr(self.local, "compiled", None)  # per thread: each has its own connection
        if cached is None:
            cached = []
            for qs, params in zip(self.build(*ids), ids, strict=True):
                if qs.query.select_related or qs.query.annotations or qs.query.extra or qs._prefetch_related_lookups:
                    raise ValueError("_Reads takes querysets of plain rows")
                compiler = qs.query.get_compiler(connection=connection)
                sql, got = compiler.as_sql()
                if list(got) != list(params):
                    raise ValueError(f"_Reads: expected the parameters {params}, got {got}")
                cached.append((qs._iterable_class is ValuesListIterable, compiler, sql, qs.db))
            self.local.compiled = cached
        return cached

    def __call__(self, *ids: list[Any]) -> list[list[Any]]:
        import psycopg

        if connection.vendor != "postgresql":
            return [list(qs) for qs in self.build(*ids)]
        with connection.cursor() as cursor:
            if not isinstance(cursor.cursor, psycopg.ClientCursor):
                return [list(qs) for qs in self.build(*ids)]
            compiled = self._compiled(ids)
            statements = [
                cursor.cursor.mogrify(sql, params) for (_, _, sql, _), params in zip(compiled, ids, strict=True)
            ]
            cursor.execute("; ".join(statements))
            results: list[list[Any]] = []
            for index, (values, compiler, _sql, db) in enumerate(compiled):
                if index:
                    cursor.nextset()
                rows = compiler.results_iter(results=[cursor.fetchall()], tuple_expected=True)
                if values:
                    results.append(list(rows))
                    continue
                # What ModelIterable does for a queryset without related selections or annotations.
                select_fields = compiler.klass_info["select_fields"]
                start, end = select_fields[0], select_fields[-1] + 1
                names = [column[0].target.attname for column in compiler.select[start:end]]
                model = compiler.klass_info["model"]
                results.append([model.from_db(db, names, row[start:end]) for row in rows])
        return results


# transition_decide's reads: the locks in the order every governance write takes them (rollout, request, its
# approvals), then the approving roles; the same statements _locked_request, the approvals query and
# approver_config run.
_decide_reads = _Reads(
    lambda rollout, request, approvals, roles: (
        Rollout.objects.select_for_update().filter(pk=rollout[0]),
        TransitionRequest.objects.select_for_update().filter(pk=request[0]),
        TransitionApproval.objects.select_for_update().filter(request_id=approvals[0], voided_at__isnull=True),
        approving_role_rows(roles[0]),
    )
)


def _locked_request(request: TransitionRequest) -> tuple[Rollout, TransitionRequest]:
    # Always the rollout row first, then the request: the order every governance write uses.
    rollout = _lock(request.rollout_id)
    locked = TransitionRequest.objects.select_for_update().get(pk=request.pk)
    locked.rollout = rollout
    return rollout, locked


@transaction.atomic
def transition_decide(
    *,
    request: TransitionRequest,
    role: str,
    decision: str,
    comment: str,
    actor: Any,
    version: str | None = None,
    now: dt.datetime | None = None,
    auth: dict[str, Any] | None = None,
) -> TransitionApproval:
    """One required role approves or rejects. A rejection rejects the request; the last approval approves it.

    ``version`` is the request's state the decider was shown (``request_version``).
    """
    role = str(role)
    # The locks in the order every governance write takes them (rollout, request, its approvals), and the
    # approving roles, in one round trip (_Reads): the same statements as _locked_request and below.
    rollouts, requests, current, role_rows = _decide_reads(
        [request.rollout_id], [request.pk], [request.pk], [request.rollout_id]
    )
    if not rollouts or not requests:
        raise (Rollout if not rollouts else TransitionRequest).DoesNotExist("The request or its rollout is gone.")
    rollout, request = rollouts[0], requests[0]
    request.rollout = rollout
    for approval in current:
        approval.request = request
    if not request.is_pending:
        raise RequestClosed(f"Request #{request.pk} is {request.get_status_display().lower()}; it takes no decisions.")
    _check_request_version(request, current, version)
    required = approver_config_from(role_rows)[request.target]
    if role not in required:
        raise RoleNotRequired(
            f"{ROLE_LABELS.get(role, role)} does not approve the move into {target_label(request.target)}.",
            field="role",
        )
    if actor is None or not has_role(actor, role):
        raise NotInRole(f"Only a member of {ROLE_LABELS[role]} decides for that role.", field="role")
    if actor.pk == request.requested_by_id:
        raise SelfApprovalForbidden("You requested this transition, so you cannot decide on it.")
    _check_decision(decision, comment)
    done = next((a for a in current if a.role == role), None)
    if done is not None:
        raise RoleAlreadyDecided(f"{ROLE_LABELS[role]} already decided ({done.approver_name}: {done.decision}).")
    if any(a.approver_id == actor.pk for a in current):
        raise OneRolePerPerson("You already decided on this request in another role; one person fills one role.")
    now = _when(now)
    approval = TransitionApproval(
        request=request,
        role=role,
        decision=decision,
        comment=comment.strip(),
        approver=actor,
        approver_name=actor_name(actor),
        requester_id=request.requested_by_id,
        decided_at=now,
    )
    reason = comment.strip() or f"{ROLE_LABELS[role]} {decision}s request #{request.pk}"
    try:
        # No savepoint (two round trips): on an IntegrityError the whole decision is refused and rolled back.
        with transaction.atomic(savepoint=False):
            save_tracked(
                approval, action=f"transition.{decision}", actor=actor, reason=reason, audit_extra=_auth_extra(auth)
            )
    except IntegrityError as exc:  # a constraint caught what the checks above did not
        raise RoleAlreadyDecided("This decision conflicts with one already recorded.") from exc
    if decision == Decision.REJECT:
        request.status, request.decided_at = RequestStatus.REJECTED, now
        save_tracked(
            request, action="transition.rejected", actor=actor, reason=f"Rejected by {ROLE_LABELS[role]}: {reason}"
        )
    else:
        approved = {a.role for a in current if a.decision == Decision.APPROVE} | {role}
        if all(r in approved for r in required):
            request.status, request.decided_at = RequestStatus.APPROVED, now
            save_tracked(request, action="transition.approved", actor=actor, reason="Every required role approved")
    return approval


@transaction.atomic
def transition_apply(
    *,
    request: TransitionRequest,
    actor: Any,
    reason: str = "",
    version: str | None = None,
    now: dt.datetime | None = None,
    auth: dict[str, Any] | None = None,
) -> TransitionRequest:
    """Apply an approved request: approvals and every gate re-checked under the rollout's row lock.

    Two people pressing at once: the second waits for the lock, then finds the
    request applied. The rollout moves through its state machine in the same
    transaction (phase, flag exposure, guardrail mode on GA).
    """
    require_perm(actor, "governance.apply_transitionrequest")
    rollout, request = _locked_request(request)
    if request.status == RequestStatus.APPLIED:
        raise AlreadyApplied(f"Request #{request.pk} was already applied by {request.closed_by_name}.")
    if not request.is_pending:
        raise RequestClosed(f"Request #{request.pk} is {request.get_status_display().lower()}.")
    live = list(request.approvals.filter(voided_at__isnull=True))
    _check_request_version(request, live, version)
    required = approver_config(rollout)[request.target]
    approved = {a.role for a in live if a.decision == Decision.APPROVE}
    missing = [ROLE_LABELS[r] for r in required if r not in approved]
    if request.status != RequestStatus.APPROVED or missing:
        raise RequestNotApproved("Still waiting for: " + (", ".join(missing) or "approvals") + ".")
    now = _when(now)
    gates = failed(gates_for(rollout, request.target, now=now, kind=request.kind))
    if gates:
        raise GateNotMet("Gates not met: " + "; ".join(f"{g.label} ({g.detail})" for g in gates) + ".", gates=gates)
    note = reason.strip() or f"Applied request #{request.pk}"
    why = f"Transition request #{request.pk}, {step_label(request.target, request.kind)}: {request.justification}"
    if request.kind == RequestKind.REENTRY:
        rollout_resume(rollout=rollout, actor=actor, reason=why, now=now)
    else:
        rollout_advance(rollout=rollout, to=request.target, actor=actor, reason=why, now=now)
    request.status = RequestStatus.APPLIED
    request.closed_at, request.closed_by_name, request.close_reason = now, actor_name(actor), note
    return save_tracked(request, action="transition.apply", actor=actor, reason=note, audit_extra=_auth_extra(auth))


def _check_request_version(request: TransitionRequest, approvals: list[TransitionApproval], seen: str | None) -> None:
    if seen is None:
        return
    current = request_version(request, approvals)
    if seen != current:
        raise StaleVersion(
            f"Request #{request.pk} changed since you loaded it (now {request.get_status_display().lower()}, "
            f"{sum(1 for a in approvals if a.decision == Decision.APPROVE)} approval(s) in force; version "
            f"{short_version(current)}, you saw {short_version(seen)}). Nothing was recorded; review it again.",
            seen=seen,
            current=current,
        )


@transaction.atomic
def transition_withdraw(*, request: TransitionRequest, actor: Any, reason: str) -> TransitionRequest:
    require_perm(actor, "governance.withdraw_transitionrequest")
    if not reason.strip():
        raise CommentRequired("Withdrawing a request needs a reason.", field="reason")
    _rollout, request = _locked_request(request)
    if request.status == RequestStatus.APPLIED:
        raise AlreadyApplied(f"Request #{request.pk} was already applied.")
    if not request.is_pending:
        raise RequestClosed(f"Request #{request.pk} is {request.get_status_display().lower()}.")
    request.status = RequestStatus.WITHDRAWN
    request.closed_at, request.closed_by_name, request.close_reason = timezone.now(), actor_name(actor), reason.strip()
    return save_tracked(request, action="transition.withdraw", actor=actor, reason=reason.strip())


def withdraw_after_rollback(*, rollout: Rollout, incident: Any, actor: Any) -> list[TransitionRequest]:
    """Inside a rollback's transaction (the rollout row is locked): every open or approved request of the rollout
    is withdrawn, each with its own ledger entry and a note naming the incident. They asked for a move out of a
    phase that is no longer active; a re-entry is requested afresh once the incident is closed."""
    note = (
        f"Withdrawn by the rollback of {incident.phase.get_kind_display() if incident.phase else 'the rollout'} "
        f"(incident #{incident.pk}: {incident.title}). A rollback voids every pending transition request; "
        "request again once the incident is closed."
    )
    return _withdraw_pending(rollout, note=note, actor=actor, closed_by="automatic rollback")


def withdraw_after_cancel(*, rollout: Rollout, actor: Any, reason: str) -> list[TransitionRequest]:
    """Inside a cancel's transaction (the rollout row is locked): every open or approved request of the rollout is
    withdrawn, each with its own ledger entry and a note saying why; a cancelled rollout moves no more."""
    note = (
        f"Withdrawn because the rollout was cancelled ({reason.strip()}). "
        "A cancelled rollout takes no more transitions."
    )
    return _withdraw_pending(rollout, note=note, actor=actor, closed_by="rollout cancelled")


def _withdraw_pending(rollout: Rollout, *, note: str, actor: Any, closed_by: str) -> list[TransitionRequest]:
    withdrawn = []
    now = timezone.now()
    for request in (
        TransitionRequest.objects.select_for_update()
        .filter(rollout=rollout, status__in=PENDING_STATUSES)
        .order_by("id")
    ):
        request.status = RequestStatus.WITHDRAWN
        request.closed_at, request.close_reason = now, note
        request.closed_by_name = actor_name(actor) if actor is not None else closed_by
        withdrawn.append(save_tracked(request, action="transition.withdraw", actor=actor, reason=note))
    return withdrawn


# --- Approving roles ----------------------------------------------------------------------------------------


@transaction.atomic
def approvers_set(
    *, rollout: Rollout, roles_by_target: Mapping[str, Iterable[str]], actor: Any, reason: str
) -> dict[str, tuple[str, ...]]:
    """Set which lead roles approve each transition of a rollout; voids the decisions on open requests it affects."""
    require_perm(actor, "governance.change_approvingrole")
    if not reason.strip():
        raise CommentRequired("Changing the approving roles needs a reason.", field="reason")
    wanted: dict[str, tuple[str, ...]] = {}
    for target, roles in roles_by_target.items():
        if target not in TransitionTarget.values:
            raise InvalidApprovers(f"Unknown transition {target!r}.")
        roles = {str(r) for r in roles}
        strangers = sorted(roles - set(LEAD_ROLE_VALUES))
        if strangers:
            raise InvalidApprovers(f"Only lead roles approve transitions, not {', '.join(strangers)}.")
        if not roles:
            raise InvalidApprovers(f"The move into {target_label(target)} needs at least one approving role.")
        wanted[target] = tuple(r for r in LEAD_ROLE_VALUES if r in roles)
    rollout = _lock(rollout.pk)
    if rollout.is_closed:
        raise RolloutClosed("A completed or cancelled rollout's approvers no longer change.")
    current = approver_config(rollout)
    changed = [t for t, roles in wanted.items() if set(roles) != set(current[t])]
    if not changed:
        return current
    rows = {(a.target, a.role): a for a in ApprovingRole.objects.select_for_update().filter(rollout=rollout)}
    for target in changed:
        for (row_target, role), row in rows.items():
            if row_target == target and role not in wanted[target]:
                delete_tracked(row, action="approvers.remove", actor=actor, reason=reason)
        for role in wanted[target]:
            if (target, role) not in rows:
                save_tracked(
                    ApprovingRole(rollout=rollout, target=target, role=role),
                    action="approvers.add",
                    actor=actor,
                    reason=reason,
                )
    _void_decisions(rollout, changed, actor=actor, reason=f"Approving roles changed: {reason}")
    return approver_config(rollout)


def _void_decisions(rollout: Rollout, targets: list[str], *, actor: Any, reason: str) -> None:
    now = timezone.now()
    pending = TransitionRequest.objects.select_for_update().filter(
        rollout=rollout, target__in=targets, status__in=PENDING_STATUSES
    )
    for request in pending:
        for approval in request.approvals.select_for_update().filter(voided_at__isnull=True).order_by("id"):
            approval.voided_at, approval.void_reason = now, reason
            save_tracked(approval, action="transition.approval_void", actor=actor, reason=reason)
        if request.status == RequestStatus.APPROVED:
            request.status, request.decided_at = RequestStatus.OPEN, None
            save_tracked(request, action="transition.reopen", actor=actor, reason=reason)


# --- Exports --------------------------------------------------------------------------------------------------


@transaction.atomic
def audit_export(
    *, filters: AuditFilter, fmt: str, actor: Any = None, reason: str = ""
) -> tuple[QuerySet[AuditEvent], AuditEvent]:
    """Record an export in the ledger and return exactly the entries it covers.

    The export holds the ledger lock while it counts, so the entry states the
    rows and the last sequence it covers, and the manifest (``manifest.of_export``)
    the file carries; entries appended afterwards (this one included) are not part of it.
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidAuditFilter(f"Unknown export format {fmt!r}: csv or jsonl.", field="format")
    require_perm(actor, "governance.export_auditevent")
    ledger.lock_ledger()
    through = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    queryset = audit_events(filters).filter(sequence__lte=through)
    rollout_id = filters.rollout.pk if filters.rollout else None
    covers = manifest.build(queryset, filters=filters.as_dict(), rollout_id=rollout_id, through=through, fmt=fmt)
    event = ledger.append(
        action="audit.export",
        object_type="governance.auditevent",
        object_repr=f"Audit ledger export ({fmt})",
        rollout_id=rollout_id,
        after={
            **filters.as_dict(),
            "format": fmt,
            "rows": covers["rows"],
            "through_sequence": through,
            "manifest": covers,
        },
        reason=reason.strip() or "Audit ledger export",
        actor=user_actor(actor) if actor is not None else None,
    )
    return queryset, event


# --- The second factor: an admin's reset --------------------------------------------------------------------------


@transaction.atomic
def mfa_reset(*, user: Any, actor: Any, reason: str) -> list[str]:
    """Remove every second factor of ``user`` (a lost phone): they enrol again at their next login.

    Only a superuser resets, never their own, and always with a reason; one ledger entry names the factors removed.
    """
    from allauth.mfa.models import Authenticator

    if actor is not None and not actor.is_superuser:
        raise ActionNotAllowed("Only a superuser resets another user's second factor.")
    if actor is not None and actor.pk == user.pk:
        raise ActionNotAllowed("Nobody resets their own second factor: ask another superuser.")
    if not reason.strip():
        raise CommentRequired("Resetting a second factor needs a reason.", field="reason")
    factors = list(Authenticator.objects.select_for_update().filter(user=user).order_by("pk"))
    kinds = sorted({str(a.type) for a in factors})
    Authenticator.objects.filter(pk__in=[a.pk for a in factors]).delete()
    ledger.append(
        actor=user_actor(actor) if actor is not None else None,
        action="auth.mfa_reset",
        object_type="auth.user",
        object_id=user.pk,
        object_repr=user.get_username(),
        before={"types": kinds},
        after={"types": []},
        reason=reason.strip(),
    )
    return kinds
