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


class RequestKind(models.TextChoices):
    ADVANCE = "advance", "Move on"
    REENTRY = "reentry", "Re-entry"


# Statuses in which a request still blocks another one for the same rollout.
PENDING_STATUSES: tuple[str, ...] = (RequestStatus.OPEN, RequestStatus.APPROVED)


class TransitionRequest(models.Model):
    """A rollout-admin's request to move a rollout one step, decided by the approving roles."""

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="transition_requests")
    # advance: from the active phase into the next; reentry: back into the phase a rollback left (from = target).
    kind = models.CharField(max_length=10, choices=RequestKind.choices, default=RequestKind.ADVANCE)
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
            models.CheckConstraint(condition=Q(kind__in=RequestKind.values), name="transition_kind_valid"),
            models.CheckConstraint(
                condition=~Q(kind=RequestKind.REENTRY) | (Q(from_phase=F("target")) & ~Q(target=TARGET_COMPLETED)),
                name="transition_reentry_same_phase",
            ),
            models.CheckConstraint(
                condition=~Q(status=RequestStatus.APPLIED) | Q(closed_at__isnull=False),
                name="transition_applied_has_time",
            ),
        ]
        indexes = [models.Index(fields=["rollout", "status"], name="transition_rollout_status")]

    def __str__(self) -> str:
        return f"Request #{self.pk}: {self.rollout} {self.step_label}"

    def get_absolute_url(self) -> str:
        return reverse("governance:transition", args=[self.rollout.slug, self.pk])

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING_STATUSES

    @property
    def is_reentry(self) -> bool:
        return self.kind == RequestKind.REENTRY

    @property
    def step_label(self) -> str:
        """ "re-entry into Canary (internal QA)" or "into Limited beta"."""
        return f"{'re-entry ' if self.is_reentry else ''}into {self.get_target_display()}"


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
    actor_user_id = models.BigIntegerField("actor user ID", null=True, blank=True)
    actor_token_id = models.BigIntegerField("actor token ID", null=True, blank=True)
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField("object ID", max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    rollout_id = models.BigIntegerField("rollout ID", null=True, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField("request ID", max_length=64, blank=True)
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
            # The list's text search: prefixes (LIKE 'text%') of these, whatever the database's collation.
            models.Index(fields=["actor_name"], opclasses=["varchar_pattern_ops"], name="audit_actor_prefix"),
            models.Index(fields=["action"], opclasses=["varchar_pattern_ops"], name="audit_action_prefix"),
            models.Index(fields=["object_repr"], opclasses=["varchar_pattern_ops"], name="audit_object_repr_prefix"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(sequence__gte=1), name="audit_sequence_positive"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} {self.object_type}:{self.object_id}"


class DenialWindow(models.Model):
    """Denied actions of one source for one reason in one time window (``governance.denials``).

    The window's first denial is a ledger entry; the ones after it only count
    here, and one summary entry with the count is appended once the window has
    closed. The ledger is append-only, so this small table is what keeps a burst
    of refusals from one source from growing it without bound. Rows are deleted
    once summarised.
    """

    source = models.CharField(max_length=200)  # "user:<id>", "token:<id>" or "ip:<address>"
    reason = models.CharField(max_length=80)  # a stable code: "permission-denied", "api:invalid-token", ...
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=1)
    last_at = models.DateTimeField()
    action = models.CharField(max_length=60)  # the ledger action of the first entry
    first_sequence = models.BigIntegerField(null=True, blank=True)  # the first entry, once appended
    actor_kind = models.CharField(max_length=10)
    actor_name = models.CharField(max_length=150)
    actor_user_id = models.BigIntegerField("actor user ID", null=True, blank=True)
    actor_token_id = models.BigIntegerField("actor token ID", null=True, blank=True)

    class Meta:
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(fields=["source", "reason", "window_start"], name="denial_window_unique"),
            models.CheckConstraint(condition=Q(count__gte=1), name="denial_window_count_positive"),
        ]
        indexes = [models.Index(fields=["window_start"], name="denial_window_start")]

    def __str__(self) -> str:
        return f"{self.source} {self.reason} x{self.count} from {self.window_start:%Y-%m-%d %H:%M:%S}"


