"""Server-rendered pages of the rollout core.

Each view parses input with a form, calls one service or selector, and answers:
domain errors become a message, never a 500 or half a record.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from . import preferences as prefs
from . import selectors, services
from .auth import decision_auth, require_fresh_authentication
from .confirming import Entered, confirm_step, entered, is_confirmed, went_back
from .errors import DomainError
from .filters import CommunicationFilter, RolloutFilter, TenantFilter
from .forms import (
    CohortMembersForm,
    CommunicationEditForm,
    CommunicationForm,
    EscalationFormSet,
    FeedbackForm,
    IncidentCloseForm,
    KillSwitchForm,
    PlanForm,
    ReasonForm,
    RolloutCreateForm,
    TickForm,
    TimeZonePreferenceForm,
)
from .models import (
    ChecklistItem,
    Cohort,
    Communication,
    CommunicationKind,
    IncidentStep,
    PhaseKind,
    Rollout,
)
from .signals import access_denied, home_panels, rollout_panels
from .tables import (
    COMMUNICATION_SORTING,
    ROLLOUT_SORTING,
    TENANT_SORTING,
    CommunicationTable,
    RolloutTable,
    TenantTable,
    list_context,
)


def _page(request: HttpRequest, queryset, per_page: int | None = None):
    return Paginator(queryset, per_page or settings.PAGE_SIZE).get_page(request.GET.get("page"))


def _rollout(slug: str) -> Rollout:
    return get_object_or_404(Rollout, slug=slug)


def _rollout_row(rollout: Rollout) -> None:
    rollout.current_phase_label = selectors.phase_label(rollout.current_phase_kind)
    rollout.readiness_pct = selectors.readiness_percent(rollout.readiness_done, rollout.readiness_total)


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    context = list_context(
        request, RolloutFilter, selectors.rollout_list(), ROLLOUT_SORTING, RolloutTable, each=[_rollout_row]
    )
    return render(request, "rollout/home.html", {**context, "panels": _panels(home_panels, request=request)})


def _panels(signal, **kwargs) -> list[dict]:
    """Panels the upper apps add to a page ("My work", gates, triggers) without this app importing them.

    Each receiver returns ``{"template": ..., **context}`` or ``None``.
    """
    return [result for _receiver, result in signal.send(sender=None, **kwargs) if result]


@permission_required("rollout.add_rollout", raise_exception=True)
def rollout_create(request: HttpRequest) -> HttpResponse:
    form = RolloutCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            rollout = services.rollout_create_from_playbook(
                name=form.cleaned_data["name"],
                owner=request.user,
                description=form.cleaned_data["description"],
                expected_impacts=form.cleaned_data["expected_impacts"],
                start_date=form.cleaned_data["start_date"],
            )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Rollout “{rollout.name}” created from the playbook.")
            return redirect(rollout)
    return render(request, "rollout/rollout_form.html", {"form": form})


@require_safe
def rollout_detail(request: HttpRequest, slug: str) -> HttpResponse:
    detail = selectors.rollout_detail(slug)
    panels = _panels(rollout_panels, request=request, rollout=detail.rollout)
    return render(request, "rollout/rollout_detail.html", {"d": detail, "rollout": detail.rollout, "panels": panels})


STATUS_REFRESH_SECONDS = 30


@require_safe
def rollout_status(request: HttpRequest, slug: str) -> HttpResponse:
    return render(
        request, "rollout/status.html", {"s": selectors.status_page(slug), "refresh_seconds": STATUS_REFRESH_SECONDS}
    )


@require_safe
def rollout_status_live(request: HttpRequest, slug: str) -> HttpResponse:
    """The live part of the status page alone, for ``static/js/status-refresh.js`` to swap in."""
    response = render(request, "rollout/_status_live.html", {"s": selectors.status_page(slug)})
    response["X-Status-Fragment"] = "1"
    return response


def phase_detail(request: HttpRequest, slug: str, kind: str) -> HttpResponse:
    if kind not in PhaseKind.values:
        raise Http404("No such phase")
    phase, feedback = selectors.phase_detail(slug, kind)
    form = FeedbackForm(request.POST or None)
    if request.method == "POST":
        if not request.user.has_perm("rollout.add_phasefeedback"):
            return permission_denied(request)
        if form.is_valid():
            try:
                services.phase_feedback_add(phase=phase, actor=request.user, **form.cleaned_data)
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, "Feedback logged.")
                return redirect(phase)
    return render(
        request,
        "rollout/phase_detail.html",
        {"phase": phase, "rollout": phase.rollout, "page": _page(request, feedback), "form": form},
    )


@require_POST
@permission_required("rollout.change_checklistitem", raise_exception=True)
def checklist_tick(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    item = get_object_or_404(ChecklistItem, rollout__slug=slug, pk=pk)
    form = TickForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"“{item.title}”: {form.errors['evidence_url'][0]}")
    else:
        try:
            services.checklist_item_tick(item=item, actor=request.user, evidence_url=form.cleaned_data["evidence_url"])
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Ticked “{item.title}”.")
    return redirect(f"{item.rollout.get_absolute_url()}#checklist-{item.kind}")


@permission_required("rollout.change_checklistitem", raise_exception=True)
def checklist_untick(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    item = get_object_or_404(ChecklistItem.objects.select_related("rollout"), rollout__slug=slug, pk=pk)
    form = ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.checklist_item_untick(item=item, actor=request.user, reason=form.cleaned_data["reason"])
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Reopened “{item.title}”.")
        return redirect(f"{item.rollout.get_absolute_url()}#checklist-{item.kind}")
    return render(
        request,
        "rollout/confirm.html",
        {
            "rollout": item.rollout,
            "form": form,
            "title": f"Reopen “{item.title}”?",
            "explanation": "The item will count as not done until it is ticked again with evidence.",
            "submit": "Reopen item",
            "danger": True,
        },
    )


@permission_required("rollout.operate_kill_switch", raise_exception=True)
def kill_switch(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    if request.method == "POST" and (
        reauth := require_fresh_authentication(request, back=reverse("rollout:kill_switch", args=[slug]))
    ):
        return reauth
    form = KillSwitchForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            changed = services.kill_switch_set(
                rollout=rollout,
                on=form.cleaned_data["on"],
                actor=request.user,
                reason=form.cleaned_data["reason"],
                auth=decision_auth(request),
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            state = "ON" if form.cleaned_data["on"] else "OFF"
            messages.success(request, f"Kill switch {state}: agent_v1_fallback changed for {changed} tenant(s).")
            return redirect(rollout)
    return render(
        request,
        "rollout/kill_switch.html",
        {"rollout": rollout, "form": form, "state": selectors.kill_switch_state(rollout)},
    )


@permission_required("rollout.roll_back_rollout", raise_exception=True)
def rollback(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    form = ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            incident = services.rollout_rollback(
                rollout=rollout, actor=request.user, reason=form.cleaned_data["reason"]
            )
        except DomainError as exc:
            messages.error(request, exc.message)
            return redirect(rollout)
        messages.success(request, "Rolled back. Work through the incident's steps below.")
        return redirect(incident)
    return render(
        request,
        "rollout/confirm.html",
        {
            "rollout": rollout,
            "form": form,
            "title": f"Roll back {rollout.name}?",
            "explanation": (
                "The active phase and the rollout become rolled back: multi-agent flags go off and "
                "agent_v1_fallback on for every exposed tenant, and an incident opens with the playbook's steps."
            ),
            "submit": "Roll back now",
            "danger": True,
        },
    )


def _incident_page(request: HttpRequest, incident, close_form: IncidentCloseForm, *, status: int = 200) -> HttpResponse:
    return render(
        request,
        "rollout/incident_detail.html",
        {"incident": incident, "rollout": incident.rollout, "close_form": close_form},
        status=status,
    )


@require_safe
def incident_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    return _incident_page(request, selectors.incident_detail(slug, pk), IncidentCloseForm())


@require_POST
@permission_required("rollout.change_incident", raise_exception=True)
def incident_step_tick(request: HttpRequest, slug: str, pk: int, step_pk: int) -> HttpResponse:
    # Through all three: the step of this incident of this rollout, never another rollout's.
    step = get_object_or_404(
        IncidentStep.objects.select_related("incident"), pk=step_pk, incident_id=pk, incident__rollout__slug=slug
    )
    try:
        services.incident_tick_step(step=step, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Done: {step.get_key_display()}.")
    return redirect("rollout:incident", slug=slug, pk=pk)


@require_POST
@permission_required("rollout.change_incident", raise_exception=True)
def incident_close(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Close with a retrospective, after a confirmation page; a refusal shows the page again with the text kept."""
    incident = selectors.incident_detail(slug, pk)
    form = IncidentCloseForm(request.POST)
    if went_back(request):
        return _incident_page(request, incident, form)
    if not form.is_valid():
        return _incident_page(request, incident, form, status=400)
    if not is_confirmed(request):
        return confirm_step(
            request,
            title=f"Close the incident “{incident.title}”?",
            explanation=(
                "The incident closes and the retrospective below is published to the communications log. "
                "Neither can be undone."
            ),
            submit="Close incident",
            back="Edit the retrospective",
            cancel=incident.get_absolute_url(),
            rows=entered(form, markdown=("retrospective",)),
            rollout=incident.rollout,
        )
    try:
        services.incident_close(incident=incident, actor=request.user, retrospective=form.cleaned_data["retrospective"])
    except DomainError as exc:
        # What they wrote stays in the form; the message says why it was refused.
        messages.error(request, exc.message)
        return _incident_page(request, incident, form, status=400)
    messages.success(request, "Incident closed; the retrospective is in the communications log.")
    return redirect(incident)


