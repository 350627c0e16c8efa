"""Server-rendered pages of the evaluations app: deltas and trends, runs, success criteria."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_safe

from config.db_router import replica_reads
from rollout.errors import DomainError
from rollout.models import Rollout
from rollout.tables import sorted_page

from . import selectors, services
from .charts import build_charts
from .filters import RunFilter
from .forms import CriterionRowForm, ReasonForm
from .models import METRICS, Comparator
from .tables import RUN_SORTING, RunTable


def _page(request: HttpRequest, queryset, per_page: int | None = None):
    return Paginator(queryset, per_page or settings.PAGE_SIZE).get_page(request.GET.get("page"))


def _rollout(slug: str) -> Rollout:
    return get_object_or_404(Rollout, slug=slug)


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "evaluations/index.html", {"page": _page(request, selectors.rollout_index())})


@require_safe
def deltas(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    # The figures look back: from the replica when there is one (the rollout itself from the primary, so a
    # rollout created a moment ago never 404s on replication lag).
    with replica_reads():
        days = selectors.day_summaries(rollout)  # read once: the deltas and the trend charts both use them
        report = selectors.deltas(rollout, days=days)
        phases = [p.phase for p in report.phases]
        trend = selectors.trend_data(rollout, phases, days=days)
        return render(
            request,
            "evaluations/deltas.html",
            {
                "rollout": rollout,
                "report": report,
                "charts": build_charts(trend, report.criteria),
                "trend": trend,
                "phases_with_runs": [p for p in report.phases if p.runs],
            },
        )


@require_safe
def runs(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    filterset = RunFilter(request.GET or None, queryset=selectors.runs_for(rollout), rollout_id=rollout.pk)
    filters = filterset.applied
    if filterset.is_bound and filterset.form.errors:
        form = filterset.form
        bad = "; ".join(f"{form.fields[name].label or name}: {' '.join(errs)}" for name, errs in form.errors.items())
        messages.error(request, f"Some filters were ignored — {bad}")
    # Keyset pages: the runs list grows by a million a year (no OFFSET, no count); sorts only on indexed columns.
    page, sort = sorted_page(request, filterset.qs, RUN_SORTING)
    return render(
        request,
        "evaluations/runs.html",
        {
            "rollout": rollout,
            "filterset": filterset,
            "form": filterset.form,
            "page": page,
            "sort": sort,
            "table": RunTable(page, sort=sort, rollout_slug=rollout.slug),
            "filters": filters,
        },
    )


@require_safe
def run_detail(request: HttpRequest, slug: str, run_id: str) -> HttpResponse:
    run = selectors.run_detail(run_id)
    if run.rollout.slug != slug:
        raise Http404("No such run in this rollout")
    page = _page(request, selectors.run_outputs(run), per_page=20)
    metrics = [(spec, run.metric(key)) for key, spec in METRICS.items()]
    # Raw outputs go with the first retention run after this (unless the rollout is under a legal hold).
    expires = run.finished_at + dt.timedelta(days=settings.RETENTION_DAYS)
    return render(
        request,
        "evaluations/run_detail.html",
        {
            "rollout": run.rollout,
            "run": run,
            "metrics": metrics,
            "page": page,
            "retention_days": settings.RETENTION_DAYS,
            "outputs_expire_at": expires,
        },
    )


@permission_required("evaluations.change_successcriterion", raise_exception=True)
def criteria_edit(request: HttpRequest, slug: str) -> HttpResponse:
    rollout = _rollout(slug)
    current = {c.metric: c for c in selectors.criteria_for(rollout)}
    rows = []
    for key in METRICS:
        c = current.get(key)
        initial = {
            "enabled": c is not None,
            "comparator": c.comparator if c else Comparator.GTE,
            "threshold": c.threshold if c else None,
        }
        rows.append(CriterionRowForm(request.POST or None, prefix=key, metric=key, initial=initial))
    reason_form = ReasonForm(request.POST or None)
    if request.method == "POST":
        enabled_rows = [r for r in rows if r.is_valid() and r.cleaned_data["enabled"]]
        # A disabled row's threshold may be blank: only rows that gate must parse.
        bad_rows = [r for r in rows if not r.is_valid() and r.data.get(f"{r.prefix}-enabled")]
        if reason_form.is_valid() and not bad_rows:
            specs = [
                services.CriterionSpec(r.metric, r.cleaned_data["comparator"], r.cleaned_data["threshold"])
                for r in enabled_rows
            ]
            try:
                services.success_criteria_replace(
                    rollout=rollout, criteria=specs, actor=request.user, reason=reason_form.cleaned_data["reason"]
                )
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, "Success criteria saved; earlier plan sign-offs are superseded.")
                return redirect("evaluations:deltas", slug=rollout.slug)
        else:
            messages.error(request, "Fix the highlighted fields.")
    return render(
        request, "evaluations/criteria_form.html", {"rollout": rollout, "rows": rows, "reason_form": reason_form}
    )
