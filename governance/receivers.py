"""Governance listens to the lower apps, to django-simple-history, to auth and to Celery.

Connected in ``GovernanceConfig.ready``; nothing below imports governance.
"""

from __future__ import annotations

import contextlib
from typing import Any

from allauth.account.signals import authentication_step_completed
from allauth.mfa import signals as mfa_signals
from allauth.socialaccount.signals import pre_social_login
from axes.signals import user_locked_out
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from simple_history.signals import post_create_historical_record

from evaluations.signals import runs_ingested, runs_stored, samples_ingested, samples_stored
from rollout.context import Actor, acting_as, user_actor
from rollout.models import Incident
from rollout.signals import (
    access_denied,
    home_panels,
    plan_changed,
    rollback_recorded,
    rollout_cancelled,
    rollout_panels,
    rollout_rolled_back,
    status_facts,
)

from . import denials, jobs, ledger, records, selectors, services
from .models import Job, JobTrigger, TelemetrySource


@receiver(post_create_historical_record, dispatch_uid="governance.ledger.history")
def ledger_history(sender, instance, history_instance, history_user=None, history_change_reason=None, **kwargs):
    """One ledger entry per historical record of every tracked model, in the writer's transaction."""
    if instance._meta.app_label in ledger.TRACKED_APPS:
        ledger.record_history(
            instance=instance,
            history_instance=history_instance,
            history_user=history_user,
            reason=history_change_reason,
        )


@receiver(plan_changed, dispatch_uid="governance.supersede_sign_offs")
def supersede_sign_offs(sender, rollout, actor, reason, **kwargs) -> dict:
    """Supersedes the sign-offs of the old version; tells the plan's editor which roles must sign again."""
    superseded = services.sign_offs_supersede(rollout=rollout, actor=actor, reason=reason)
    order = {role: i for i, role in enumerate(selectors.LEAD_ROLE_VALUES)}
    roles = sorted({s.role for s in superseded}, key=lambda r: order.get(r, len(order)))
    return {"resign_roles": [selectors.ROLE_LABELS.get(r, r) for r in roles]}


@receiver(rollback_recorded, dispatch_uid="governance.withdraw_on_rollback")
def withdraw_on_rollback(sender, rollout, incident, actor=None, **kwargs) -> None:
    services.withdraw_after_rollback(rollout=rollout, incident=incident, actor=actor)


@receiver(rollout_cancelled, dispatch_uid="governance.withdraw_on_cancel")
def withdraw_on_cancel(sender, rollout, actor=None, reason="", **kwargs) -> None:
    services.withdraw_after_cancel(rollout=rollout, actor=actor, reason=reason)


@receiver(rollout_rolled_back, dispatch_uid="governance.ledger.rollback")
def ledger_rollback(sender, incident_id, **kwargs) -> None:
    """In the rollback's transaction: a rollback never commits without its entry."""
    incident = Incident.objects.select_related("phase").get(pk=incident_id)
    ledger.append(
        action="rollout.rollback",
        object_type=ledger.object_type_of(Incident),
        object_id=incident.pk,
        object_repr=incident.title,
        rollout_id=incident.rollout_id,
        after={
            "incident": incident.pk,
            "kind": incident.kind,
            "trigger": incident.trigger,
            "phase": incident.phase.kind if incident.phase else None,
        },
        reason=incident.reason,
    )


@receiver(runs_stored, dispatch_uid="governance.ledger.runs_ingested")
def ledger_runs_ingested(sender, rollout_id, run_ids, actor=None, **kwargs) -> None:
    """One entry per ingest request and rollout (runs are bulk data, not tracked row by row), in the ingest's
    transaction: the runs and their entry commit together."""
    _ledger_ingest("evaluations.runs_ingested", sender, rollout_id, run_ids, "evaluation run", actor)


@receiver(samples_stored, dispatch_uid="governance.ledger.samples_ingested")
def ledger_samples_ingested(sender, rollout_id, sample_ids, actor=None, **kwargs) -> None:
    _ledger_ingest("evaluations.samples_ingested", sender, rollout_id, sample_ids, "monitoring sample", actor)


def _ledger_ingest(action: str, model, rollout_id: int, ids: list[int], noun: str, actor: Any) -> None:
    # The signal carries who ingested (the API token, or the command's user).
    ledger.append(
        actor=actor if isinstance(actor, Actor) else None,
        action=action,
        object_type=ledger.object_type_of(model),
        object_repr=f"{len(ids)} {noun}{'s' if len(ids) != 1 else ''}",
        rollout_id=rollout_id,
        after={"count": len(ids), "first_id": min(ids), "last_id": max(ids)},
        reason="Ingested",
    )


