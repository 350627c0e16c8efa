"""The rollout core: rollouts, phases, tenants and cohorts, flags, checklists,
communications, phase feedback and incidents (design sections 2-3).

Every model keeps its history with django-simple-history; services set the
history user and change reason. Invariants the database can guard are
constraints here, not just checks in services.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from simple_history.models import HistoricalRecords


class PhaseKind(models.TextChoices):
    PREPARATION = "preparation", "Preparation"
    CANARY = "canary", "Canary (internal QA)"
    LIMITED_BETA = "limited_beta", "Limited beta"
    GENERAL_AVAILABILITY = "general_availability", "General availability"


PHASE_SEQUENCE: tuple[str, ...] = tuple(PhaseKind.values)


class PhaseStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    ROLLED_BACK = "rolled_back", "Rolled back"


class RolloutStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    IN_PROGRESS = "in_progress", "In progress"
    ROLLED_BACK = "rolled_back", "Rolled back"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class GuardrailMode(models.TextChoices):
    OBSERVE = "observe", "Observe"
    ENFORCE = "enforce", "Enforce"


class Rollout(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_rollouts")
    status = models.CharField(max_length=20, choices=RolloutStatus.choices, default=RolloutStatus.DRAFT)
    expected_impacts = models.TextField(
        blank=True, help_text="What tenants and support should expect; goes into the announcement."
    )
    # Rollback thresholds (design section 4; playbook defaults).
    guardrail_compensation_threshold = models.DecimalField(
        "guardrail compensation threshold (ratio)",
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.0500"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
        help_text="A candidate run breaches when compensations / conversations is above this.",
    )
    guardrail_breach_runs = models.PositiveSmallIntegerField(
        "guardrail trigger: consecutive breaching runs",
        default=2,
        validators=[MinValueValidator(1)],
        help_text="Consecutive breaching runs that fire the trigger.",
    )
    latency_sla_ms = models.PositiveIntegerField(
        "latency SLA (ms)",
        default=2000,
        validators=[MinValueValidator(1)],
        help_text="SLA for the p95 latency of a monitoring interval.",
    )
    latency_breach_intervals = models.PositiveSmallIntegerField(
        "latency trigger: consecutive breaching intervals",
        default=3,
        validators=[MinValueValidator(1)],
        help_text="Consecutive breaching intervals that fire the trigger.",
    )
    canary_soak_hours = models.PositiveSmallIntegerField(
        "canary soak (hours)", default=48, help_text="How long canary must run before limited beta."
    )
    ga_consecutive_runs = models.PositiveSmallIntegerField(
        "GA consecutive runs",
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Consecutive limited-beta candidate runs meeting every success criterion before GA.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("operate_kill_switch", "Can turn the agent_v1_fallback kill switch on or off"),
            ("roll_back_rollout", "Can open a manual rollback"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(guardrail_compensation_threshold__gte=0) & Q(guardrail_compensation_threshold__lte=1),
                name="rollout_guardrail_threshold_0_1",
            ),
            models.CheckConstraint(condition=Q(guardrail_breach_runs__gte=1), name="rollout_guardrail_runs_positive"),
            models.CheckConstraint(
                condition=Q(latency_breach_intervals__gte=1), name="rollout_latency_intervals_positive"
            ),
            models.CheckConstraint(condition=Q(latency_sla_ms__gte=1), name="rollout_latency_sla_positive"),
            models.CheckConstraint(condition=Q(ga_consecutive_runs__gte=1), name="rollout_ga_runs_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("rollout:detail", args=[self.slug])

    @property
    def is_closed(self) -> bool:
        return self.status in {RolloutStatus.COMPLETED, RolloutStatus.CANCELLED}


class Phase(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="phases")
    kind = models.CharField(max_length=30, choices=PhaseKind.choices)
    order = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=PhaseStatus.choices, default=PhaseStatus.PENDING)
    planned_start = models.DateField(null=True, blank=True)
    entered_at = models.DateTimeField(null=True, blank=True)
    exited_at = models.DateTimeField(null=True, blank=True)
    guardrail_mode = models.CharField(max_length=10, choices=GuardrailMode.choices, default=GuardrailMode.OBSERVE)

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "order"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "kind"], name="phase_unique_kind_per_rollout"),
            models.UniqueConstraint(fields=["rollout", "order"], name="phase_unique_order_per_rollout"),
            models.UniqueConstraint(
                fields=["rollout"],
                condition=Q(status=PhaseStatus.ACTIVE),
                name="phase_one_active_per_rollout",
            ),
            models.CheckConstraint(
                condition=Q(exited_at__isnull=True) | Q(entered_at__isnull=False, exited_at__gte=F("entered_at")),
                name="phase_exit_after_entry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rollout} / {self.get_kind_display()}"

    def get_absolute_url(self) -> str:
        return reverse("rollout:phase", args=[self.rollout.slug, self.kind])


class PeriodEnd(models.TextChoices):
    """How an activity period of a phase ended."""

    COMPLETED = "completed", "Moved on"
    ROLLED_BACK = "rolled_back", "Rolled back"
    CANCELLED = "cancelled", "Cancelled"


class PhasePeriod(models.Model):
    """One stretch of time during which a phase was active.

    A phase has one period per entry: the first when it is entered, another
    each time it is re-entered after a rollback. ``Phase.entered_at`` and
    ``exited_at`` are the bounds of the current (latest) period. Runs and
    monitoring samples are accepted for a phase only when they end inside
    one of its periods.
    """

    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="periods")
    ordinal = models.PositiveSmallIntegerField(help_text="1 for the first entry, 2 for the first re-entry, ...")
    entered_at = models.DateTimeField()
    exited_at = models.DateTimeField(null=True, blank=True)
    ended = models.CharField(max_length=20, choices=PeriodEnd.choices, blank=True, help_text="Empty while open.")

    history = HistoricalRecords()

    class Meta:
        ordering = ["phase_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["phase", "ordinal"], name="period_unique_ordinal"),
            models.UniqueConstraint(
                fields=["phase"], condition=Q(exited_at__isnull=True), name="period_one_open_per_phase"
            ),
            models.CheckConstraint(
                condition=Q(exited_at__isnull=True) | Q(exited_at__gte=F("entered_at")), name="period_exit_after_entry"
            ),
            models.CheckConstraint(
                condition=Q(exited_at__isnull=True, ended="") | (Q(exited_at__isnull=False) & ~Q(ended="")),
                name="period_ended_matches_exit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.phase} period {self.ordinal}"

    def contains(self, moment) -> bool:
        return self.entered_at <= moment and (self.exited_at is None or moment <= self.exited_at)

    @property
    def is_open(self) -> bool:
        return self.exited_at is None


class Severity(models.TextChoices):
    SEV1 = "sev1", "SEV1 (critical)"
    SEV2 = "sev2", "SEV2 (major)"
    SEV3 = "sev3", "SEV3 (minor)"
    SEV4 = "sev4", "SEV4 (low)"


class EscalationContact(models.Model):
    """One row of a rollout's escalation matrix: for a severity, who is contacted, as what, how."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="escalation_contacts")
    severity = models.CharField(max_length=10, choices=Severity.choices)
    contact = models.CharField(max_length=200, help_text="Person or rotation, e.g. 'SRE on-call'.")
    role = models.CharField(max_length=100, help_text="The role they act in, e.g. 'incident commander'.")
    channel = models.CharField(max_length=200, help_text="How: pager, phone, Slack channel, email.")
    order = models.PositiveSmallIntegerField(default=0)

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "severity", "order", "id"]

    def __str__(self) -> str:
        return f"{self.get_severity_display()}: {self.contact} ({self.role})"


