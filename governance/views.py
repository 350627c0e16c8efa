"""Governance pages: sign-offs, transition requests, approving roles, the audit ledger and its exports.

Each view parses input with a form, calls one service or selector, and answers;
a refused rule becomes a message naming it, never a 500 or half a record.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from rollout.errors import DomainError
from rollout.forms import ReasonForm
from rollout.models import Rollout

from . import ledger, selectors, services
from .forms import ApplyForm, ApproversForm, AuditFilterForm, DecisionForm, TransitionRequestForm
from .models import TransitionRequest

EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


def _rollout(slug: str) -> Rollout:
    return get_object_or_404(Rollout, slug=slug)


def _request(slug: str, pk: int) -> TransitionRequest:
    return get_object_or_404(TransitionRequest.objects.select_related("rollout"), rollout__slug=slug, pk=pk)


def _first_error(form) -> str:
    for name, errors in form.errors.items():
        field = form.fields.get(name)
        label = (field.label or name.replace("_", " ")) if field else ""
        return f"{label.capitalize()}: {errors[0]}" if label else errors[0]
    return "The form is not valid."


# --- Plan sign-off ------------------------------------------------------------------------------------


@require_POST
@permission_required("governance.add_plansignoff", raise_exception=True)
def sign_off(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _first_error(form))
    else:
        try:
            s = services.plan_sign_off(rollout=rollout, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Plan {s.decision}d as {s.get_role_display()} (version {s.plan_hash[:12]}).")
    return redirect(f"{rollout.get_absolute_url()}#sign-off")


# --- Transition requests ---------------------------------------------------------------------------------


def transition_list(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    page = Paginator(selectors.transition_requests(rollout), settings.PAGE_SIZE).get_page(request.GET.get("page"))
    has_pending = selectors.pending_request(rollout) is not None
    return render(
        request, "governance/transition_list.html", {"rollout": rollout, "page": page, "has_pending": has_pending}
    )


@permission_required("governance.add_transitionrequest", raise_exception=True)
def transition_create(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    gov = selectors.rollout_governance(rollout)
    form = TransitionRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = services.transition_request_create(
                rollout=rollout,
                justification=form.cleaned_data["justification"],
                actor=request.user,
                target=request.POST.get("target") or None,
            )
        except DomainError as exc:
            form.add_error("justification" if exc.field == "justification" else None, exc.message)
        else:
            messages.success(request, f"Requested the move into {created.get_target_display()}.")
            return redirect(created)
    return render(request, "governance/transition_form.html", {"rollout": rollout, "gov": gov, "form": form})


def transition_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    view = selectors.transition_detail(slug, pk)
    return render(
        request,
        "governance/transition_detail.html",
        {
            "rollout": view.request.rollout,
            "t": view,
            "decidable": view.decidable_roles(request.user),
            "form": DecisionForm(),
        },
    )


@require_POST
@permission_required("governance.add_transitionapproval", raise_exception=True)
def transition_decide(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    transition = _request(slug, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _first_error(form))
    else:
        try:
            approval = services.transition_decide(request=transition, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Recorded: {approval.get_role_display()} {approval.decision}s.")
    return redirect(transition)


@permission_required("governance.apply_transitionrequest", raise_exception=True)
def transition_apply(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    transition = _request(slug, pk)
    form = ApplyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.transition_apply(request=transition, actor=request.user, reason=form.cleaned_data["note"])
        except DomainError as exc:
            messages.error(request, exc.message)
            return redirect(transition)
        messages.success(request, f"Applied: {transition.rollout.name} moved into {transition.get_target_display()}.")
        return redirect(transition.rollout)
    return render(
        request,
        "rollout/confirm.html",
        {
            "rollout": transition.rollout,
            "form": form,
            "title": f"Apply request #{transition.pk}: into {transition.get_target_display()}?",
            "explanation": (
                "Every approval and automated gate is checked again now. The rollout then moves into "
                f"{transition.get_target_display()} at once: flag exposure follows the new phase's cohorts"
                + (
                    " and guardrail compensations switch to enforce."
                    if transition.target == "general_availability"
                    else "."
                )
            ),
            "submit": "Apply now",
            "danger": True,
        },
    )


@permission_required("governance.withdraw_transitionrequest", raise_exception=True)
def transition_withdraw(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    transition = _request(slug, pk)
    form = ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.transition_withdraw(request=transition, actor=request.user, reason=form.cleaned_data["reason"])
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Request #{transition.pk} withdrawn.")
        return redirect(transition)
    return render(
        request,
        "rollout/confirm.html",
        {
            "rollout": transition.rollout,
            "form": form,
            "title": f"Withdraw request #{transition.pk}?",
            "explanation": "The request closes; decisions already given stay recorded. A new request starts afresh.",
            "submit": "Withdraw request",
            "danger": True,
        },
    )


@permission_required("governance.change_approvingrole", raise_exception=True)
def approvers_edit(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    config = selectors.approver_config(rollout)
    form = ApproversForm(request.POST or None, config=config)
    if request.method == "POST" and form.is_valid():
        try:
            services.approvers_set(
                rollout=rollout,
                roles_by_target=form.roles_by_target(),
                actor=request.user,
                reason=form.cleaned_data["reason"],
            )
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Approving roles saved.")
            return redirect(f"{rollout.get_absolute_url()}#transition")
    return render(request, "governance/approvers_form.html", {"rollout": rollout, "form": form})


# --- The audit ledger -------------------------------------------------------------------------------------------


def _audit_page(request: HttpRequest, form: AuditFilterForm, *, status: int = 200) -> HttpResponse:
    if form.is_valid():
        page = Paginator(selectors.audit_events(form.filters()), settings.PAGE_SIZE).get_page(request.GET.get("page"))
        names = selectors.rollout_names([e.rollout_id for e in page.object_list if e.rollout_id])
        for event in page.object_list:
            event.rollout_obj = names.get(event.rollout_id)
    else:
        page, status = None, 400
    return render(
        request,
        "governance/audit_list.html",
        {"form": form, "page": page, "object_types": _object_types()},
        status=status,
    )


def _object_types() -> list[str]:
    from django.apps import apps

    types = sorted(
        m._meta.label_lower
        for m in apps.get_models()
        if m._meta.app_label in ledger.TRACKED_APPS
        and hasattr(m, "history")
        and not m.__name__.startswith("Historical")
    )
    return [*types, "auth.login", "http.request", "governance.auditevent"]


@permission_required("governance.view_auditevent", raise_exception=True)
def audit_list(request: HttpRequest) -> HttpResponse:
    return _audit_page(request, AuditFilterForm(request.GET))


@require_POST
@permission_required("governance.export_auditevent", raise_exception=True)
def audit_export(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.POST)
    fmt = request.POST.get("format", "")
    if fmt not in EXPORT_TYPES:
        form.is_valid()
        form.add_error(None, "Choose CSV or JSON Lines for the export.")
    if not form.is_valid():
        return _audit_page(request, form)
    try:
        queryset, event = services.audit_export(filters=form.filters(), fmt=fmt, actor=request.user)
    except DomainError as exc:
        form.add_error(None, exc.message)
        return _audit_page(request, form)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(ledger.export_chunks(queryset, fmt), content_type=EXPORT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="audit-ledger-{stamp}-export{event.sequence}.{fmt}"'
    response["X-Audit-Export-Entry"] = str(event.sequence)
    return response
