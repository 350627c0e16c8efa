"""Admin for superusers: governance records are read here and written only through services.

The ledger offers neither change nor delete, nor add: entries are appended by
the application alone.
"""

from allauth.mfa.models import Authenticator
from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.template.response import TemplateResponse

from rollout.admin import ReadOnlyHistoryAdmin
from rollout.errors import DomainError

from . import models, services


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


class ReadOnlyAdmin(admin.ModelAdmin):
    """Operational records of the compliance jobs: read here, written by the jobs alone."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(models.LegalHold)
class LegalHoldAdmin(ReadOnlyHistoryAdmin):
    list_display = ["rollout", "placed_at", "placed_by_name", "released_at", "released_by_name"]
    list_select_related = ["rollout"]


@admin.register(models.RetentionReceipt)
class RetentionReceiptAdmin(ReadOnlyAdmin):
    list_display = ["pk", "started_at", "status", "dry_run", "cutoff", "rows_deleted", "rows_held", "batches"]
    list_filter = ["status", "dry_run"]


@admin.register(models.JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ["pk", "job", "trigger", "status", "queued_at", "started_at", "finished_at", "alert"]
    list_filter = ["job", "status", "trigger"]


@admin.register(models.ProcessingRecord)
class ProcessingRecordAdmin(ReadOnlyHistoryAdmin):
    list_display = ["name", "key", "retention_period_days", "last_reviewed_at"]


@admin.register(models.RecordChange)
class RecordChangeAdmin(ReadOnlyHistoryAdmin):
    list_display = ["record", "kind", "label", "status", "detected_at", "decided_by_name"]
    list_filter = ["status", "kind"]
    list_select_related = ["record"]


@admin.register(models.TelemetryField)
class TelemetryFieldAdmin(ReadOnlyAdmin):
    list_display = ["source", "name", "first_seen_at", "last_seen_at"]
    list_filter = ["source"]


@admin.register(models.ScheduledReview)
class ScheduledReviewAdmin(ReadOnlyHistoryAdmin):
    list_display = ["kind", "label", "assigned_role", "due_at", "status", "completed_by_name"]
    list_filter = ["kind", "status"]


@admin.register(models.DailyDeltaReport)
class DailyDeltaReportAdmin(ReadOnlyAdmin):
    list_display = ["rollout", "report_date", "phase", "baseline_runs", "candidate_runs"]
    list_select_related = ["rollout", "phase"]


# --- Users: resetting a lost second factor (governance.services.mfa_reset, a ledger entry) ------------------------


class MfaResetForm(forms.Form):
    reason = forms.CharField(
        max_length=500, widget=forms.TextInput(attrs={"size": 60}), help_text="Why (a ticket, a lost phone)."
    )


@admin.action(description="Reset the second factor of the selected users")
def reset_second_factor(modeladmin, request, queryset):
    """Removes each user's authenticator app and recovery codes: they enrol again at their next login."""
    form = MfaResetForm(request.POST if "reason" in request.POST else None)
    if form.is_valid():
        for user in queryset:
            try:
                kinds = services.mfa_reset(user=user, actor=request.user, reason=form.cleaned_data["reason"])
            except DomainError as exc:
                modeladmin.message_user(request, f"{user.get_username()}: {exc.message}", level="error")
            else:
                done = ", ".join(kinds) or "nothing to remove"
                modeladmin.message_user(request, f"{user.get_username()}: second factor reset ({done}).")
        return None
    return TemplateResponse(
        request,
        "admin/mfa_reset.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "Reset the second factor",
            "users": queryset,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": modeladmin.model._meta,
        },
    )


User = get_user_model()
admin.site.unregister(User)
# Authenticators change only through allauth's pages (their owner) and the reset above: not edited here.
admin.site.unregister(Authenticator)


@admin.register(User)
class DashboardUserAdmin(UserAdmin):
    actions = [*UserAdmin.actions, reset_second_factor]