class CohortKind(models.TextChoices):
    INTERNAL = "internal", "Internal"
    BETA = "beta", "Beta"
    GENERAL = "general", "General"


# The phase in which each default cohort first gets the multi-agent flags.
COHORT_ENTRY_PHASE: dict[str, str] = {
    CohortKind.INTERNAL: PhaseKind.CANARY,
    CohortKind.BETA: PhaseKind.LIMITED_BETA,
    CohortKind.GENERAL: PhaseKind.GENERAL_AVAILABILITY,
}


class Tenant(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=80, unique=True)
    tier = models.CharField(
        max_length=10,
        choices=CohortKind.choices,
        default=CohortKind.GENERAL,
        help_text="Which default cohort a new rollout puts the tenant in.",
    )
    transcript_ingestion_confirmed = models.BooleanField(
        default=False, help_text="Confirmed transcript ingestion path: voice insights may be exposed."
    )
    account_manager = models.CharField(max_length=200, blank=True)
    account_manager_email = models.EmailField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(tier=CohortKind.BETA) | ~Q(account_manager=""),
                name="tenant_beta_has_account_manager",
                violation_error_message="A beta tenant needs a dedicated account manager.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Cohort(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="cohorts")
    kind = models.CharField(max_length=10, choices=CohortKind.choices)
    name = models.CharField(max_length=100)
    entry_phase = models.CharField(
        max_length=30,
        choices=PhaseKind.choices,
        help_text="The phase in which this cohort first gets the multi-agent flags.",
    )

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "kind"], name="cohort_unique_kind_per_rollout"),
        ]

    def __str__(self) -> str:
        return self.name


