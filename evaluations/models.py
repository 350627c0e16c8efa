"""Evaluation harness runs, their raw outputs, monitoring samples, and success criteria (design section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from rollout.models import Cohort, Phase, Rollout


class Direction(models.TextChoices):
    HIGHER = "higher", "Higher is better"
    LOWER = "lower", "Lower is better"


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    unit: str
    direction: str


# The metric catalogue: the only keys a run's ``metrics`` may carry. Each is a
# nullable column of ``EvaluationRun`` so deltas aggregate in SQL without a join.
METRICS: dict[str, MetricSpec] = {
    spec.key: spec
    for spec in (
        MetricSpec("task_success_rate", "Task success rate", "ratio", Direction.HIGHER),
        MetricSpec("guardrail_compensation_rate", "Guardrail compensation rate", "ratio", Direction.LOWER),
        MetricSpec("latency_p95_ms", "Latency p95", "ms", Direction.LOWER),
        MetricSpec("cost_per_conversation_usd", "Cost per conversation", "USD", Direction.LOWER),
        MetricSpec("tool_call_accuracy", "Tool-call accuracy", "ratio", Direction.HIGHER),
        MetricSpec("critic_revision_rate", "Critic revision rate", "ratio", Direction.LOWER),
    )
}
METRIC_KEYS: tuple[str, ...] = tuple(METRICS)
MetricKey = models.TextChoices("MetricKey", [(k, k) for k in METRIC_KEYS])


class Comparator(models.TextChoices):
    GTE = "gte", "≥"
    LTE = "lte", "≤"


class SuccessCriterion(models.Model):
    """Per rollout: a metric's candidate value must meet ``comparator threshold``."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="success_criteria")
    metric = models.CharField(max_length=40, choices=MetricKey.choices)
    comparator = models.CharField(max_length=3, choices=Comparator.choices)
    threshold = models.FloatField()

    history = HistoricalRecords()

    class Meta:
        ordering = ["rollout_id", "id"]
        constraints = [models.UniqueConstraint(fields=["rollout", "metric"], name="criterion_unique_metric")]

    def __str__(self) -> str:
        return f"{self.metric} {self.get_comparator_display()} {self.threshold:g}"

    def is_met_by(self, value: float | None) -> bool:
        if value is None:
            return False
        return value >= self.threshold if self.comparator == Comparator.GTE else value <= self.threshold


# Playbook defaults laid down with each new rollout (editable per rollout).
DEFAULT_SUCCESS_CRITERIA: tuple[tuple[str, str, float], ...] = (
    ("task_success_rate", Comparator.GTE, 0.85),
    ("guardrail_compensation_rate", Comparator.LTE, 0.05),
    ("latency_p95_ms", Comparator.LTE, 2000.0),
    ("cost_per_conversation_usd", Comparator.LTE, 0.08),
    ("tool_call_accuracy", Comparator.GTE, 0.90),
    ("critic_revision_rate", Comparator.LTE, 0.30),
)


class Arm(models.TextChoices):
    BASELINE = "baseline", "Baseline (legacy single-agent)"
    CANDIDATE = "candidate", "Candidate (ReAct + multi-agent)"


class EvaluationRun(models.Model):
    """One execution of the harness on one arm in one phase: the playbook's "evaluation cycle"."""

    run_id = models.CharField(max_length=200, unique=True)
    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="evaluation_runs")
    phase = models.ForeignKey(Phase, on_delete=models.PROTECT, related_name="evaluation_runs")
    arm = models.CharField(max_length=10, choices=Arm.choices)
    cohort = models.ForeignKey(Cohort, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    conversations = models.PositiveIntegerField()
    guardrail_compensations = models.PositiveIntegerField()
    harness_version = models.CharField(max_length=100)
    # The catalogue's metrics; None when the run did not report one.
    task_success_rate = models.FloatField(null=True, blank=True)
    guardrail_compensation_rate = models.FloatField(null=True, blank=True)
    latency_p95_ms = models.FloatField(null=True, blank=True)
    cost_per_conversation_usd = models.FloatField(null=True, blank=True)
    tool_call_accuracy = models.FloatField(null=True, blank=True)
    critic_revision_rate = models.FloatField(null=True, blank=True)
    # SHA-256 of the canonical payload: a resent run_id with other content is a conflict.
    content_hash = models.CharField(max_length=64)
    output_count = models.PositiveIntegerField(default=0)
    outputs_purged_at = models.DateTimeField(null=True, blank=True)
    ingested_at = models.DateTimeField(auto_now_add=True)
    # Arrived after the activity period it finished in had ended: kept and shown, never counted by a live
    # trigger, the soak or the GA streak (they read the current period only).
    late = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["-finished_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(conversations__gte=1), name="run_conversations_positive"),
            models.CheckConstraint(
                condition=Q(guardrail_compensations__lte=F("conversations")), name="run_compensations_le_conversations"
            ),
            models.CheckConstraint(condition=Q(finished_at__gte=F("started_at")), name="run_finished_after_started"),
        ]
        indexes = [
            models.Index(fields=["rollout", "phase", "arm", "finished_at"], name="run_phase_arm_finished"),
            models.Index(fields=["finished_at"], name="run_finished"),
            # The runs list: a rollout's runs, newest first.
            models.Index(fields=["rollout", "finished_at", "id"], name="run_rollout_finished"),
            # Its other sorts (rollout.tables): by run id, by conversations.
            models.Index(fields=["rollout", "run_id"], name="run_rollout_run_id"),
            models.Index(fields=["rollout", "conversations", "id"], name="run_rollout_conversations"),
        ]

    def __str__(self) -> str:
        return self.run_id

    @property
    def compensation_ratio(self) -> float:
        return self.guardrail_compensations / self.conversations

    def metric(self, key: str) -> float | None:
        return getattr(self, key)


class RunOutput(models.Model):
    """A raw per-conversation output of a run; purged ``RETENTION_DAYS`` (90) days after the run finished.

    Only the retention job (``governance.retention``) deletes them; on PostgreSQL a trigger refuses any other DELETE.
    """

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="outputs")
    conversation_id = models.CharField(max_length=200)
    data = models.JSONField()
    # Copied from the run so retention can select by age with one index, without a join.
    run_finished_at = models.DateTimeField()

    class Meta:
        ordering = ["run_id", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "conversation_id"], name="output_unique_conversation")]
        indexes = [models.Index(fields=["run_finished_at", "id"], name="output_finished_id")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.conversation_id}"


