"""Plan sign-offs, transition requests and approvals, and the audit ledger (design sections 3 and 5).

Sign-offs, requests, approvals and the approving-role configuration keep their
history with django-simple-history like every tracked model; the ledger entry
derived from each historical record carries the governance action name (for
instance ``transition.approve``), so each change is exactly one ledger entry.

The database guards what it can: one current sign-off per role and per person,
one decision per role and per person on a request, the requester never deciding
(their id is copied onto the approval row so a check constraint sees both), and
one open request per rollout (a partial unique index).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from simple_history.models import HistoricalRecords

from rollout.models import PhaseKind, Rollout
from rollout.roles import LEAD_ROLES, Role
from rollout.services import TARGET_COMPLETED, TRANSITION_TARGETS

LEAD_ROLE_VALUES: tuple[str, ...] = tuple(str(r.value) for r in LEAD_ROLES)


class LeadRole(models.TextChoices):
    """The roles that sign off plans and approve transitions (design section 1)."""

    PRODUCT_LEAD = Role.PRODUCT_LEAD.value, Role.PRODUCT_LEAD.label
    SUPPORT_LEAD = Role.SUPPORT_LEAD.value, Role.SUPPORT_LEAD.label
    COMPLIANCE_LEAD = Role.COMPLIANCE_LEAD.value, Role.COMPLIANCE_LEAD.label
    SRE_LEAD = Role.SRE_LEAD.value, Role.SRE_LEAD.label


assert tuple(LeadRole.values) == LEAD_ROLE_VALUES


class Decision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


class TransitionTarget(models.TextChoices):
    CANARY = PhaseKind.CANARY.value, "Canary (internal QA)"
    LIMITED_BETA = PhaseKind.LIMITED_BETA.value, "Limited beta"
    GENERAL_AVAILABILITY = PhaseKind.GENERAL_AVAILABILITY.value, "General availability"
    COMPLETED = TARGET_COMPLETED, "Completed"


assert tuple(TransitionTarget.values) == TRANSITION_TARGETS  # the state machine's targets, in order

# Design section 3: who approves each transition unless a rollout says otherwise.
DEFAULT_APPROVING_ROLES: dict[str, tuple[str, ...]] = {
    TransitionTarget.CANARY: (Role.PRODUCT_LEAD, Role.SRE_LEAD),
    TransitionTarget.LIMITED_BETA: (Role.PRODUCT_LEAD, Role.SRE_LEAD, Role.SUPPORT_LEAD),
    TransitionTarget.GENERAL_AVAILABILITY: (
        Role.PRODUCT_LEAD,
        Role.SUPPORT_LEAD,
        Role.COMPLIANCE_LEAD,
        Role.SRE_LEAD,
    ),
    TransitionTarget.COMPLETED: (Role.PRODUCT_LEAD, Role.COMPLIANCE_LEAD),
}


class PlanSignOff(models.Model):
    """A lead's decision on one version of a rollout's plan.

    ``plan_hash`` is the version it was given on. A plan change marks earlier
    sign-offs superseded (kept, no longer counted).
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="sign_offs")
    role = models.CharField(max_length=30, choices=LeadRole.choices)
    signer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    signer_name = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    plan_hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField()
    superseded_at = models.DateTimeField(null=True, blank=True)
    superseded_by_hash = models.CharField(max_length=64, blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "-signed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "role"],
                condition=Q(superseded_at__isnull=True),
                name="signoff_one_current_per_role",
            ),
            models.UniqueConstraint(
                fields=["rollout", "signer"],
                condition=Q(superseded_at__isnull=True),
                name="signoff_one_current_role_per_person",
            ),
            models.CheckConstraint(condition=Q(role__in=LEAD_ROLE_VALUES), name="signoff_role_is_lead"),
            models.CheckConstraint(condition=Q(decision__in=Decision.values), name="signoff_decision_valid"),
            models.CheckConstraint(
                condition=Q(superseded_at__isnull=True) | Q(superseded_at__gte=F("signed_at")),
                name="signoff_superseded_after_signed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()} {self.decision} of plan {self.plan_hash[:12]}"

    @property
    def is_current(self) -> bool:
        return self.superseded_at is None


class ApprovingRole(models.Model):
    """A rollout's own approving roles for one transition; without rows the defaults apply."""

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="approving_roles")
    target = models.CharField(max_length=30, choices=TransitionTarget.choices)
    role = models.CharField(max_length=30, choices=LeadRole.choices)

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "target", "role"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "target", "role"], name="approving_role_unique"),
            models.CheckConstraint(condition=Q(role__in=LEAD_ROLE_VALUES), name="approving_role_is_lead"),
            models.CheckConstraint(condition=Q(target__in=TransitionTarget.values), name="approving_role_target_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()} approves {self.get_target_display()}"


class RequestStatus(models.TextChoices):
    OPEN = "open", "Open"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    APPLIED = "applied", "Applied"
    WITHDRAWN = "withdrawn", "Withdrawn"


# Statuses in which a request still blocks another one for the same rollout.
PENDING_STATUSES: tuple[str, ...] = (RequestStatus.OPEN, RequestStatus.APPROVED)


class TransitionRequest(models.Model):
    """A rollout-admin's request to move a rollout one step, decided by the approving roles."""

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="transition_requests")
    from_phase = models.CharField(max_length=30, choices=PhaseKind.choices)
    target = models.CharField(max_length=30, choices=TransitionTarget.choices)
    status = models.CharField(max_length=10, choices=RequestStatus.choices, default=RequestStatus.OPEN)
    justification = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    requester_name = models.CharField(max_length=150)
    requested_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True, help_text="When it became approved or rejected.")
    closed_at = models.DateTimeField(null=True, blank=True, help_text="Applied or withdrawn.")
    closed_by_name = models.CharField(max_length=150, blank=True)
    close_reason = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [
            ("apply_transitionrequest", "Can apply an approved transition request"),
            ("withdraw_transitionrequest", "Can withdraw an open transition request"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["rollout"],
                condition=Q(status__in=PENDING_STATUSES),
                name="transition_one_open_request_per_rollout",
            ),
            models.CheckConstraint(condition=Q(status__in=RequestStatus.values), name="transition_status_valid"),
            models.CheckConstraint(condition=Q(target__in=TransitionTarget.values), name="transition_target_valid"),
            models.CheckConstraint(
                condition=~Q(status=RequestStatus.APPLIED) | Q(closed_at__isnull=False),
                name="transition_applied_has_time",
            ),
        ]
        indexes = [models.Index(fields=["rollout", "status"], name="transition_rollout_status")]

    def __str__(self) -> str:
        return f"Request #{self.pk}: {self.rollout} into {self.get_target_display()}"

    def get_absolute_url(self) -> str:
        return reverse("governance:transition", args=[self.rollout.slug, self.pk])

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING_STATUSES