# --- Compliance jobs (issue 5) ----------------------------------------------------------------------------------------


class Job(models.TextChoices):
    """The compliance jobs: each a Celery task on the beat schedule, and a row on the Jobs page."""

    CHECK_SCHEDULED_REVIEWS = "check_scheduled_reviews", "Scheduled reviews check"
    DAILY_DELTA_REPORTS = "daily_delta_reports", "Daily delta reports"
    VERIFY_AUDIT_LOG = "verify_audit_log", "Audit ledger verification"
    ENFORCE_RETENTION = "enforce_retention", "Retention purge"
    UPDATE_COMPLIANCE_RECORDS = "update_compliance_records", "Data-processing records update"


class JobTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Run now"
    COMMAND = "command", "Command"
    EVENT = "event", "After an ingest"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted"
    SKIPPED = "skipped", "Skipped"


FINISHED_JOB_STATUSES: tuple[str, ...] = (
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.INTERRUPTED,
    JobStatus.SKIPPED,
)


class JobRun(models.Model):
    """One run of a compliance job, however it was started (beat, "run now", a command, an ingest).

    ``alert`` says the result needs attention: for the ledger verification, a
    broken chain (the banner on every page reads the latest verification).
    """

    job = models.CharField(max_length=40, choices=Job.choices)
    trigger = models.CharField(max_length=10, choices=JobTrigger.choices)
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    options = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150, blank=True)
    task_id = models.CharField("task ID", max_length=64, blank=True)
    scheduled_for = models.DateTimeField(help_text="The beat slot it ran for, or when it was requested.")
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    alert = models.BooleanField(default=False)

    class Meta:
        ordering = ["-queued_at", "-id"]
        default_permissions = ("view",)
        permissions = [("run_job", "Can queue a compliance job to run now")]
        constraints = [
            models.CheckConstraint(condition=Q(job__in=Job.values), name="jobrun_job_valid"),
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="jobrun_status_valid"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True)
                | Q(started_at__isnull=True)
                | Q(finished_at__gte=F("started_at")),
                name="jobrun_finished_after_started",
            ),
        ]
        indexes = [
            models.Index(fields=["job", "status", "-id"], name="jobrun_job_status"),
        ]

    def __str__(self) -> str:
        return f"{self.get_job_display()} #{self.pk} ({self.status})"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class JobLock(models.Model):
    """A lease that lets one run of a job at a time where PostgreSQL advisory locks are not available (SQLite).

    It expires after the job's hard time limit, so a killed process does not block the job for ever.
    """

    name = models.CharField(max_length=60, primary_key=True)
    holder = models.CharField(max_length=64)
    expires_at = models.DateTimeField()

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"{self.name} until {self.expires_at:%Y-%m-%d %H:%M:%S}"


# --- Retention and legal holds ----------------------------------------------------------------------------------------


class LegalHold(models.Model):
    """While active, a rollout's raw evaluation outputs survive every purge; released, they go on the next run."""

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="legal_holds")
    reason = models.TextField()
    placed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    placed_by_name = models.CharField(max_length=150)
    placed_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    released_by_name = models.CharField(max_length=150, blank=True)
    release_reason = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-placed_at", "-id"]
        permissions = [("release_legalhold", "Can release a legal hold")]
        constraints = [
            models.UniqueConstraint(
                fields=["rollout"], condition=Q(released_at__isnull=True), name="legalhold_one_active_per_rollout"
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="legalhold_has_reason"),
            models.CheckConstraint(
                condition=Q(released_at__isnull=True) | (Q(released_at__gte=F("placed_at")) & ~Q(release_reason="")),
                name="legalhold_release_after_placed_with_reason",
            ),
        ]

    def __str__(self) -> str:
        state = "active" if self.is_active else "released"
        return f"Legal hold on {self.rollout} ({state})"

    @property
    def is_active(self) -> bool:
        return self.released_at is None


class ReceiptStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    INTERRUPTED = "interrupted", "Interrupted"
    FAILED = "failed", "Failed"


class RetentionReceipt(models.Model):
    """What one retention run did: its cutoff, what it deleted and held back, how long it took.

    Counters are written with each batch, in the batch's transaction, so a killed
    run's receipt (left ``running``, marked ``interrupted`` by the next run) says
    exactly what it deleted. At most one receipt is ``running`` (a partial unique index).
    """

    job_run = models.ForeignKey(JobRun, on_delete=models.PROTECT, null=True, blank=True, related_name="receipts")
    scheduled_for = models.DateTimeField()
    cutoff = models.DateTimeField(help_text="Outputs of runs that finished before this were expired.")
    retention_days = models.PositiveIntegerField("retention (days)")
    dry_run = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=ReceiptStatus.choices, default=ReceiptStatus.RUNNING)
    rows_matched = models.PositiveBigIntegerField(
        default=0, help_text="Expired outputs not under a hold: deleted, or on a dry run, to be deleted."
    )
    rows_deleted = models.PositiveBigIntegerField(default=0)
    rows_held = models.PositiveBigIntegerField(default=0, help_text="Expired outputs kept for a legal hold.")
    runs_marked = models.PositiveIntegerField(default=0, help_text="Runs whose outputs are now all purged.")
    batches = models.PositiveIntegerField(default=0)
    batch_size = models.PositiveIntegerField()
    longest_batch_ms = models.PositiveIntegerField("longest batch (ms)", default=0)
    held_rollouts = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    ledger_sequence = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="running"), name="retention_one_running_receipt"
            ),
            models.CheckConstraint(condition=Q(status__in=ReceiptStatus.values), name="retention_status_valid"),
            models.CheckConstraint(condition=Q(cutoff__lt=F("scheduled_for")), name="retention_cutoff_before_slot"),
            models.CheckConstraint(
                condition=Q(dry_run=False) | Q(rows_deleted=0), name="retention_dry_run_deletes_nothing"
            ),
        ]

    def __str__(self) -> str:
        kind = "Dry run" if self.dry_run else "Purge"
        return f"{kind} #{self.pk} (cutoff {self.cutoff:%Y-%m-%d %H:%M} UTC): {self.status}"

    @property
    def duration(self):
        return self.finished_at - self.started_at if self.finished_at else None


# --- Data-processing records (GDPR Art. 30) ---------------------------------------------------------------------------


class ProcessingRecord(models.Model):
    """A record of processing activities (GDPR Art. 30(1)), kept by compliance reviewers.

    ``telemetry_fields`` and ``voice_transcription_flows`` list what reviewers
    confirmed from the pending changes the records job proposes.
    """

    key = models.SlugField(max_length=80, unique=True, help_text="Stable identifier; the records job matches on it.")
    name = models.CharField(max_length=200)
    controller = models.TextField(help_text="Name and contact details of the controller and the DPO (Art. 30(1)(a)).")
    purpose = models.TextField(help_text="Purposes of the processing (Art. 30(1)(b)).")
    data_subject_categories = models.TextField(help_text="Categories of data subjects (Art. 30(1)(c)).")
    personal_data_categories = models.TextField(help_text="Categories of personal data (Art. 30(1)(c)).")
    recipients = models.TextField(help_text="Categories of recipients (Art. 30(1)(d)).")
    transfers = models.TextField(
        help_text="Transfers to third countries or international organisations and their safeguards (Art. 30(1)(e))."
    )
    retention_period_days = models.PositiveIntegerField(
        "retention period (days)", help_text="Time limit for erasure, in days (Art. 30(1)(f))."
    )
    retention_policy_applies = models.BooleanField(
        default=True,
        help_text="The data are raw evaluation outputs purged by the retention job: the period must match the policy.",
    )
    security_measures = models.TextField(help_text="Technical and organisational security measures (Art. 30(1)(g)).")
    telemetry_fields = models.JSONField(default=list, blank=True)
    voice_transcription_flows = models.JSONField(default=list, blank=True)
    last_reviewed_at = models.DateTimeField(null=True, blank=True)
    last_reviewed_by_name = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(retention_period_days__gte=1), name="record_retention_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("governance:record", args=[self.key])