@require_safe
def communication_list(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    context = list_context(
        request, CommunicationFilter, selectors.communications_for(rollout), COMMUNICATION_SORTING, CommunicationTable
    )
    return render(request, "rollout/communication_list.html", {"rollout": rollout, **context})


@permission_required("rollout.add_communication", raise_exception=True)
def communication_create(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    kind = request.GET.get("kind", CommunicationKind.STATUS_UPDATE)
    initial = {"kind": kind}
    if kind == CommunicationKind.PRELAUNCH:
        initial["title"], initial["body"] = selectors.prelaunch_draft(rollout)
    form = CommunicationForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        if form.cleaned_data["publish"] and went_back(request):
            return render(request, "rollout/communication_form.html", {"rollout": rollout, "form": form})
        if form.cleaned_data["publish"] and not is_confirmed(request):
            return _confirm_publish(request, rollout, form.cleaned_data["title"], form.cleaned_data["body"])
        try:
            comm = services.communication_create(rollout=rollout, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, "Published." if comm.published_at else "Draft saved.")
            return redirect(comm)
    return render(request, "rollout/communication_form.html", {"rollout": rollout, "form": form})


@require_safe
def communication_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    comm = get_object_or_404(Communication.objects.select_related("rollout", "author"), rollout__slug=slug, pk=pk)
    return render(request, "rollout/communication_detail.html", {"comm": comm, "rollout": comm.rollout})


@permission_required("rollout.change_communication", raise_exception=True)
def communication_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    comm = get_object_or_404(Communication.objects.select_related("rollout"), rollout__slug=slug, pk=pk)
    form = CommunicationEditForm(request.POST or None, initial={"title": comm.title, "body": comm.body})
    if request.method == "POST" and form.is_valid():
        try:
            services.communication_update(communication=comm, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "Draft saved.")
        return redirect(comm)
    return render(request, "rollout/communication_form.html", {"rollout": comm.rollout, "form": form, "comm": comm})


def _confirm_publish(
    request: HttpRequest, rollout: Rollout, title: str, body: str, *, cancel: str = ""
) -> HttpResponse:
    return confirm_step(
        request,
        title=f"Publish “{title}”?",
        explanation="Once published, the communication is in the log for everyone and can no longer be edited.",
        submit="Publish",
        back="" if cancel else "Edit",
        cancel=cancel or reverse("rollout:communications", args=[rollout.slug]),
        rows=[Entered("Title", title), Entered("Body", body, markdown=True)],
        rollout=rollout,
        danger=False,
    )


@require_POST
@permission_required("rollout.change_communication", raise_exception=True)
def communication_publish(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    comm = get_object_or_404(Communication.objects.select_related("rollout"), rollout__slug=slug, pk=pk)
    if not is_confirmed(request):
        return _confirm_publish(request, comm.rollout, comm.title, comm.body, cancel=comm.get_absolute_url())
    try:
        services.communication_publish(communication=comm, actor=request.user)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Published.")
    return redirect(comm)


def _names(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def plan_saved_message(update: services.PlanUpdate) -> str:
    """ "Plan updated." and, when the new version superseded sign-offs, which roles must sign it again."""
    if not update.changed:
        return "Nothing changed: the plan is as it was."
    if not update.resign_roles:
        return "Plan updated."
    n = len(update.resign_roles)
    return (
        f"Plan updated: {n} sign-off{'s' if n != 1 else ''} superseded. "
        f"{_names(update.resign_roles)} must sign the new version again."
    )


@permission_required("rollout.change_rollout", raise_exception=True)
def plan_edit(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    phases = list(rollout.phases.all())
    form = PlanForm(request.POST or None, instance=rollout, phases=phases)
    if request.method == "POST" and form.is_valid():
        try:
            update = services.rollout_update_plan(
                rollout=rollout,
                actor=request.user,
                reason=form.cleaned_data["reason"],
                planned_starts=form.planned_starts(),
                **form.plan_fields(),
            )
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, plan_saved_message(update))
            return redirect(rollout)
    # ModelForm validation writes to the instance; never let it be saved from here.
    rollout.refresh_from_db()
    return render(request, "rollout/plan_form.html", {"rollout": rollout, "form": form})


@permission_required("rollout.change_escalationcontact", raise_exception=True)
def escalation_edit(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    initial = [
        {"severity": c.severity, "contact": c.contact, "role": c.role, "channel": c.channel}
        for c in rollout.escalation_contacts.all()
    ]
    # Initial rows only on GET: on POST every submitted row is the new matrix (rows are replaced, not diffed).
    formset = EscalationFormSet(
        request.POST or None, initial=None if request.method == "POST" else initial, prefix="rows"
    )
    reason_form = ReasonForm(request.POST or None)
    if request.method == "POST" and formset.is_valid() and reason_form.is_valid():
        rows = [
            services.EscalationRow(**{k: f.cleaned_data[k] for k in ("severity", "contact", "role", "channel")})
            for f in formset.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE")
        ]
        try:
            services.escalation_matrix_replace(
                rollout=rollout, rows=rows, actor=request.user, reason=reason_form.cleaned_data["reason"]
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "Escalation matrix updated.")
            return redirect(rollout)
    return render(
        request, "rollout/escalation_form.html", {"rollout": rollout, "formset": formset, "reason_form": reason_form}
    )


@permission_required("rollout.change_cohort", raise_exception=True)
def cohort_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    cohort = get_object_or_404(Cohort.objects.select_related("rollout"), rollout__slug=slug, pk=pk)
    form = CohortMembersForm(
        request.POST or None, initial={"tenants": list(cohort.memberships.values_list("tenant_id", flat=True))}
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.cohort_set_tenants(
                cohort=cohort,
                tenants=list(form.cleaned_data["tenants"]),
                actor=request.user,
                reason=form.cleaned_data["reason"],
            )
        except DomainError as exc:
            form.add_error("tenants", exc.message)
        else:
            messages.success(request, f"Members of “{cohort.name}” updated.")
            return redirect(cohort.rollout)
    return render(request, "rollout/cohort_form.html", {"rollout": cohort.rollout, "cohort": cohort, "form": form})


def preferences(request: HttpRequest) -> HttpResponse:
    """The reader's display preferences: the time zone of every page's times."""
    saved = prefs.saved_time_zone(request.user)
    form = TimeZonePreferenceForm(request.POST or None, initial={"time_zone": saved})
    if request.method == "POST" and form.is_valid():
        try:
            preference = prefs.preference_set_time_zone(user=request.user, time_zone=form.cleaned_data["time_zone"])
        except DomainError as exc:
            form.add_error("time_zone", exc.message)
        else:
            prefs.remember_in_session(request, preference.time_zone)
            shown = preference.time_zone or "your browser's zone"
            messages.success(request, f"Times are now shown in {shown}.")
            return redirect("rollout:preferences")
    return render(
        request,
        "rollout/preferences.html",
        {
            "form": form,
            "saved": saved,
            "zone": getattr(request, "time_zone_name", settings.TIME_ZONE),
            "source": getattr(request, "time_zone_source", "default"),
            "browser_zone": request.COOKIES.get(prefs.COOKIE_NAME, ""),
            "now": timezone.now(),
        },
        status=400 if form.errors else 200,
    )


@require_safe
def tenant_list(request: HttpRequest) -> HttpResponse:
    context = list_context(request, TenantFilter, selectors.tenant_list(), TENANT_SORTING, TenantTable)
    return render(request, "rollout/tenant_list.html", context)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The 403 page; tells governance so the denied action lands in the audit ledger."""
    access_denied.send(sender=None, request=request)
    return render(request, "403.html", status=403)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: a forged or stale form post is a refused action, recorded like any 403."""
    access_denied.send(sender=None, request=request, reason="csrf-failed", status=403, code="csrf-failed")
    return render(
        request,
        "403.html",
        {"csrf_failed": True},
        status=403,
    )


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """The 500 page, naming the request id the error was logged under (no internals).

    The API's 500s are problem+json (``evaluations.problems.ApiProblemMiddleware`` converts this page).
    """
    request_id = getattr(request, "request_id", "")
    try:
        return render(request, "500.html", {"request_id": request_id}, status=500)
    except Exception:  # the page must not fail as well (e.g. a static file missing from the manifest)
        return HttpResponse(
            f"Server error. The error is logged under request id {request_id or '-'}.",
            status=500,
            content_type="text/plain; charset=utf-8",
        )