@receiver(user_login_failed, dispatch_uid="governance.ledger.login_failed")
def ledger_login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Django has already masked the password in ``credentials``; only the name is kept.
    username = str(credentials.get("username", ""))[:150]
    denials.record(
        denials.Denial(
            reason="login-failed",
            action="auth.login_failed",
            object_type="auth.login",
            object_repr=username,
            after={"username": username, "ip": denials.client_address(request)},
            reason_text="Failed login",
        ),
        request=request,
        actor=denials.ANONYMOUS,
    )


@receiver(user_locked_out, dispatch_uid="governance.ledger.locked_out")
def ledger_locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """axes locked a login out (and says so again on each attempt during the cool-off: those are repeats)."""
    username = str(username or "")[:150]
    denials.record(
        denials.Denial(
            reason="locked-out",
            action="auth.locked_out",
            object_type="auth.login",
            object_repr=username,
            after={
                "username": username,
                "ip": ip_address or denials.client_address(request),
                "failure_limit": settings.AXES_FAILURE_LIMIT,
                "cooloff_seconds": int(settings.AXES_COOLOFF_TIME.total_seconds()),
            },
            reason_text="Locked out after repeated failed logins",
        ),
        request=request,
        actor=denials.ANONYMOUS,
    )


@receiver(access_denied, dispatch_uid="governance.ledger.access_denied")
def ledger_access_denied(sender, request, reason="permission-denied", status=403, code="", **kwargs) -> None:
    match = getattr(request, "resolver_match", None)
    after = {"method": request.method, "path": request.path, "view": match.view_name if match else None}
    if reason == "api":
        key, action, text = f"api:{code}", "auth.api_denied", _API_DENIALS.get(status, "Permission denied")
        after |= {"status": status, "code": code}
    elif reason == "csrf-failed":
        key, action, text = reason, "auth.csrf_failed", "CSRF check failed"
    else:
        key, action, text = "permission-denied", "auth.permission_denied", "Permission denied"
    denials.record(
        denials.Denial(
            reason=key,
            action=action,
            object_type="http.request",
            object_repr=f"{request.method} {request.path}"[:300],
            rollout_id=denials.rollout_id_of(request),
            after=after,
            reason_text=text,
        ),
        request=request,
    )


_API_DENIALS = {401: "Not authenticated", 403: "Permission denied", 429: "Throttled"}


# --- Compliance records: an ingest with a field the inventory does not know queues the records job --------------------


@receiver(runs_ingested, dispatch_uid="governance.records.runs_ingested")
def records_after_runs(sender, rollout_id, run_ids, telemetry_fields=(), actor=None, **kwargs) -> None:
    new = records.unknown_fields(TelemetrySource.RUN_OUTPUT, telemetry_fields)
    new += records.unknown_fields(TelemetrySource.RUN_METRIC, records.reported_metrics(run_ids))
    if new:
        _queue_records_job(new, actor)


@receiver(samples_ingested, dispatch_uid="governance.records.samples_ingested")
def records_after_samples(sender, rollout_id, sample_ids, actor=None, **kwargs) -> None:
    new = records.unknown_fields(TelemetrySource.MONITORING_SAMPLE, records.SAMPLE_FIELDS)
    if new:
        _queue_records_job(new, actor)


def _queue_records_job(fields: list[str], actor: Any) -> None:
    if jobs.queued_recently(Job.UPDATE_COMPLIANCE_RECORDS):
        return  # a run waiting for a worker will see these fields too
    name = actor.name if isinstance(actor, Actor) else "ingest"
    with acting_as(Actor(kind="system", name=f"ingest by {name}"[:150])):
        jobs.job_request(
            job=Job.UPDATE_COMPLIANCE_RECORDS,
            actor=None,
            trigger=JobTrigger.EVENT,
            reason=f"New telemetry field(s): {', '.join(fields[:10])}",
        )


# --- Page panels --------------------------------------------------------------------------------------------


@receiver(home_panels, dispatch_uid="governance.panels.my_work")
def my_work_panel(sender, request, **kwargs) -> dict[str, Any] | None:
    work = selectors.my_work(request.user)
    if work is None:
        return None
    return {"template": "governance/_panel_my_work.html", "work": work}


@receiver(home_panels, dispatch_uid="governance.panels.compliance")
def compliance_panel(sender, request, **kwargs) -> dict[str, Any] | None:
    panel = selectors.compliance_home(request.user)
    if panel is None:
        return None
    return {"template": "governance/_panel_compliance.html", "c": panel}


@receiver(rollout_panels, dispatch_uid="governance.panels.rollout")
def rollout_panel(sender, request, rollout, **kwargs) -> dict[str, Any]:
    gov = selectors.rollout_governance(rollout)
    return {
        "template": "governance/_panel_rollout.html",
        "gov": gov,
        "signable": gov.sign_offs.signable_roles(request.user),
        "decidable": gov.pending.decidable_roles(request.user) if gov.pending else [],
    }