class ChangeKind(models.TextChoices):
    TELEMETRY_FIELD = "telemetry_field", "Telemetry field"
    VOICE_TRANSCRIPTION_FLOW = "voice_transcription_flow", "Voice transcription flow"


class ChangeStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"


class RecordChange(models.Model):
    """Something the records job found that a record should list; a compliance reviewer confirms or rejects it.

    Unique per record, kind and subject whatever its status: a field or flow is
    proposed once, never twice.
    """

    record = models.ForeignKey(ProcessingRecord, on_delete=models.PROTECT, related_name="changes")
    kind = models.CharField(max_length=30, choices=ChangeKind.choices)
    subject = models.CharField(max_length=250, help_text="run_output:<field>, run_metric:<field>, or a tenant slug.")
    label = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=ChangeStatus.choices, default=ChangeStatus.PENDING)
    detected_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_by_name = models.CharField(max_length=150, blank=True)
    comment = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["record_id", "-detected_at", "-id"]
        permissions = [("decide_recordchange", "Can confirm or reject a pending change of a processing record")]
        constraints = [
            models.UniqueConstraint(fields=["record", "kind", "subject"], name="recordchange_once_per_subject"),
            models.CheckConstraint(condition=Q(kind__in=ChangeKind.values), name="recordchange_kind_valid"),
            models.CheckConstraint(
                condition=Q(status=ChangeStatus.PENDING, decided_at__isnull=True)
                | (
                    Q(status__in=[ChangeStatus.CONFIRMED, ChangeStatus.REJECTED], decided_at__isnull=False)
                    & ~Q(comment="")
                ),
                name="recordchange_decided_with_comment",
            ),
        ]
        indexes = [models.Index(fields=["status", "record"], name="recordchange_status")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.label} ({self.status})"


class TelemetrySource(models.TextChoices):
    RUN_METRIC = "run_metric", "Run metrics"
    RUN_OUTPUT = "run_output", "Run outputs"
    MONITORING_SAMPLE = "monitoring_sample", "Monitoring samples"