class MonitoringSample(models.Model):
    """One monitoring interval's p95 latency for a rollout's phase."""

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="monitoring_samples")
    phase = models.ForeignKey(Phase, on_delete=models.PROTECT, related_name="monitoring_samples")
    interval_start = models.DateTimeField()
    interval_end = models.DateTimeField()
    latency_p95_ms = models.FloatField()
    requests = models.PositiveIntegerField()
    ingested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["phase_id", "interval_start"]
        constraints = [
            models.UniqueConstraint(fields=["phase", "interval_start"], name="sample_unique_interval"),
            models.CheckConstraint(condition=Q(interval_end__gt=F("interval_start")), name="sample_end_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.phase} {self.interval_start:%Y-%m-%d %H:%M}"


class TriggerKind(models.TextChoices):
    GUARDRAIL = "guardrail", "Guardrail compensations"
    LATENCY = "latency", "SLA latency"


class TriggerFiring(models.Model):
    """One firing of a rollback trigger, keyed to the run or interval at which its streak reached the threshold.

    The unique constraints make a streak fire once, whoever evaluates it (the
    task after an ingest, the periodic sweep, or both at once).
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="trigger_firings")
    phase = models.ForeignKey(Phase, on_delete=models.PROTECT, related_name="trigger_firings")
    trigger = models.CharField(max_length=20, choices=TriggerKind.choices)
    run = models.ForeignKey(EvaluationRun, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    sample = models.ForeignKey(MonitoringSample, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    streak = models.PositiveSmallIntegerField(help_text="How many consecutive breaches made it fire.")
    evidence = models.JSONField(help_text="The runs or intervals of the streak.")
    incident = models.ForeignKey(
        "rollout.Incident", on_delete=models.PROTECT, null=True, blank=True, related_name="trigger_firings"
    )
    fired_at = models.DateTimeField()

    history = HistoricalRecords()

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["run"], condition=Q(run__isnull=False), name="firing_once_per_run"),
            models.UniqueConstraint(
                fields=["sample"], condition=Q(sample__isnull=False), name="firing_once_per_sample"
            ),
            models.CheckConstraint(
                condition=Q(trigger="guardrail", run__isnull=False, sample__isnull=True)
                | Q(trigger="latency", run__isnull=True, sample__isnull=False),
                name="firing_item_matches_trigger",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_trigger_display()} trigger fired {self.fired_at:%Y-%m-%d %H:%M}"


class ApiScope(models.TextChoices):
    INGEST = "ingest", "Ingest runs and monitoring samples"
    READ = "read", "Read rollouts, gates, flags and deltas"
    FLAGS = "flags", "Evaluate flags through OpenFeature (OFREP)"
    METRICS = "metrics", "Scrape Prometheus metrics"


class ApiToken(models.Model):
    """A bearer token of the API. Only a SHA-256 digest is stored; the token is shown once, at creation.

    Tokens are 256-bit random strings, so a fast unsalted digest is as safe to
    store as a password hash would be, and it can be looked up by an index.
    """

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=12, help_text="The token's first characters, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list, help_text="Any of: ingest, read.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    # The digest and the last-use stamp stay out of the history (and so out of the ledger).
    history = HistoricalRecords(excluded_fields=["token_hash", "last_used_at"])

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"
        constraints = [
            models.CheckConstraint(
                condition=Q(revoked_at__isnull=True) | Q(revoked_at__gte=F("created_at")),
                name="token_revoked_after_created",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class RunDaySummary(models.Model):
    """Per rollout, phase, arm and UTC day of ``finished_at``: how many runs, and per metric how many reported it,
    their sum and their sum of squares. Ingestion adds to it in the transaction that stores the runs, so the deltas
    page and the trend charts read a few hundred rows whatever the number of runs (``evaluations.summaries``)."""

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="+")
    phase = models.ForeignKey(Phase, on_delete=models.PROTECT, related_name="+")
    arm = models.CharField(max_length=10, choices=Arm.choices)
    day = models.DateField()
    runs = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["rollout_id", "day", "phase_id", "arm"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "phase", "arm", "day"], name="run_day_summary_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.phase_id}/{self.arm}/{self.day}"


SUMMARY_PARTS = ("n", "sum", "sumsq")
for _key in METRIC_KEYS:
    RunDaySummary.add_to_class(f"{_key}_n", models.PositiveIntegerField(default=0))
    RunDaySummary.add_to_class(f"{_key}_sum", models.FloatField(default=0.0))
    RunDaySummary.add_to_class(f"{_key}_sumsq", models.FloatField(default=0.0))
