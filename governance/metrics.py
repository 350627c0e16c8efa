"""Prometheus metrics for the SRE leads: ``GET /metrics`` (a bearer token with the ``metrics`` scope).

``metrics_snapshot`` is the selector: everything the exposition shows, read in a fixed number of queries
whatever the data size (``BASE_QUERIES`` plus ``QUERIES_PER_LIVE_ROLLOUT`` for each rollout in progress, whose
trigger and GA streaks are computed by the same selectors as the rollout page). Nothing counts rows of a big
table: the ledger's length is its last sequence number, runs per arm come from the per-day run summaries,
webhook deliveries and job runs are small tables grouped once. ``DashboardCollector`` turns a snapshot into
metric families; the view encodes them in the format the scraper asks for (``Accept``: the Prometheus text
format 0.0.4 by default, 1.0.0 or OpenMetrics on request).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db.models import Count, Max, OuterRef, Subquery, Sum
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

from evaluations.api import ApiView
from evaluations.models import ApiScope, Arm, RunDaySummary, TriggerKind
from evaluations.selectors import ga_gate, trigger_statuses
from rollout.models import (
    PHASE_SEQUENCE,
    DeliveryStatus,
    FlagExposure,
    FlagKey,
    Incident,
    IncidentStatus,
    Phase,
    PhaseStatus,
    Rollout,
    RolloutStatus,
    WebhookDelivery,
)

from .models import AuditEvent, Job, JobRun, JobStatus

# Rollouts, open incidents, fallback exposures, runs per arm, deliveries, job runs, ledger end, last verification.
BASE_QUERIES = 8
# Active phase (1), trigger_statuses (5), ga_gate (2).
QUERIES_PER_LIVE_ROLLOUT = 8


@dataclass
class RolloutMetrics:
    slug: str
    status: str
    phase: str  # the active phase; without one, the last phase that started (rolled back or completed); "" none
    phase_index: int  # 0 preparation .. 3 general availability, 4 completed, -1 none
    open_incidents: int = 0
    fallback_tenants: int = 0
    guardrail_threshold: float = 0.0
    latency_sla_ms: int = 0
    triggers: dict[str, tuple[int, int]] = field(default_factory=dict)  # trigger -> (streak, fires at)
    ga: tuple[int, int] | None = None  # (streak, required)
    runs: dict[str, int] = field(default_factory=dict)  # arm -> runs ingested


@dataclass
class MetricsSnapshot:
    rollouts: list[RolloutMetrics]
    deliveries: dict[str, int]
    job_runs: dict[tuple[str, str], int]
    job_last_success: dict[str, dt.datetime]
    ledger_last_sequence: int
    verification: dict | None  # the latest finished verification: ok, entries, finished_at


def metrics_snapshot() -> MetricsSnapshot:
    started = Phase.objects.filter(rollout=OuterRef("pk")).exclude(status=PhaseStatus.PENDING)
    rows = list(
        Rollout.objects.annotate(
            active_kind=Subquery(started.filter(status=PhaseStatus.ACTIVE).values("kind")[:1]),
            last_kind=Subquery(started.order_by("-order").values("kind")[:1]),
        ).order_by("slug")
    )
    incidents = dict(
        Incident.objects.filter(status=IncidentStatus.OPEN)
        .values("rollout_id")
        .annotate(n=Count("id"))
        .values_list("rollout_id", "n")
    )
    fallback = dict(
        FlagExposure.objects.filter(flag__key=FlagKey.AGENT_V1_FALLBACK, enabled=True)
        .values("flag__rollout_id")
        .annotate(n=Count("id"))
        .values_list("flag__rollout_id", "n")
    )
    runs: dict[int, dict[str, int]] = {}
    for rollout_id, arm, n in (
        RunDaySummary.objects.values("rollout_id", "arm").annotate(n=Sum("runs")).values_list("rollout_id", "arm", "n")
    ):
        runs.setdefault(rollout_id, {})[arm] = n or 0

    result = []
    for r in rows:
        kind = r.active_kind or r.last_kind or ""
        if r.status == RolloutStatus.COMPLETED:
            index = len(PHASE_SEQUENCE)
        else:
            index = PHASE_SEQUENCE.index(kind) if kind else -1
        m = RolloutMetrics(
            slug=r.slug,
            status=r.status,
            phase=kind,
            phase_index=index,
            open_incidents=incidents.get(r.pk, 0),
            fallback_tenants=fallback.get(r.pk, 0),
            guardrail_threshold=float(r.guardrail_compensation_threshold),
            latency_sla_ms=r.latency_sla_ms,
            runs={arm: runs.get(r.pk, {}).get(arm, 0) for arm in Arm.values},
        )
        if r.status == RolloutStatus.IN_PROGRESS:
            phase = Phase.objects.filter(rollout=r, status=PhaseStatus.ACTIVE).first()
            m.triggers = {t.trigger: (t.streak, t.required) for t in trigger_statuses(r, phase)}
            gate = ga_gate(r)
            m.ga = (gate.streak, gate.required)
        result.append(m)

    deliveries = {status: 0 for status in DeliveryStatus.values}
    deliveries.update(WebhookDelivery.objects.values("status").annotate(n=Count("id")).values_list("status", "n"))
    job_runs = {(job, status): 0 for job in Job.values for status in JobStatus.values}
    last_success: dict[str, dt.datetime] = {}
    for job, status, n, last in (
        JobRun.objects.values("job", "status")
        .annotate(n=Count("id"), last=Max("finished_at"))
        .values_list("job", "status", "n", "last")
    ):
        job_runs[(job, status)] = n
        if status == JobStatus.SUCCEEDED and last is not None:
            last_success[job] = last
    last_sequence = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    verification = (
        JobRun.objects.filter(job=Job.VERIFY_AUDIT_LOG, status=JobStatus.SUCCEEDED)
        .order_by("-id")
        .values("result", "finished_at")
        .first()
    )
    if verification is not None:
        verification = {
            "ok": bool((verification["result"] or {}).get("ok")),
            "entries": (verification["result"] or {}).get("entries") or 0,
            "finished_at": verification["finished_at"],
        }
    return MetricsSnapshot(
        rollouts=result,
        deliveries=deliveries,
        job_runs=job_runs,
        job_last_success=last_success,
        ledger_last_sequence=last_sequence,
        verification=verification,
    )


class DashboardCollector:
    """A prometheus_client collector over one snapshot (built per scrape: no state between scrapes)."""

    def __init__(self, snapshot: MetricsSnapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        phase = GaugeMetricFamily(
            "rgd_rollout_phase", "1 for the rollout's current phase and status", labels=["rollout", "phase", "status"]
        )
        index = GaugeMetricFamily(
            "rgd_rollout_phase_index",
            "Current phase: 0 preparation, 1 canary, 2 limited beta, 3 general availability, 4 completed, -1 none",
            labels=["rollout"],
        )
        fallback = GaugeMetricFamily(
            "rgd_rollout_fallback_tenants", "Tenants with agent_v1_fallback (the kill switch) on", labels=["rollout"]
        )
        fallback_on = GaugeMetricFamily(
            "rgd_rollout_fallback_active", "1 while any tenant of the rollout is on the fallback", labels=["rollout"]
        )
        incidents = GaugeMetricFamily("rgd_rollout_open_incidents", "Open incidents", labels=["rollout"])
        streak = GaugeMetricFamily(
            "rgd_trigger_streak",
            "Current breach streak of a rollback trigger in the active phase (rollouts in progress)",
            labels=["rollout", "trigger"],
        )
        threshold = GaugeMetricFamily(
            "rgd_trigger_streak_threshold", "Streak length at which the trigger fires", labels=["rollout", "trigger"]
        )
        guardrail = GaugeMetricFamily(
            "rgd_guardrail_compensation_threshold_ratio",
            "A candidate run breaches above this share of conversations compensated",
            labels=["rollout"],
        )
        sla = GaugeMetricFamily(
            "rgd_latency_sla_milliseconds", "A monitoring interval breaches above this p95 latency", labels=["rollout"]
        )
        ga = GaugeMetricFamily(
            "rgd_ga_streak",
            "Consecutive passing limited-beta candidate runs (rollouts in progress)",
            labels=["rollout"],
        )
        ga_required = GaugeMetricFamily("rgd_ga_streak_required", "Passing runs the GA gate needs", labels=["rollout"])
        runs = CounterMetricFamily("rgd_runs_ingested", "Evaluation runs ingested", labels=["rollout", "arm"])
        for r in s.rollouts:
            phase.add_metric([r.slug, r.phase or "none", r.status], 1)
            index.add_metric([r.slug], r.phase_index)
            fallback.add_metric([r.slug], r.fallback_tenants)
            fallback_on.add_metric([r.slug], 1 if r.fallback_tenants else 0)
            incidents.add_metric([r.slug], r.open_incidents)
            guardrail.add_metric([r.slug], r.guardrail_threshold)
            sla.add_metric([r.slug], r.latency_sla_ms)
            for trigger in TriggerKind.values:
                if trigger in r.triggers:
                    streak.add_metric([r.slug, trigger], r.triggers[trigger][0])
                    threshold.add_metric([r.slug, trigger], r.triggers[trigger][1])
            if r.ga is not None:
                ga.add_metric([r.slug], r.ga[0])
                ga_required.add_metric([r.slug], r.ga[1])
            for arm, n in r.runs.items():
                runs.add_metric([r.slug, arm], n)
        yield from (phase, index, fallback, fallback_on, incidents, streak, threshold, guardrail, sla, ga, ga_required)
        yield runs

        deliveries = GaugeMetricFamily(
            "rgd_webhook_deliveries", "Webhook deliveries by outcome (pending, delivered, failed)", labels=["outcome"]
        )
        for status, n in sorted(s.deliveries.items()):
            deliveries.add_metric([status], n)
        yield deliveries
        job_runs = GaugeMetricFamily("rgd_job_runs", "Compliance job runs by outcome", labels=["job", "outcome"])
        for (job, status), n in sorted(s.job_runs.items()):
            job_runs.add_metric([job, status], n)
        yield job_runs
        last = GaugeMetricFamily(
            "rgd_job_last_success_timestamp_seconds", "When the job last finished successfully", labels=["job"]
        )
        for job, at in sorted(s.job_last_success.items()):
            last.add_metric([job], at.timestamp())
        yield last

        yield GaugeMetricFamily(
            "rgd_audit_ledger_entries", "Entries in the audit ledger (its last sequence number)", s.ledger_last_sequence
        )
        if s.verification is not None:
            yield GaugeMetricFamily(
                "rgd_audit_ledger_verification_ok",
                "1 if the latest ledger verification found the chain intact, 0 if broken",
                1 if s.verification["ok"] else 0,
            )
            yield GaugeMetricFamily(
                "rgd_audit_ledger_verified_entries",
                "Entries the latest verification covered",
                s.verification["entries"],
            )
            yield GaugeMetricFamily(
                "rgd_audit_ledger_verification_timestamp_seconds",
                "When the latest ledger verification finished",
                s.verification["finished_at"].timestamp(),
            )


def exposition(accept: str = "") -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DashboardCollector(metrics_snapshot()))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


class AnyAccept(DefaultContentNegotiation):
    """The exposition picks its own format from ``Accept`` (``choose_encoder``); errors stay problem+json."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class MetricsView(ApiView):
    required_scope = ApiScope.METRICS
    content_negotiation_class = AnyAccept

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        body, content_type = exposition(request.headers.get("Accept", ""))
        return HttpResponse(body, content_type=content_type)