class CohortMembership(models.Model):
    # ``rollout`` is stored beside ``cohort`` so the database can hold each tenant
    # to one cohort per rollout.
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="memberships")
    cohort = models.ForeignKey(Cohort, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")

    history = HistoricalRecords()

    class Meta:
        ordering = ["cohort_id", "tenant__name"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "tenant"], name="membership_one_cohort_per_rollout"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant} in {self.cohort}"


class FlagKey(models.TextChoices):
    REACT_LOOP = "react_loop", "ReAct loop"
    MULTI_AGENT_RUNNER = "multi_agent_runner", "Multi-agent runner"
    CRITIC_REVISION = "critic_revision", "Critic revision"
    VOICE_INSIGHTS = "voice_insights", "Voice insights"
    AGENT_V1_FALLBACK = "agent_v1_fallback", "Legacy pipeline fallback (kill switch)"


# The flags that switch a tenant onto the new stack; a rollback turns these off.
MULTI_AGENT_FLAGS: tuple[str, ...] = (
    FlagKey.REACT_LOOP,
    FlagKey.MULTI_AGENT_RUNNER,
    FlagKey.CRITIC_REVISION,
    FlagKey.VOICE_INSIGHTS,
)


class FeatureFlag(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="flags")
    key = models.CharField(max_length=40, choices=FlagKey.choices)
    description = models.TextField(blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "id"]
        constraints = [models.UniqueConstraint(fields=["rollout", "key"], name="flag_unique_key_per_rollout")]

    def __str__(self) -> str:
        return self.key

    @property
    def is_kill_switch(self) -> bool:
        return self.key == FlagKey.AGENT_V1_FALLBACK


class FlagExposure(models.Model):
    """The desired state of one flag for one tenant: what the configuration service applies.

    A missing row means off.
    """

    flag = models.ForeignKey(FeatureFlag, on_delete=models.CASCADE, related_name="exposures")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="flag_exposures")
    enabled = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["flag_id", "tenant_id"]
        constraints = [models.UniqueConstraint(fields=["flag", "tenant"], name="exposure_unique_flag_tenant")]

    def __str__(self) -> str:
        return f"{self.flag.key} for {self.tenant}: {'on' if self.enabled else 'off'}"


class ChecklistKind(models.TextChoices):
    READINESS = "readiness", "Readiness"
    EXIT = "exit", "Exit criteria"


class ChecklistItem(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="checklist_items")
    kind = models.CharField(max_length=10, choices=ChecklistKind.choices)
    key = models.SlugField(max_length=80)
    title = models.CharField(max_length=300)
    order = models.PositiveSmallIntegerField()
    evidence_url = models.URLField("evidence URL", max_length=500, blank=True)
    completed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    completed_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "kind", "order"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "kind", "key"], name="checklist_unique_key"),
            models.CheckConstraint(
                condition=Q(completed_at__isnull=False) | Q(completed_by__isnull=True),
                name="checklist_completed_by_needs_time",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_done(self) -> bool:
        return self.completed_at is not None


class CommunicationKind(models.TextChoices):
    PRELAUNCH = "prelaunch", "Pre-launch announcement"
    STATUS_UPDATE = "status_update", "Status update"
    RELEASE_NOTES = "release_notes", "Release notes"
    RETROSPECTIVE = "retrospective", "Retrospective"


class Communication(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="communications")
    kind = models.CharField(max_length=20, choices=CommunicationKind.choices)
    title = models.CharField(max_length=300)
    body = models.TextField(help_text="Markdown.")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True, help_text="Empty while a draft.")

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["rollout", "kind", "-published_at"], name="comm_rollout_kind_pub")]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("rollout:communication", args=[self.rollout.slug, self.pk])

    @property
    def is_draft(self) -> bool:
        return self.published_at is None


class FeedbackSeverity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class PhaseFeedback(models.Model):
    """Support testers' qualitative feedback during a phase (the canary feedback log)."""

    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="feedback")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    severity = models.CharField(max_length=10, choices=FeedbackSeverity.choices)
    text = models.TextField()
    link = models.URLField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_severity_display()} feedback on {self.phase}"


class IncidentKind(models.TextChoices):
    AUTOMATIC = "automatic", "Automatic rollback"
    MANUAL = "manual", "Manual rollback"


class IncidentStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class Incident(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="incidents")
    phase = models.ForeignKey(Phase, on_delete=models.PROTECT, related_name="incidents", null=True, blank=True)
    kind = models.CharField(max_length=10, choices=IncidentKind.choices)
    trigger = models.CharField(
        max_length=20, blank=True, help_text="The rollback trigger that fired (automatic incidents)."
    )
    title = models.CharField(max_length=300)
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    opened_at = models.DateTimeField()
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    retrospective = models.ForeignKey(
        Communication, on_delete=models.PROTECT, null=True, blank=True, related_name="incidents"
    )

    history = HistoricalRecords()

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status=IncidentStatus.OPEN, closed_at__isnull=True)
                | Q(status=IncidentStatus.CLOSED, closed_at__isnull=False),
                name="incident_closed_at_matches_status",
            ),
        ]
        indexes = [models.Index(fields=["rollout", "status"], name="incident_rollout_status")]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("rollout:incident", args=[self.rollout.slug, self.pk])


