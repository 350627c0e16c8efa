"""Governance pages: sign-offs, transition requests, approving roles, the audit ledger and its exports.

Each view parses input with a form, calls one service or selector, and answers;
a refused rule becomes a message naming it, never a 500 or half a record.
"""

from __future__ import annotations

import datetime as dt
import functools

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from config.db_router import reads_from_replica, replica_reads, stream_from_replica
from rollout import timefmt
from rollout.auth import decision_auth, require_fresh_authentication
from rollout.confirming import confirm_step, entered, is_confirmed, went_back
from rollout.errors import DomainError
from rollout.forms import ReasonForm
from rollout.models import Rollout, RolloutStatus
from rollout.roles import has_role
from rollout.services import reentry_target
from rollout.tables import list_context, sorted_page

from . import jobs, ledger, manifest, records, reports, reviews, selectors, services
from . import retention as retention_services
from .errors import StaleVersion
from .filters import AuditSearch, RecordFilter, ReviewFilter, TransitionFilter
from .forms import (
    ApplyForm,
    ApproversForm,
    AuditFilterForm,
    ChangeDecisionForm,
    DecisionForm,
    HoldReleaseForm,
    LegalHoldForm,
    ProcessingRecordForm,
    ReviewCompleteForm,
    ReviewReassignForm,
    RunJobForm,
    TransitionRequestForm,
)
from .models import Job, LegalHold, ProcessingRecord, RecordChange, TransitionRequest
from .tables import (
    AUDIT_SORTING,
    RECORD_SORTING,
    REVIEW_SORTING,
    TRANSITION_SORTING,
    AuditTable,
    RecordTable,
    ReviewTable,
    TransitionTable,
)

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
    if reauth := require_fresh_authentication(request, back=f"{rollout.get_absolute_url()}#sign-off"):
        return reauth
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _first_error(form))
    else:
        try:
            s = services.plan_sign_off(
                rollout=rollout, actor=request.user, auth=decision_auth(request), **form.cleaned_data
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Plan {s.decision}d as {s.get_role_display()} (version {s.plan_hash[:12]}).")
    return redirect(f"{rollout.get_absolute_url()}#sign-off")


# --- Transition requests ---------------------------------------------------------------------------------


@require_safe
def transition_list(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    context = list_context(
        request, TransitionFilter, selectors.transition_requests(rollout), TRANSITION_SORTING, TransitionTable
    )
    has_pending = selectors.pending_request(rollout) is not None
    # After a rollback the way on is a re-entry into the phase rolled back: the button says so.
    phase = reentry_target(rollout) if rollout.status == RolloutStatus.ROLLED_BACK else None
    reentry = selectors.target_label(phase) if phase else None
    return render(
        request,
        "governance/transition_list.html",
        {"rollout": rollout, "has_pending": has_pending, "reentry_label": reentry, **context},
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
            step = "re-entry into" if created.is_reentry else "move into"
            messages.success(request, f"Requested the {step} {created.get_target_display()}.")
            return redirect(created)
    return render(request, "governance/transition_form.html", {"rollout": rollout, "gov": gov, "form": form})


@require_safe
def transition_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    view = selectors.transition_detail(slug, pk)
    # Approvers decide on a pending request: the evidence is live, so a closed request does not show it.
    evidence = selectors.transition_evidence(view.request) if view.request.is_pending else None
    return render(
        request,
        "governance/transition_detail.html",
        {
            "rollout": view.request.rollout,
            "t": view,
            "evidence": evidence,
            "decidable": view.decidable_roles(request.user),
            "form": DecisionForm(),
        },
    )


@require_POST
@permission_required("governance.add_transitionapproval", raise_exception=True)
def transition_decide(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    transition = _request(slug, pk)
    if reauth := require_fresh_authentication(request, back=transition.get_absolute_url()):
        return reauth
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _first_error(form))
    else:
        try:
            approval = services.transition_decide(
                request=transition, actor=request.user, auth=decision_auth(request), **form.cleaned_data
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Recorded: {approval.get_role_display()} {approval.decision}s.")
    return redirect(transition)


@permission_required("governance.apply_transitionrequest", raise_exception=True)
def transition_apply(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    transition = _request(slug, pk)
    if request.method == "POST" and (
        reauth := require_fresh_authentication(request, back=reverse("governance:transition_apply", args=[slug, pk]))
    ):
        return reauth
    form = ApplyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.transition_apply(
                request=transition,
                actor=request.user,
                reason=form.cleaned_data["note"],
                version=form.cleaned_data["version"],
                auth=decision_auth(request),
            )
        except StaleVersion as exc:
            messages.error(request, exc.message)
            return redirect("governance:transition_apply", slug=slug, pk=pk)
        except DomainError as exc:
            messages.error(request, exc.message)
            return redirect(transition)
        messages.success(request, f"Applied: {transition.rollout.name} moved into {transition.get_target_display()}.")
        return redirect(transition.rollout)
    # The gates and approvals as they are now; the service checks them again under the lock.
    view = selectors.transition_detail(slug, pk)
    if request.method == "POST":  # the form did not validate
        messages.error(request, _first_error(form))
    form = ApplyForm(initial={"version": view.version, "note": request.POST.get("note", "")})
    blocked = [g for g in view.gates if not g.passed]
    return render(
        request,
        "governance/apply_confirm.html",
        {
            "rollout": view.request.rollout,
            "t": view,
            "form": form,
            "blocked": blocked,
            "can_apply": view.request.status == "approved" and not blocked,
            "enforce": view.request.target == "general_availability",
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
        # Keyset pages over the sequence: the ledger reaches millions of entries (no OFFSET, no count).
        # Sorts only on what the ledger's indexes lead with; the search is an indexed prefix (governance.filters).
        search = AuditSearch(request.GET or None, queryset=selectors.audit_events(form.filters()))
        page, sort = sorted_page(request, search.qs, AUDIT_SORTING)
        names = selectors.rollout_names([e.rollout_id for e in page.object_list if e.rollout_id])
        for event in page.object_list:
            event.rollout_obj = names.get(event.rollout_id)
        table = AuditTable(page, sort=sort)
    else:
        page, status, search, sort, table = None, 400, AuditSearch(request.GET or None), "", None
    return render(
        request,
        "governance/audit_list.html",
        {"form": form, "page": page, "object_types": _object_types(), "search": search, "sort": sort, "table": table},
        status=status,
    )


@functools.cache
def _object_types() -> tuple[str, ...]:
    # Once per process: the installed models do not change, and finding their history managers costs a
    # millisecond per request.
    from django.apps import apps

    types = sorted(
        m._meta.label_lower
        for m in apps.get_models()
        if m._meta.app_label in ledger.TRACKED_APPS
        and hasattr(m, "history")
        and not m.__name__.startswith("Historical")
    )
    return (*types, "auth.login", "http.request", "governance.auditevent")


@require_safe
@permission_required("governance.view_auditevent", raise_exception=True)
@reads_from_replica
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
    # The entry and the manifest are written on the primary; the rows stream from the replica once it holds
    # every entry the manifest covers.
    through = event.after["through_sequence"]
    chunks = stream_from_replica(
        ledger.export_bytes(queryset, fmt, manifest=manifest.of_export(event)),
        ready=lambda alias: selectors.ledger_holds(through, using=alias),
    )
    response = StreamingHttpResponse(chunks, content_type=EXPORT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="audit-ledger-{stamp}-export{event.sequence}.{fmt}"'
    response["X-Audit-Export-Entry"] = str(event.sequence)
    return response


# --- Compliance: retention and legal holds ----------------------------------------------------------------------------


def _page(request: HttpRequest, queryset):
    return Paginator(queryset, settings.PAGE_SIZE).get_page(request.GET.get("page"))


@permission_required("governance.view_retentionreceipt", raise_exception=True)
def retention(request: HttpRequest) -> HttpResponse:
    form = LegalHoldForm(request.POST or None) if request.user.has_perm("governance.add_legalhold") else None
    if request.method == "POST":
        if form is None:
            raise PermissionDenied
        if form.is_valid() and not is_confirmed(request) and not went_back(request):
            return confirm_step(
                request,
                title=f"Place a legal hold on {form.cleaned_data['rollout'].name}?",
                explanation=(
                    "Its evaluation outputs are kept past the retention period, and the retention job skips them, "
                    "until a compliance reviewer releases the hold. The hold and its reason go into the audit ledger."
                ),
                submit="Place legal hold",
                back="Edit",
                cancel=reverse("governance:retention"),
                rows=entered(form),
            )
        if form.is_valid() and is_confirmed(request):
            try:
                hold = retention_services.legal_hold_place(
                    rollout=form.cleaned_data["rollout"], reason=form.cleaned_data["reason"], actor=request.user
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(
                    request, f"Legal hold placed on {hold.rollout.name}: its outputs are kept until released."
                )
                return redirect("governance:retention")
    return render(
        request,
        "governance/retention.html",
        {
            "o": selectors.retention_overview(),
            "page": _page(request, selectors.retention_receipts()),
            "released": selectors.released_holds(),
            "form": form,
        },
        status=400 if form is not None and form.errors else 200,
    )


@permission_required("governance.release_legalhold", raise_exception=True)
def hold_release(request: HttpRequest, pk: int) -> HttpResponse:
    hold = get_object_or_404(LegalHold.objects.select_related("rollout"), pk=pk)
    if request.method == "POST" and (
        reauth := require_fresh_authentication(request, back=reverse("governance:hold_release", args=[pk]))
    ):
        return reauth
    form = HoldReleaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            retention_services.legal_hold_release(
                hold=hold, reason=form.cleaned_data["reason"], actor=request.user, auth=decision_auth(request)
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Legal hold on {hold.rollout.name} released.")
        return redirect("governance:retention")
    return render(
        request,
        "governance/confirm.html",
        {
            "form": form,
            "title": f"Release the legal hold on {hold.rollout.name}?",
            "explanation": (
                f"Placed {timefmt.plain_time(hold.placed_at, 'Y-m-d H:i')} by {hold.placed_by_name}: "
                f"“{hold.reason}”. Once released, "
                "the rollout's outputs older than the retention period are deleted by the next retention run."
            ),
            "submit": "Release hold",
            "danger": True,
            "cancel": reverse("governance:retention"),
        },
    )


# --- Compliance: jobs -------------------------------------------------------------------------------------------------


@require_safe
@permission_required("governance.view_jobrun", raise_exception=True)
def jobs_page(request: HttpRequest) -> HttpResponse:
    job = request.GET.get("job", "")
    if job not in Job.values:
        job = ""
    return render(
        request,
        "governance/jobs.html",
        {
            "rows": selectors.jobs_overview(),
            "page": _page(request, selectors.job_runs(job)),
            "job": job,
            "jobs": Job.choices,
        },
    )


@permission_required("governance.run_job", raise_exception=True)
def job_run_now(request: HttpRequest, job: str) -> HttpResponse:
    try:
        spec = jobs.spec_of(job)
    except DomainError as exc:
        raise Http404(exc.message) from exc
    form = RunJobForm(request.POST or None)
    if not spec.destructive:
        del form.fields["dry_run"]
    if request.method == "POST" and form.is_valid():
        options = {"dry_run": True} if form.cleaned_data.get("dry_run") else {}
        try:
            run = jobs.job_request(job=job, actor=request.user, reason=form.cleaned_data["reason"], options=options)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                f"{spec.label}{' (dry run)' if options else ''} queued as run #{run.pk}; a worker runs it shortly.",
            )
        return redirect("governance:jobs")
    return render(
        request,
        "governance/confirm.html",
        {
            "form": form,
            "title": f"Run “{spec.label}” now?",
            "explanation": spec.description
            + " It is queued for a worker; this page does not wait for it. Its schedule is unchanged."
            + (" Without “dry run”, expired outputs are deleted for good." if spec.destructive else ""),
            "submit": "Queue it now",
            "danger": spec.destructive,
            "cancel": reverse("governance:jobs"),
        },
    )


# --- Compliance: data-processing records ------------------------------------------------------------------------------


@require_safe
@permission_required("governance.view_processingrecord", raise_exception=True)
def records_list(request: HttpRequest) -> HttpResponse:
    context = list_context(
        request,
        RecordFilter,
        selectors.records_list(),
        RECORD_SORTING,
        RecordTable,
        each=[selectors.mark_retention_mismatch],
    )
    return render(request, "governance/records_list.html", {**context, "retention_days": settings.RETENTION_DAYS})


@require_safe
@permission_required("governance.view_processingrecord", raise_exception=True)
def record_detail(request: HttpRequest, key: str) -> HttpResponse:
    return render(
        request,
        "governance/record_detail.html",
        {
            "d": selectors.record_detail(key),
            "retention_days": settings.RETENTION_DAYS,
            "decision_form": ChangeDecisionForm(),
        },
    )


def _record_form(request: HttpRequest, record: ProcessingRecord) -> HttpResponse:
    form = ProcessingRecordForm(request.POST or None, instance=record)
    if request.method == "POST" and form.is_valid():
        try:
            saved = records.record_save(
                record=record if record.pk else ProcessingRecord(),
                values=form.values(),
                actor=request.user,
                reason=form.cleaned_data["reason"],
                reviewed=form.cleaned_data["reviewed"],
            )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"Record “{saved.name}” saved.")
            return redirect(saved)
    return render(
        request,
        "governance/record_form.html",
        {"form": form, "record": record if record.pk else None, "retention_days": settings.RETENTION_DAYS},
        status=400 if form.errors else 200,
    )


@permission_required("governance.add_processingrecord", raise_exception=True)
def record_create(request: HttpRequest) -> HttpResponse:
    return _record_form(request, ProcessingRecord())


@permission_required("governance.change_processingrecord", raise_exception=True)
def record_edit(request: HttpRequest, key: str) -> HttpResponse:
    # A fresh copy for the form: a failed save must not leave half-changed attributes on the shown record.
    return _record_form(request, get_object_or_404(ProcessingRecord, key=key))


@require_POST
@permission_required("governance.decide_recordchange", raise_exception=True)
def change_decide(request: HttpRequest, key: str, pk: int) -> HttpResponse:
    change = get_object_or_404(RecordChange.objects.select_related("record"), record__key=key, pk=pk)
    form = ChangeDecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, _first_error(form))
    else:
        confirm = form.cleaned_data["decision"] == "confirm"
        try:
            records.change_decide(
                change=change, confirm=confirm, comment=form.cleaned_data["comment"], actor=request.user
            )
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{'Confirmed' if confirm else 'Rejected'}: {change.label}.")
    return redirect(change.record)


# --- Compliance: scheduled reviews ------------------------------------------------------------------------------------


@require_safe
@permission_required("governance.view_scheduledreview", raise_exception=True)
def reviews_list(request: HttpRequest) -> HttpResponse:
    context = list_context(request, ReviewFilter, selectors.reviews(), REVIEW_SORTING, ReviewTable)
    return render(request, "governance/reviews_list.html", {**context, "now": timezone.now()})


@permission_required("governance.view_scheduledreview", raise_exception=True)
def review_detail(request: HttpRequest, pk: int) -> HttpResponse:
    review = selectors.review_detail(pk)
    reassigner = review.reassigned_by_id is not None and review.reassigned_by_id == request.user.pk
    can_complete = review.status == "open" and has_role(request.user, review.assigned_role) and not reassigner
    complete_form = ReviewCompleteForm(request.POST or None, kind=review.kind) if can_complete else None
    if request.method == "POST":
        if complete_form is None:
            raise PermissionDenied
        if complete_form.is_valid() and not is_confirmed(request) and not went_back(request):
            return confirm_step(
                request,
                title=f"Complete {review}?",
                explanation=(
                    "The review is recorded as completed by you, with the answers below, in its history and the "
                    "audit ledger. A completed review cannot be reopened."
                ),
                submit="Complete review",
                back="Edit",
                cancel=review.get_absolute_url(),
                rows=entered(complete_form),
                danger=False,
            )
        if complete_form.is_valid() and is_confirmed(request):
            try:
                reviews.review_complete(review=review, actor=request.user, **complete_form.service_kwargs())
            except DomainError as exc:
                complete_form.add_error(exc.field if exc.field in complete_form.fields else None, exc.message)
            else:
                messages.success(request, f"{review} completed.")
                return redirect(review)
    can_reassign = review.status == "open" and request.user.has_perm("governance.reassign_scheduledreview")
    return render(
        request,
        "governance/review_detail.html",
        {
            "review": review,
            "spec": reviews.REVIEW_SPECS[review.kind],
            "role_label": reviews.ROLE_LABELS.get(review.assigned_role, review.assigned_role),
            "form": complete_form,
            "reassign_form": ReviewReassignForm(initial={"role": review.assigned_role}, user=request.user)
            if can_reassign
            else None,
            "reassigner": reassigner,
            "overdue": review.status == "open" and review.due_at <= timezone.now(),
        },
        status=400 if complete_form is not None and complete_form.errors else 200,
    )


@require_POST
@permission_required("governance.reassign_scheduledreview", raise_exception=True)
def review_reassign(request: HttpRequest, pk: int) -> HttpResponse:
    review = selectors.review_detail(pk)
    form = ReviewReassignForm(request.POST, user=request.user)
    if not form.is_valid():
        messages.error(request, _first_error(form))
    else:
        try:
            reviews.review_reassign(review=review, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{review} assigned to {reviews.ROLE_LABELS[form.cleaned_data['role']]}.")
    return redirect(review)


# --- Daily delta reports ----------------------------------------------------------------------------------------------


@require_safe
@permission_required("governance.view_dailydeltareport", raise_exception=True)
def delta_reports(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    with replica_reads():
        page = _page(request, selectors.delta_reports(rollout))
        items = list(page.object_list)
        # The day before the page's oldest report, for its day-over-day change: one more query.
        before = selectors.previous_report(items[-1]) if items else None
        rows = [
            (report, reports.day_over_day(report, items[i + 1] if i + 1 < len(items) else before))
            for i, report in enumerate(items)
        ]
        return render(request, "governance/delta_reports.html", {"rollout": rollout, "page": page, "rows": rows})


@require_safe
@permission_required("governance.view_dailydeltareport", raise_exception=True)
@reads_from_replica
def delta_report_detail(request: HttpRequest, slug: str, day: str) -> HttpResponse:
    try:
        date = dt.date.fromisoformat(day)
    except ValueError as exc:
        raise Http404("No such report date") from exc
    report, previous = selectors.delta_report(slug, date)
    return render(
        request,
        "governance/delta_report_detail.html",
        {
            "rollout": report.rollout,
            "report": report,
            "previous": previous,
            "rows": reports.day_over_day(report, previous),
        },
    )
