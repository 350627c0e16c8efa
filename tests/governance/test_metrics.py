"""``GET /metrics`` (issue 12 part 5): the exposition parsed with prometheus_client's own parsers, exact values."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from evaluations.services import ingest_runs, ingest_samples
from governance import jobs
from governance.metrics import BASE_QUERIES, QUERIES_PER_LIVE_ROLLOUT, metrics_snapshot
from governance.models import AuditEvent, Job, JobRun, JobStatus
from rollout import notifications, services
from rollout.models import PhaseKind, PhasePeriod, PhaseStatus
from rollout.roles import Role
from tests.factories import advance_to, complete_readiness

from .compliance_helpers import tamper_with_ledger

pytestmark = pytest.mark.django_db


def samples(text: str, parser=text_string_to_metric_families) -> dict[str, dict[tuple, float]]:
    """``{sample name: {sorted label items: value}}``."""
    out: dict[str, dict[tuple, float]] = {}
    for family in parser(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape(client, raw: str, **extra):
    return client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {raw}", **extra)


@pytest.fixture
def world(rollout, users, tenants):
    """The rollout in canary an hour ago with one clean then one breaching candidate run, two baseline runs and
    two breaching monitoring intervals; a second rollout rolled back in canary (one open incident, two webhook
    deliveries: one delivered, one pending); a draft; one ledger verification that passed."""
    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    advance_to(rollout, PhaseKind.CANARY, admin)
    start = timezone.now() - dt.timedelta(hours=1)
    # Test data: the canary began an hour ago (the phase and its period).
    rollout.phases.filter(kind=PhaseKind.CANARY).update(entered_at=start)
    PhasePeriod.objects.filter(phase__rollout=rollout, phase__kind=PhaseKind.CANARY).update(entered_at=start)

    def run(i: int, arm: str, compensations: int) -> dict:
        finished = start + dt.timedelta(minutes=10 + i)
        return {
            "run_id": f"m-{i}",
            "rollout": rollout.slug,
            "phase": "canary",
            "arm": arm,
            "started_at": (finished - dt.timedelta(minutes=5)).isoformat(),
            "finished_at": finished.isoformat(),
            "conversations": 100,
            "guardrail_compensations": compensations,
            "metrics": {"task_success_rate": 0.9},
            "harness_version": "h-1",
        }

    ingest_runs(
        payload={"runs": [run(1, "candidate", 2), run(2, "candidate", 9), run(3, "baseline", 1), run(4, "baseline", 1)]}
    )

    def sample(i: int, latency: float) -> dict:
        begin = start + dt.timedelta(minutes=5 * i)
        return {
            "rollout": rollout.slug,
            "phase": "canary",
            "interval_start": begin.isoformat(),
            "interval_end": (begin + dt.timedelta(minutes=5)).isoformat(),
            "latency_p95_ms": latency,
            "requests": 100,
        }

    ingest_samples(payload={"samples": [sample(1, 100.0), sample(2, 99999.0), sample(3, 99999.0)]})

    other = services.rollout_create_from_playbook(name="Second wave", owner=admin)
    complete_readiness(other, admin)
    advance_to(other, PhaseKind.CANARY, admin)
    incident = services.rollout_rollback(rollout=other, actor=admin, reason="Refund regression.")
    for name in ("triage", "pager"):
        notifications.webhook_endpoint_create(rollout=other, name=name, url=f"http://127.0.0.1:9/{name}", actor=None)
    first, _second = notifications.create_deliveries(incident_id=incident.pk)
    notifications._record_attempt(first, status_code=200, error="", duration_ms=5, ok=True)
    draft = services.rollout_create_from_playbook(name="Third wave", owner=admin)
    verify = jobs.run_job(Job.VERIFY_AUDIT_LOG)
    return {"rollout": rollout, "other": other, "draft": draft, "verify": verify}


def test_the_exposition_has_exact_values(client, token, world):
    response = scrape(client, token("metrics"))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(response.content.decode())
    main, other, draft = world["rollout"].slug, world["other"].slug, world["draft"].slug

    assert got["rgd_rollout_phase"] == {
        (("phase", "canary"), ("rollout", main), ("status", "in_progress")): 1.0,
        (("phase", "canary"), ("rollout", other), ("status", "rolled_back")): 1.0,
        (("phase", "preparation"), ("rollout", draft), ("status", "draft")): 1.0,
    }
    assert got["rgd_rollout_phase_index"] == {(("rollout", r),): v for r, v in [(main, 1), (other, 1), (draft, 0)]}
    # The rollback put the second rollout's two internal tenants on the fallback.
    assert got["rgd_rollout_fallback_tenants"] == {(("rollout", r),): v for r, v in [(main, 0), (other, 2), (draft, 0)]}
    assert got["rgd_rollout_fallback_active"] == {(("rollout", r),): v for r, v in [(main, 0), (other, 1), (draft, 0)]}
    assert got["rgd_rollout_open_incidents"] == {(("rollout", r),): v for r, v in [(main, 0), (other, 1), (draft, 0)]}
    # Streaks only for rollouts in progress: one breaching run of 2, two breaching intervals of 3.
    assert got["rgd_trigger_streak"] == {
        (("rollout", main), ("trigger", "guardrail")): 1.0,
        (("rollout", main), ("trigger", "latency")): 2.0,
    }
    assert got["rgd_trigger_streak_threshold"] == {
        (("rollout", main), ("trigger", "guardrail")): 2.0,
        (("rollout", main), ("trigger", "latency")): 3.0,
    }
    assert got["rgd_guardrail_compensation_threshold_ratio"][(("rollout", main),)] == 0.05
    assert got["rgd_latency_sla_milliseconds"][(("rollout", main),)] == world["rollout"].latency_sla_ms
    assert got["rgd_ga_streak"] == {(("rollout", main),): 0.0}
    assert got["rgd_ga_streak_required"] == {(("rollout", main),): 5.0}
    assert got["rgd_runs_ingested_total"] == {
        (("arm", arm), ("rollout", r)): v
        for r, arm, v in [
            (main, "baseline", 2),
            (main, "candidate", 2),
            (other, "baseline", 0),
            (other, "candidate", 0),
            (draft, "baseline", 0),
            (draft, "candidate", 0),
        ]
    }
    assert got["rgd_webhook_deliveries"] == {
        (("outcome", "delivered"),): 1.0,
        (("outcome", "failed"),): 0.0,
        (("outcome", "pending"),): 1.0,
    }
    assert got["rgd_job_runs"][(("job", "verify_audit_log"), ("outcome", "succeeded"))] == 1.0
    assert got["rgd_job_runs"][(("job", "enforce_retention"), ("outcome", "failed"))] == 0.0
    assert len(got["rgd_job_runs"]) == len(Job.values) * len(JobStatus.values)
    verify = world["verify"]
    assert got["rgd_job_last_success_timestamp_seconds"] == {
        (("job", "verify_audit_log"),): verify.finished_at.timestamp()
    }
    # The ledger's length is its last sequence number: the chain has no gaps, so it equals the count.
    assert got["rgd_audit_ledger_entries"] == {(): float(AuditEvent.objects.count())}
    assert got["rgd_audit_ledger_verification_ok"] == {(): 1.0}
    assert got["rgd_audit_ledger_verified_entries"] == {(): float(verify.result["entries"])}
    assert got["rgd_audit_ledger_verification_timestamp_seconds"] == {(): verify.finished_at.timestamp()}


def test_a_broken_chain_and_a_rollback_show(client, token, world, users):
    raw = token("metrics")
    tamper_with_ledger(3)
    jobs.run_job(Job.VERIFY_AUDIT_LOG)
    services.rollout_rollback(rollout=world["rollout"], actor=users[Role.ROLLOUT_ADMIN], reason="Latency.")
    got = samples(scrape(client, raw).content.decode())
    assert got["rgd_audit_ledger_verification_ok"] == {(): 0.0}
    assert got["rgd_job_runs"][(("job", "verify_audit_log"), ("outcome", "succeeded"))] == 2.0
    main = world["rollout"].slug
    assert got["rgd_rollout_phase"][(("phase", "canary"), ("rollout", main), ("status", "rolled_back"))] == 1.0
    assert got["rgd_rollout_open_incidents"][(("rollout", main),)] == 1.0
    assert got["rgd_rollout_fallback_tenants"][(("rollout", main),)] == 2.0
    assert "rgd_trigger_streak" not in got  # no rollout in progress any more


def test_openmetrics_on_request(client, token, world):
    response = scrape(client, token("metrics"), HTTP_ACCEPT="application/openmetrics-text;version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    got = samples(response.content.decode(), parse_openmetrics)
    assert got["rgd_webhook_deliveries"][(("outcome", "pending"),)] == 1.0
    assert response.content.decode().endswith("# EOF\n")


def test_only_a_metrics_token_scrapes(client, token, world):
    assert client.get("/metrics").status_code == 401
    assert scrape(client, token("read")).status_code == 403
    assert scrape(client, token("flags")).status_code == 403
    assert scrape(client, "rgd_unknown").status_code == 401


@pytest.mark.parametrize("size", [1, 30])
def test_the_snapshot_reads_a_fixed_number_of_queries(world, users, size):
    """The same queries at two data sizes: more runs, deliveries, job runs and ledger entries change nothing."""
    admin = users[Role.ROLLOUT_ADMIN]
    for i in range(size):
        jobs.run_job(Job.CHECK_SCHEDULED_REVIEWS)
        services.communication_create(
            rollout=world["rollout"], kind="status_update", title=f"Update {i}", body="x", actor=admin
        )
    start = timezone.now() - dt.timedelta(minutes=40)
    ingest_runs(
        payload={
            "runs": [
                {
                    "run_id": f"size-{size}-{i}",
                    "rollout": world["rollout"].slug,
                    "phase": "canary",
                    "arm": "baseline",
                    "started_at": start.isoformat(),
                    "finished_at": (start + dt.timedelta(seconds=i + 1)).isoformat(),
                    "conversations": 10,
                    "guardrail_compensations": 0,
                    "metrics": {},
                    "harness_version": "h-1",
                }
                for i in range(size * 10)
            ]
        }
    )
    assert world["rollout"].phases.filter(status=PhaseStatus.ACTIVE).count() == 1
    with CaptureQueriesContext(connection) as queries:
        snapshot = metrics_snapshot()
    assert len(queries) == BASE_QUERIES + QUERIES_PER_LIVE_ROLLOUT * 1
    assert not [q["sql"] for q in queries if "COUNT(*)" in q["sql"].upper() and "auditevent" in q["sql"].lower()]
    [main] = [r for r in snapshot.rollouts if r.slug == world["rollout"].slug]
    assert main.runs == {"baseline": 2 + size * 10, "candidate": 2}
    assert snapshot.job_runs[(Job.CHECK_SCHEDULED_REVIEWS, JobStatus.SUCCEEDED)] == size
    assert JobRun.objects.count() == size + 1