class TransitionApproval(models.Model):
    """One role's decision on a request. Voided decisions (approvers changed) stay recorded."""

    request = models.ForeignKey(TransitionRequest, on_delete=models.PROTECT, related_name="approvals")
    role = models.CharField(max_length=30, choices=LeadRole.choices)
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    approver_name = models.CharField(max_length=150)
    # Copied from the request so the database itself can refuse a self-approval.
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    decided_at = models.DateTimeField()
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["request_id", "decided_at", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(approver=F("requester")), name="approval_not_by_requester"),
            models.UniqueConstraint(
                fields=["request", "role"], condition=Q(voided_at__isnull=True), name="approval_one_decision_per_role"
            ),
            models.UniqueConstraint(
                fields=["request", "approver"],
                condition=Q(voided_at__isnull=True),
                name="approval_one_role_per_person",
            ),
            models.CheckConstraint(condition=Q(role__in=LEAD_ROLE_VALUES), name="approval_role_is_lead"),
            models.CheckConstraint(condition=Q(decision__in=Decision.values), name="approval_decision_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()} {self.decision}s request #{self.request_id}"


class AuditEvent(models.Model):
    """One entry of the tamper-evident, append-only audit ledger.

    ``hash`` is SHA-256 over ``prev_hash`` and the canonical JSON of the entry
    (``governance.ledger.entry_payload``). Actor, rollout and token are stored as
    plain values, never foreign keys: deleting a user must not rewrite (or be
    blocked by) the ledger, and the hash covers them. On PostgreSQL triggers
    refuse UPDATE, DELETE and TRUNCATE (migration 0002).
    """

    sequence = models.BigIntegerField(primary_key=True)
    at = models.DateTimeField()
    actor_kind = models.CharField(max_length=10)
    actor_name = models.CharField(max_length=150)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    actor_token_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    rollout_id = models.BigIntegerField(null=True, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-sequence"]
        default_permissions = ("view",)
        permissions = [("export_auditevent", "Can export the audit ledger")]
        indexes = [
            models.Index(fields=["at"], name="audit_at"),
            models.Index(fields=["rollout_id", "sequence"], name="audit_rollout_seq"),
            models.Index(fields=["actor_name", "sequence"], name="audit_actor_seq"),
            models.Index(fields=["action", "sequence"], name="audit_action_seq"),
            models.Index(fields=["object_type", "object_id", "sequence"], name="audit_object_seq"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(sequence__gte=1), name="audit_sequence_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.object_type}:{self.object_id}"