class IncidentEvent(models.Model):
    """One line of an incident's timeline (evidence, steps, notifications, notes)."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=30)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["incident_id", "at", "id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.kind}"


class IncidentStepKey(models.TextChoices):
    DISABLE_FLAGS = "disable_flags", "Disable multi-agent feature flags in planner configuration"
    DRAIN_WORKERS = "drain_workers", "Drain orchestration workers and flush in-flight tasks"
    NOTIFY = "notify_stakeholders", "Notify stakeholders and capture the incident timeline"


class IncidentStep(models.Model):
    """The manual-rollback steps of playbook section 4, each ticked with who and when."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=30, choices=IncidentStepKey.choices)
    order = models.PositiveSmallIntegerField()
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    done_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["incident_id", "order"]
        constraints = [models.UniqueConstraint(fields=["incident", "key"], name="incident_step_unique")]

    def __str__(self) -> str:
        return self.get_key_display()


class CloudEventsMode(models.TextChoices):
    BINARY = "binary", "Binary (ce-* headers, the Slack-compatible body unchanged)"
    STRUCTURED = "structured", "Structured (application/cloudevents+json, the body as its data)"


class WebhookEndpoint(models.Model):
    """An outgoing webhook of a rollout (its triage channel): told about every rollback.

    The signing secret is stored encrypted (``rollout.notifications.encrypt_secret``)
    and kept out of the history; it is shown once, when set.
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="webhook_endpoints")
    name = models.CharField(max_length=100)
    url = models.URLField("URL", max_length=500, help_text="http(s) URL receiving a Slack-compatible JSON body.")
    secret_encrypted = models.TextField(help_text="The HMAC-SHA256 signing secret, encrypted at rest.")
    active = models.BooleanField(default=True)
    cloudevents_mode = models.CharField(
        max_length=10,
        choices=CloudEventsMode.choices,
        default=CloudEventsMode.BINARY,
        help_text="How the CloudEvents attributes travel (rollout/cloudevents.py).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(excluded_fields=["secret_encrypted"])

    class Meta:
        ordering = ["rollout_id", "name"]
        constraints = [models.UniqueConstraint(fields=["rollout", "name"], name="webhook_unique_name_per_rollout")]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One notification to one endpoint; its attempts are recorded one by one.

    The body is fixed when the delivery is created, so every retry sends the same
    bytes and receivers can de-duplicate on the ``X-Rollout-Delivery`` header.
    """

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # None for events that are not about an incident (a phase transition applied).
    incident = models.ForeignKey(
        Incident, on_delete=models.CASCADE, related_name="webhook_deliveries", null=True, blank=True
    )
    delivery_id = models.UUIDField("delivery ID", unique=True)
    event = models.CharField(max_length=40)
    # What the event is about, the CloudEvent's ``subject``: ``incidents/<id>``, ``phases/<kind>``.
    subject = models.CharField(max_length=100, blank=True)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "incident", "event"], name="delivery_once_per_event"),
            models.UniqueConstraint(
                fields=["endpoint", "event", "subject"], condition=~Q(subject=""), name="delivery_once_per_subject"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.endpoint.name}: {self.status}"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField("duration (ms)")
    succeeded = models.BooleanField()

    class Meta:
        ordering = ["delivery_id", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="attempt_unique_number")]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error[:40]}"


class OutboxMessage(models.Model):
    """A Celery task to send, written in the transaction of the change that calls for it (rollout/outbox.py).

    The row commits or rolls back with the change, so a task scheduled by a
    committed write is never lost when the broker is down at commit time: the
    relay sends it later. Sent rows are deleted.
    """

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    # The Celery task id to publish under, when the caller records it (a job run's task_id).
    task_id = models.CharField("task ID", max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Not sent before this (a webhook retry's backoff).
    not_before = models.DateTimeField()
    # A relay that claimed the row sends it before this; past it, another relay may.
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["not_before", "id"], name="outbox_due_idx")]

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)!r}"


class UserPreference(models.Model):
    """A person's display settings: the time zone pages show times in (empty: their browser's)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    time_zone = models.CharField(
        max_length=64, blank=True, help_text="An IANA zone such as Europe/Berlin; empty: the browser's zone."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user} · {self.time_zone or 'browser zone'}"
