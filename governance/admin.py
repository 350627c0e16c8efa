"""Admin for superusers: governance records are read here and written only through services.

The ledger offers neither change nor delete, nor add: entries are appended by
the application alone.
"""

from django.contrib import admin

from rollout.admin import ReadOnlyHistoryAdmin

from . import models


@admin.register(models.PlanSignOff)
class PlanSignOffAdmin(ReadOnlyHistoryAdmin):
    list_display = ["rollout", "role", "decision", "signer_name", "signed_at", "plan_hash", "superseded_at"]
    list_filter = ["role", "decision"]
    list_select_related = ["rollout"]


@admin.register(models.ApprovingRole)
class ApprovingRoleAdmin(ReadOnlyHistoryAdmin):
    list_display = ["rollout", "target", "role"]
    list_select_related = ["rollout"]


class ApprovalInline(admin.TabularInline):
    model = models.TransitionApproval
    extra = 0
    can_delete = False
    fields = ["role", "decision", "approver_name", "decided_at", "comment", "voided_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(models.TransitionRequest)
class TransitionRequestAdmin(ReadOnlyHistoryAdmin):
    list_display = ["pk", "rollout", "from_phase", "target", "status", "requester_name", "requested_at"]
    list_filter = ["status", "target"]
    list_select_related = ["rollout"]
    inlines = [ApprovalInline]


@admin.register(models.TransitionApproval)
class TransitionApprovalAdmin(ReadOnlyHistoryAdmin):
    list_display = ["request", "role", "decision", "approver_name", "decided_at", "voided_at"]
    list_filter = ["role", "decision"]
    list_select_related = ["request__rollout"]


@admin.register(models.AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["sequence", "at", "actor_kind", "actor_name", "action", "object_type", "object_id", "rollout_id"]
    list_filter = ["action", "actor_kind", "object_type"]
    search_fields = ["actor_name", "object_repr", "reason", "request_id"]
    ordering = ["-sequence"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
