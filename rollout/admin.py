"""Admin for superusers: the rollout record is read here, and written only through services.

Domain models are read-only in the admin (with their history); tenants are
edited through ``services.tenant_save`` so the voice-insights rule and the
history hold there too.
"""

from django import forms
from django.contrib import admin, messages
from simple_history.admin import SimpleHistoryAdmin

from . import models, notifications, services
from .errors import DomainError


class ReadOnlyMixin:
    """Browse only: every change goes through the product's services."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """For bulk data without history (evaluation runs, outputs, samples)."""


class ReadOnlyHistoryAdmin(ReadOnlyMixin, SimpleHistoryAdmin):
    """Browse and see history."""


class PhaseInline(admin.TabularInline):
    model = models.Phase
    extra = 0
    can_delete = False
    readonly_fields = ["kind", "order", "status", "planned_start", "entered_at", "exited_at", "guardrail_mode"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(models.Rollout)
class RolloutAdmin(ReadOnlyHistoryAdmin):
    list_display = ["name", "slug", "status", "owner", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "slug"]
    inlines = [PhaseInline]


@admin.register(models.Phase)
class PhaseAdmin(ReadOnlyHistoryAdmin):
    list_display = ["rollout", "kind", "status", "planned_start", "entered_at", "exited_at", "guardrail_mode"]
    list_filter = ["kind", "status"]
    list_select_related = ["rollout"]


@admin.register(models.Tenant)
class TenantAdmin(SimpleHistoryAdmin):
    list_display = ["name", "tier", "transcript_ingestion_confirmed", "account_manager"]
    list_filter = ["tier", "transcript_ingestion_confirmed"]
    search_fields = ["name", "slug", "account_manager"]
    exclude = ["slug"]

    def save_model(self, request, obj, form, change):
        services.tenant_save(tenant=obj, actor=request.user, reason="Edited in the admin")

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.Cohort)
class CohortAdmin(ReadOnlyHistoryAdmin):
    list_display = ["name", "rollout", "kind", "entry_phase"]
    list_select_related = ["rollout"]


@admin.register(models.CohortMembership)
class CohortMembershipAdmin(ReadOnlyHistoryAdmin):
    list_display = ["tenant", "cohort", "rollout"]
    list_select_related = ["tenant", "cohort", "rollout"]


@admin.register(models.FeatureFlag)
class FeatureFlagAdmin(ReadOnlyHistoryAdmin):
    list_display = ["key", "rollout"]
    list_filter = ["key"]
    list_select_related = ["rollout"]


@admin.register(models.FlagExposure)
class FlagExposureAdmin(ReadOnlyHistoryAdmin):
    list_display = ["flag", "tenant", "enabled", "updated_at"]
    list_filter = ["enabled", "flag__key"]
    list_select_related = ["flag", "tenant"]


@admin.register(models.ChecklistItem)
class ChecklistItemAdmin(ReadOnlyHistoryAdmin):
    list_display = ["title", "rollout", "kind", "completed_by", "completed_at"]
    list_filter = ["kind"]
    list_select_related = ["rollout", "completed_by"]


@admin.register(models.EscalationContact)
class EscalationContactAdmin(ReadOnlyHistoryAdmin):
    list_display = ["rollout", "severity", "contact", "role", "channel"]
    list_select_related = ["rollout"]


@admin.register(models.Communication)
class CommunicationAdmin(ReadOnlyHistoryAdmin):
    list_display = ["title", "rollout", "kind", "author", "published_at"]
    list_filter = ["kind"]
    list_select_related = ["rollout", "author"]


@admin.register(models.PhaseFeedback)
class PhaseFeedbackAdmin(ReadOnlyHistoryAdmin):
    list_display = ["phase", "severity", "author", "created_at"]
    list_select_related = ["phase__rollout", "author"]


@admin.register(models.Incident)
class IncidentAdmin(ReadOnlyHistoryAdmin):
    list_display = ["title", "rollout", "kind", "status", "opened_at", "closed_at"]
    list_filter = ["kind", "status"]
    list_select_related = ["rollout"]


@admin.register(models.IncidentEvent)
class IncidentEventAdmin(ReadOnlyHistoryAdmin):
    list_display = ["incident", "at", "kind", "actor"]
    list_select_related = ["incident", "actor"]


@admin.register(models.IncidentStep)
class IncidentStepAdmin(ReadOnlyHistoryAdmin):
    list_display = ["incident", "key", "done_by", "done_at"]
    list_select_related = ["incident", "done_by"]


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https", help_text="http(s) URL receiving the JSON body.")
    rotate_secret = forms.BooleanField(required=False, help_text="Generate a new signing secret (shown once).")

    class Meta:
        model = models.WebhookEndpoint
        fields = ["rollout", "name", "url", "active", "cloudevents_mode"]


class WebhookAttemptInline(admin.TabularInline):
    model = models.WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "at", "status_code", "error", "duration_ms", "succeeded"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(models.WebhookEndpoint)
class WebhookEndpointAdmin(SimpleHistoryAdmin):
    """Webhooks are configured here (superusers), through the notification services; the secret is shown once."""

    form = WebhookEndpointForm
    list_display = ["name", "rollout", "url", "active", "created_at"]
    list_filter = ["active"]
    list_select_related = ["rollout"]

    def get_readonly_fields(self, request, obj=None):
        return ["rollout", "name"] if obj else []

    def save_model(self, request, obj, form, change):
        try:
            if change:
                endpoint, secret = notifications.webhook_endpoint_update(
                    endpoint=obj,
                    actor=request.user,
                    url=form.cleaned_data["url"],
                    active=form.cleaned_data["active"],
                    rotate_secret=form.cleaned_data.get("rotate_secret", False),
                    cloudevents_mode=form.cleaned_data["cloudevents_mode"],
                    reason="Changed in the admin",
                )
            else:
                endpoint, secret = notifications.webhook_endpoint_create(
                    rollout=form.cleaned_data["rollout"],
                    name=form.cleaned_data["name"],
                    url=form.cleaned_data["url"],
                    actor=request.user,
                    cloudevents_mode=form.cleaned_data["cloudevents_mode"],
                    reason="Added in the admin",
                )
        except DomainError as exc:
            messages.error(request, exc.message)
            return
        obj.pk = endpoint.pk
        if secret:
            messages.warning(
                request, f"Signing secret for “{endpoint.name}”: {secret} — copy it now, it is shown once."
            )

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["endpoint", "incident", "event", "subject", "status", "attempt_count", "created_at", "delivered_at"]
    list_filter = ["status"]
    list_select_related = ["endpoint", "incident"]
    readonly_fields = [
        "endpoint",
        "incident",
        "delivery_id",
        "event",
        "subject",
        "body",
        "status",
        "attempt_count",
        "created_at",
        "delivered_at",
    ]
    inlines = [WebhookAttemptInline]

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
