"""Admin for superusers: evaluation data is read-only here; tokens are created and revoked through services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from rollout.admin import ReadOnlyAdmin, ReadOnlyHistoryAdmin
from rollout.errors import DomainError

from . import models, services


@admin.register(models.EvaluationRun)
class EvaluationRunAdmin(ReadOnlyAdmin):
    list_display = ["run_id", "rollout", "phase", "arm", "finished_at", "conversations", "output_count"]
    list_filter = ["arm", "phase__kind"]
    search_fields = ["run_id"]
    list_select_related = ["rollout", "phase"]
    date_hierarchy = "finished_at"
    show_full_result_count = False


@admin.register(models.RunOutput)
class RunOutputAdmin(ReadOnlyAdmin):
    list_display = ["run", "conversation_id", "run_finished_at"]
    search_fields = ["conversation_id", "run__run_id"]
    list_select_related = ["run"]
    show_full_result_count = False


@admin.register(models.MonitoringSample)
class MonitoringSampleAdmin(ReadOnlyAdmin):
    list_display = ["phase", "interval_start", "interval_end", "latency_p95_ms", "requests"]
    list_select_related = ["phase__rollout"]
    show_full_result_count = False


@admin.register(models.SuccessCriterion)
class SuccessCriterionAdmin(ReadOnlyHistoryAdmin):
    list_display = ["rollout", "metric", "comparator", "threshold"]
    list_select_related = ["rollout"]


@admin.register(models.TriggerFiring)
class TriggerFiringAdmin(ReadOnlyHistoryAdmin):
    list_display = ["rollout", "phase", "trigger", "streak", "fired_at", "incident"]
    list_filter = ["trigger"]
    list_select_related = ["rollout", "phase", "incident"]


class ApiTokenCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=models.ApiScope.choices, widget=forms.CheckboxSelectMultiple)
    expires_in_days = forms.IntegerField(required=False, min_value=1, help_text="Leave empty for no expiry.")

    class Meta:
        model = models.ApiToken
        fields = ["name"]


@admin.register(models.ApiToken)
class ApiTokenAdmin(ReadOnlyHistoryAdmin):
    """Create shows the token once; revoke is an action. The stored hash is never shown."""

    list_display = ["name", "prefix", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["revoked_at"]
    readonly_fields = [
        "name",
        "prefix",
        "scopes",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
    ]
    exclude = ["token_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request, obj=None):
        return request.user.is_superuser

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
            kwargs["fields"] = ["name", "scopes", "expires_in_days"]
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def get_exclude(self, request, obj=None):
        return ["token_hash"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "scopes", "expires_in_days"]
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj, form, change) -> None:
        token, raw = services.api_token_create(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_in_days=form.cleaned_data.get("expires_in_days"),
            actor=request.user,
        )
        obj.pk = token.pk
        messages.warning(
            request, f"Token for “{token.name}”: {raw} — copy it now, it is not stored and cannot be shown again."
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset) -> None:
        revoked = 0
        for token in queryset:
            try:
                services.api_token_revoke(token=token, actor=request.user, reason="Revoked in the admin")
            except DomainError as exc:
                messages.error(request, exc.message)
            else:
                revoked += 1
        if revoked:
            messages.success(request, f"Revoked {revoked} token(s).")

    def get_actions(self, request):
        # ReadOnlyHistoryAdmin forbids change; revoking is the one write the admin offers, for superusers.
        actions = super().get_actions(request)
        if not request.user.is_superuser:
            actions.pop("revoke", None)
        return actions

    def has_change_permission(self, request, obj=None):
        return False
