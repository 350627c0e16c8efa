"""Admin for superusers: the rollout record is read here, and written only through services.

Domain models are read-only in the admin (with their history); tenants are
edited through ``services.tenant_save`` so the voice-insights rule and the
history hold there too.
"""

from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from . import models, services


class ReadOnlyHistoryAdmin(SimpleHistoryAdmin):
    """Browse and see history; every change goes through the product's services."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
