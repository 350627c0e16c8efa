"""Every URL of the dashboard, filled in from the demo data: ``python -m tests.deploy.demo_urls``.

Run in the environment of the deployment under test (its settings and database, after
``seed_demo``); prints JSON: ``urls`` (URL name and path, one per pattern and demo object),
``unresolved`` (patterns with kwargs this table cannot fill: the test fails on them), ``empty``
(patterns whose objects the demo data has none of) and ``token``, an API token of every scope.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator

import django

KwargsSource = Callable[[], Iterable[dict]]


def _sources() -> dict[str, KwargsSource]:
    from evaluations.models import EvaluationRun
    from governance.models import (
        DailyDeltaReport,
        Job,
        LegalHold,
        RecordChange,
        ScheduledReview,
        TransitionRequest,
    )
    from rollout.models import ChecklistItem, Cohort, Communication, FlagKey, Incident, IncidentStep, Phase, Rollout

    def slugs() -> Iterator[dict]:
        for slug in Rollout.objects.order_by("pk").values_list("slug", flat=True):
            yield {"slug": slug}

    def by_rollout(model, **extra: str) -> KwargsSource:
        """Each object of ``model`` under its own rollout's slug (``pk`` and any field named in ``extra``)."""

        def source() -> Iterator[dict]:
            fields = {"slug": "rollout__slug", "pk": "pk", **extra}
            for row in model.objects.order_by("pk").values(*fields.values()):
                yield {kwarg: row[field] for kwarg, field in fields.items()}

        return source

    def runs() -> Iterator[dict]:
        for slug, run_id in EvaluationRun.objects.order_by("pk").values_list("rollout__slug", "run_id"):
            yield {"slug": slug, "run_id": run_id}

    def phases() -> Iterator[dict]:
        for slug, kind in Phase.objects.order_by("pk").values_list("rollout__slug", "kind"):
            yield {"slug": slug, "kind": kind}

    def steps() -> Iterator[dict]:
        for slug, incident, step in IncidentStep.objects.order_by("pk").values_list(
            "incident__rollout__slug", "incident_id", "pk"
        ):
            yield {"slug": slug, "pk": incident, "step_pk": step}

    def delta_reports() -> Iterator[dict]:
        for slug, day in DailyDeltaReport.objects.order_by("pk").values_list("rollout__slug", "report_date"):
            yield {"slug": slug, "day": day.isoformat()}

    def changes() -> Iterator[dict]:
        for key, pk in RecordChange.objects.order_by("pk").values_list("record__key", "pk"):
            yield {"key": key, "pk": pk}

    def records() -> Iterator[dict]:
        from governance.models import ProcessingRecord

        for key in ProcessingRecord.objects.order_by("pk").values_list("key", flat=True):
            yield {"key": key}

    def reviews() -> Iterator[dict]:
        for pk in ScheduledReview.objects.order_by("pk").values_list("pk", flat=True):
            yield {"pk": pk}

    def holds() -> Iterator[dict]:
        for pk in LegalHold.objects.order_by("pk").values_list("pk", flat=True):
            yield {"pk": pk}

    def jobs() -> Iterator[dict]:
        for job in Job.values:
            yield {"job": job}

    def api_runs() -> Iterator[dict]:
        for run_id in EvaluationRun.objects.order_by("pk").values_list("run_id", flat=True):
            yield {"run_id": run_id}

    rollout_pages = [
        "rollout:detail",
        "rollout:status",
        "rollout:status_live",
        "rollout:plan_edit",
        "rollout:escalation_edit",
        "rollout:kill_switch",
        "rollout:rollback",
        "rollout:communications",
        "rollout:communication_create",
        "evaluations:deltas",
        "evaluations:runs",
        "evaluations:criteria",
        "governance:sign_off",
        "governance:approvers",
        "governance:transitions",
        "governance:transition_create",
        "governance:delta_reports",
        "api:rollout",
        "api:rollout-flags",
        "api:rollout-deltas",
    ]
    table: dict[str, KwargsSource] = dict.fromkeys(rollout_pages, slugs)
    table.update(
        {
            "rollout:cohort_edit": by_rollout(Cohort),
            "rollout:phase": phases,
            "rollout:checklist_tick": by_rollout(ChecklistItem),
            "rollout:checklist_untick": by_rollout(ChecklistItem),
            "rollout:incident": by_rollout(Incident),
            "rollout:incident_step": steps,
            "rollout:incident_close": by_rollout(Incident),
            "rollout:communication": by_rollout(Communication),
            "rollout:communication_edit": by_rollout(Communication),
            "rollout:communication_publish": by_rollout(Communication),
            "evaluations:run": runs,
            "governance:transition": by_rollout(TransitionRequest),
            "governance:transition_decide": by_rollout(TransitionRequest),
            "governance:transition_apply": by_rollout(TransitionRequest),
            "governance:transition_withdraw": by_rollout(TransitionRequest),
            "governance:delta_report": delta_reports,
            "governance:hold_release": holds,
            "governance:job_run": jobs,
            "governance:record": records,
            "governance:record_edit": records,
            "governance:change_decide": changes,
            "governance:review": reviews,
            "governance:review_reassign": reviews,
            "api:evaluation-run": api_runs,
            "ofrep:evaluate-flag": lambda: ({"key": key} for key in FlagKey.values),
        }
    )
    return table