@receiver(rollout_panels, dispatch_uid="governance.panels.rollout_compliance")
def rollout_compliance_panel(sender, request, rollout, **kwargs) -> dict[str, Any] | None:
    if not request.user.has_perm("governance.view_dailydeltareport"):
        return None
    return {
        "template": "governance/_panel_rollout_compliance.html",
        "c": selectors.rollout_compliance(rollout),
        "retention_days": settings.RETENTION_DAYS,
    }


# --- Celery: the task is the actor, its id the request id ---------------------------------------------------

_task_contexts: dict[str, contextlib.ExitStack] = {}


@task_prerun.connect(dispatch_uid="governance.task_context.start")
def task_context_start(sender=None, task_id=None, task=None, **kwargs) -> None:
    stack = contextlib.ExitStack()
    stack.enter_context(acting_as(Actor(kind="task", name=getattr(task, "name", str(sender))), request_id=task_id))
    _task_contexts[task_id] = stack


@task_postrun.connect(dispatch_uid="governance.task_context.end")
def task_context_end(sender=None, task_id=None, **kwargs) -> None:
    stack = _task_contexts.pop(task_id, None)
    if stack is not None:
        stack.close()


@receiver(status_facts, dispatch_uid="governance.status_next_step")
def status_next_step(sender, rollout, **kwargs) -> dict | None:
    """The status page's next step: the request in flight, or after a rollback the re-entry to request."""
    step = selectors.status_next_step(rollout)
    return {"next_step": step} if step else None


# --- The second factor and re-authentication (django-allauth; rollout/auth.py) ------------------------------------


def _user_entry(action: str, user: Any, *, after: dict[str, Any], reason: str, actor: Any = None) -> None:
    ledger.append(
        actor=user_actor(actor or user),
        action=action,
        object_type="auth.user",
        object_id=user.pk,
        object_repr=user.get_username(),
        after=after,
        reason=reason,
    )


@receiver(mfa_signals.authenticator_added, dispatch_uid="governance.ledger.mfa_added")
def ledger_mfa_added(sender, request=None, user=None, authenticator=None, **kwargs) -> None:
    kind = str(authenticator.type)
    _user_entry("auth.mfa_enrolled", user, after={"type": kind}, reason=f"Second factor set up ({kind})")


@receiver(mfa_signals.authenticator_removed, dispatch_uid="governance.ledger.mfa_removed")
def ledger_mfa_removed(sender, request=None, user=None, authenticator=None, **kwargs) -> None:
    kind = str(authenticator.type)
    _user_entry("auth.mfa_removed", user, after={"type": kind}, reason=f"Second factor removed ({kind})")


@receiver(mfa_signals.authenticator_reset, dispatch_uid="governance.ledger.mfa_codes_reset")
def ledger_mfa_codes_regenerated(sender, request=None, user=None, authenticator=None, **kwargs) -> None:
    _user_entry(
        "auth.mfa_recovery_codes_regenerated",
        user,
        after={"type": str(authenticator.type)},
        reason="New recovery codes generated (the old ones no longer work)",
    )


@receiver(mfa_signals.authenticator_used, dispatch_uid="governance.ledger.mfa_used")
def ledger_mfa_recovery_code_used(sender, request=None, user=None, authenticator=None, **kwargs) -> None:
    """A recovery code spent (a TOTP code is a login's ordinary step and is not an entry of its own)."""
    if str(authenticator.type) != "recovery_codes":
        return
    left = len(type(authenticator).objects.get(pk=authenticator.pk).wrap().get_unused_codes())
    _user_entry("auth.mfa_recovery_code_used", user, after={"unused_codes": left}, reason="A recovery code was used")


@receiver(pre_social_login, dispatch_uid="governance.ledger.provider_reauth")
def _mark_provider_reauthentication(sender, request, sociallogin, **kwargs) -> None:
    """A user already logged in comes back from the provider as themselves (the round trip a decision asks for):
    allauth logs them out and in again, so remember it before it does."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and sociallogin.is_existing and sociallogin.user.pk == user.pk:
        request._rgd_provider_reauth = user.pk


@receiver(authentication_step_completed, dispatch_uid="governance.ledger.reauthenticated")
def ledger_reauthenticated(sender, request=None, user=None, method: str = "", **kwargs) -> None:
    """A re-authentication before a decision: the password or the second factor (allauth marks them), or a new round
    trip to the identity provider by a user already logged in as that user. A login's steps are not entries."""
    again_at_provider = method == "socialaccount" and getattr(request, "_rgd_provider_reauth", None) == user.pk
    if not kwargs.get("reauthenticated") and not again_at_provider:
        return
    name = str(kwargs.get("type", "mfa")) if method == "mfa" else {"socialaccount": "oidc"}.get(method, method)
    _user_entry(
        "auth.reauthenticated",
        user,
        after={"method": name, "max_age_seconds": settings.REAUTH_MAX_AGE},
        reason=f"Re-authenticated ({name})",
    )