class TelemetryField(models.Model):
    """A field name seen in ingested payloads, with when it was first and last ingested."""

    source = models.CharField(max_length=20, choices=TelemetrySource.choices)
    name = models.CharField(max_length=200)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["source", "name"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(fields=["source", "name"], name="telemetry_field_unique"),
            models.CheckConstraint(condition=Q(last_seen_at__gte=F("first_seen_at")), name="telemetry_seen_order"),
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"

    @property
    def subject(self) -> str:
        return f"{self.source}:{self.name}"


class ScanCursor(models.Model):
    """How far the records job has scanned each source (the highest settled primary key)."""

    source = models.CharField(max_length=20, choices=TelemetrySource.choices, unique=True)
    last_id = models.BigIntegerField("last ID", default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"{self.source} after #{self.last_id}"


# --- Scheduled reviews (playbook section 6) ---------------------------------------------------------------------------


class ReviewKind(models.TextChoices):
    WEEKLY_EVALUATION = "weekly_evaluation", "Weekly evaluation review"
    MONTHLY_GUARDRAIL_DRILL = "monthly_guardrail_drill", "Monthly guardrail scenario drill"
    QUARTERLY_SECURITY_PRIVACY = "quarterly_security_privacy", "Quarterly security and privacy review"


class ReviewStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETED = "completed", "Completed"


class ScheduledReview(models.Model):
    """One review for one period (UTC): created once by the daily check, completed by a member of its role."""

    kind = models.CharField(max_length=30, choices=ReviewKind.choices)
    period_start = models.DateField()
    period_end = models.DateField(help_text="Exclusive.")
    label = models.CharField(max_length=20, help_text="2025-W23, 2025-06 or 2025-Q2.")
    assigned_role = models.CharField(max_length=30, choices=Role.choices)
    due_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.OPEN)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    completed_by_name = models.CharField(max_length=150, blank=True)
    notes = models.TextField(blank=True)
    tool_scoring_adjustments = models.TextField(
        blank=True, help_text="Weekly evaluation review: tool-scoring weight adjustments decided from reflection data."
    )
    compensations_as_designed = models.BooleanField(
        null=True, blank=True, help_text="Monthly drill: did guardrail compensations execute as designed?"
    )
    rbac_changes = models.TextField(blank=True, help_text="Quarterly review: RBAC policy changes decided.")
    # Segregation of duties: whoever handed the review to another role does not complete it.
    reassigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reassigned_by_name = models.CharField(max_length=150, blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-period_start", "kind"]
        permissions = [("reassign_scheduledreview", "Can assign a scheduled review to another role")]
        constraints = [
            models.UniqueConstraint(fields=["kind", "period_start"], name="review_once_per_period"),
            models.CheckConstraint(condition=Q(kind__in=ReviewKind.values), name="review_kind_valid"),
            models.CheckConstraint(condition=Q(period_end__gt=F("period_start")), name="review_period_positive"),
            models.CheckConstraint(
                condition=Q(status=ReviewStatus.OPEN, completed_at__isnull=True)
                | (Q(status=ReviewStatus.COMPLETED, completed_at__isnull=False) & ~Q(notes="")),
                name="review_completed_with_notes",
            ),
            models.CheckConstraint(
                condition=Q(compensations_as_designed__isnull=True) | Q(kind=ReviewKind.MONTHLY_GUARDRAIL_DRILL),
                name="review_drill_answer_only_on_drills",
            ),
            models.CheckConstraint(
                condition=~Q(kind=ReviewKind.MONTHLY_GUARDRAIL_DRILL, status=ReviewStatus.COMPLETED)
                | Q(compensations_as_designed__isnull=False),
                name="review_drill_completed_with_answer",
            ),
            models.CheckConstraint(
                condition=Q(completed_by__isnull=True)
                | Q(reassigned_by__isnull=True)
                | ~Q(completed_by=F("reassigned_by")),
                name="review_not_completed_by_its_reassigner",
            ),
        ]
        indexes = [models.Index(fields=["status", "due_at"], name="review_status_due")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.label}"

    def get_absolute_url(self) -> str:
        return reverse("governance:review", args=[self.pk])


# --- Daily delta reports (playbook section 2, limited beta) -----------------------------------------------------------


class DailyDeltaReport(models.Model):
    """A rollout's baseline-vs-candidate deltas for its current phase, as of the end of one UTC day.

    ``metrics`` holds, per catalogue metric, both arms' n/mean/sd, the delta, its
    Welch 95% interval and verdict, and the success criterion: the report stays
    what it was when it was made.
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="daily_delta_reports")
    phase = models.ForeignKey("rollout.Phase", on_delete=models.PROTECT, related_name="+")
    report_date = models.DateField()
    through = models.DateTimeField(help_text="Runs that finished before this are included.")
    generated_at = models.DateTimeField()
    baseline_runs = models.PositiveIntegerField()
    candidate_runs = models.PositiveIntegerField()
    metrics = models.JSONField()

    class Meta:
        ordering = ["rollout_id", "-report_date"]
        default_permissions = ("view",)
        constraints = [
            models.UniqueConstraint(fields=["rollout", "report_date"], name="delta_report_once_per_day"),
        ]

    def __str__(self) -> str:
        return f"Delta report {self.rollout} {self.report_date:%Y-%m-%d}"

    def get_absolute_url(self) -> str:
        return reverse("governance:delta_report", args=[self.rollout.slug, self.report_date.isoformat()])