def _patterns() -> Iterator[tuple[str, object]]:
    """(namespaced name, pattern) of every named URL pattern outside the Django admin."""
    from django.urls import URLResolver, get_resolver

    def walk(resolver: URLResolver, namespace: str) -> Iterator[tuple[str, object]]:
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                if pattern.app_name == "admin":
                    continue
                inner = ":".join(filter(None, [namespace, pattern.namespace]))
                yield from walk(pattern, inner)
            elif pattern.name:
                yield ":".join(filter(None, [namespace, pattern.name])), pattern

    yield from walk(get_resolver(), "")


def _admin_urls() -> Iterator[tuple[str, str]]:
    """The admin's index, and each registered model's list, add form (where the admin allows adding) and
    first object's change form, as the superuser sees them."""
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory
    from django.urls import reverse

    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
    yield "admin:index", reverse("admin:index")
    for model, model_admin in sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label):
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        yield f"{prefix}_changelist", reverse(f"{prefix}_changelist")
        if model_admin.has_add_permission(request):
            yield f"{prefix}_add", reverse(f"{prefix}_add")
        first = model._default_manager.order_by("pk").values_list("pk", flat=True).first()
        if first is not None:
            yield f"{prefix}_change", reverse(f"{prefix}_change", args=[first])


# Steps of the sign-in flows (django-allauth, issue 13) are not pages of the demo data: they answer only inside a
# flow (a login waiting for its second factor, a provider's callback, a factor the user has) and redirect, 404 or
# 401 otherwise. The identity provider's endpoints are 404 without a provider (the walk's environment has none); the
# no-role page sends anyone with a role home. Their own tests: tests/governance/test_oidc.py, tests/rollout/test_mfa.py
# and the access matrix.
SIGN_IN_ENDPOINTS = frozenset(
    {
        "openid_connect_login",
        "openid_connect_callback",
        "socialaccount_login_error",
        "socialaccount_signup",
        "no_role",
        "mfa_authenticate",
        "mfa_reauthenticate",
        "mfa_activate_totp",
        "mfa_deactivate_totp",
        "mfa_view_recovery_codes",
        "mfa_generate_recovery_codes",
        "mfa_download_recovery_codes",
    }
)


def collect() -> dict:
    from django.urls import reverse

    from evaluations.services import api_token_create

    sources = _sources()
    urls: list[dict] = []
    unresolved: list[str] = []
    empty: list[str] = []
    for name, pattern in _patterns():
        if name in SIGN_IN_ENDPOINTS:
            continue
        if not pattern.pattern.converters:
            urls.append({"name": name, "path": reverse(name)})
            continue
        if name not in sources:
            unresolved.append(name)
            continue
        found = [reverse(name, kwargs=kwargs) for kwargs in sources[name]()]
        if not found:
            empty.append(name)
        urls.extend({"name": name, "path": path} for path in found)
    urls.extend({"name": name, "path": path} for name, path in _admin_urls())
    _token, raw = api_token_create(
        name=f"walk-{os.getpid()}", scopes=["ingest", "read", "flags", "metrics"], actor=None
    )
    return {"urls": urls, "unresolved": unresolved, "empty": empty, "token": raw}


if __name__ == "__main__":
    django.setup()
    print(json.dumps(collect()))
