"""``seed_demo``: the main rollout reaches canary through the real approval path; "My work" has content."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from governance import ledger
from governance.models import AuditEvent, PlanSignOff, TransitionRequest
from governance.selectors import my_work
from rollout.demo import MAIN_SLUG, SECOND_SLUG
from rollout.models import ChecklistKind, CommunicationKind, PhaseKind, PhaseStatus, Rollout

pytestmark = pytest.mark.django_db


def test_seed_demo_goes_through_sign_off_request_approval_and_apply_and_is_idempotent():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert out.getvalue().startswith("Demo data loaded:")
    main = Rollout.objects.get(slug=MAIN_SLUG)
    assert main.phases.get(kind=PhaseKind.CANARY).status == PhaseStatus.ACTIVE
    assert not main.checklist_items.filter(kind=ChecklistKind.READINESS, completed_at__isnull=True).exists()
    assert main.communications.filter(kind=CommunicationKind.STATUS_UPDATE).exists()
    assert main.phases.get(kind=PhaseKind.CANARY).feedback.count() == 2

    assert set(PlanSignOff.objects.filter(rollout=main).values_list("role", "decision")) == {
        ("product-lead", "approve"),
        ("support-lead", "approve"),
        ("compliance-lead", "approve"),
        ("sre-lead", "approve"),
    }
    canary, beta = TransitionRequest.objects.filter(rollout=main).order_by("pk")
    assert (canary.target, canary.status, canary.requester_name) == ("canary", "applied", "rollout-admin")
    assert set(canary.approvals.values_list("role", "approver_name")) == {
        ("product-lead", "product-lead"),
        ("sre-lead", "sre-lead"),
    }
    assert (beta.target, beta.status) == ("limited_beta", "open")
    second = Rollout.objects.get(slug=SECOND_SLUG)
    assert set(PlanSignOff.objects.filter(rollout=second).values_list("role", flat=True)) == {
        "product-lead",
        "sre-lead",
    }

    users = {u.username: u for u in get_user_model().objects.all()}
    assert [r.pk for r, _ in my_work(users["sre-lead"]).decisions] == [beta.pk]
    support = my_work(users["support-lead"])
    assert [r.pk for r, _ in support.decisions] == [beta.pk]
    assert [r.slug for r, _ in support.sign_offs] == [SECOND_SLUG]
    assert ledger.verify(ledger.database_records()).ok

    # The compliance pages have content: pending and confirmed changes, an overdue review, reports, a hold.
    from governance.models import DailyDeltaReport, JobRun, LegalHold, RecordChange, RetentionReceipt, ScheduledReview

    assert RecordChange.objects.filter(status="confirmed").count() == 3
    assert RecordChange.objects.filter(status="pending").exists()
    assert ScheduledReview.objects.filter(status="completed").count() == 1
    assert any(r.due_at <= timezone.now() for r in ScheduledReview.objects.filter(status="open"))
    assert DailyDeltaReport.objects.filter(rollout=main).count() == 6
    assert LegalHold.objects.get().rollout == second
    assert RetentionReceipt.objects.get().dry_run and JobRun.objects.filter(alert=True).count() == 0

    entries = AuditEvent.objects.count()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert out.getvalue().startswith("Demo data already present: nothing changed.")
    assert AuditEvent.objects.count() == entries


def test_seed_demo_leaves_a_big_ledger_to_the_nightly_verification(monkeypatch):
    """On a ledger already past the demo's size seed_demo must not scan it (make run starts as fast at 1M entries)."""
    from governance import demo
    from governance.models import Job, JobRun

    monkeypatch.setattr(demo, "DEMO_VERIFY_MAX_ENTRIES", 50)
    ledger.append_many({"action": "update", "object_type": "rollout.rollout"} for _ in range(60))
    call_command("seed_demo", stdout=io.StringIO())
    assert not JobRun.objects.filter(job=Job.VERIFY_AUDIT_LOG).exists()
    assert JobRun.objects.filter(job=Job.ENFORCE_RETENTION).count() == 1


def test_seed_demo_runs_lie_in_their_phase_periods_and_the_pending_beta_request_can_be_applied_once_approved():
    """Issue 9, seam 1: the demo's 16 canary runs were dated up to four days before the canary was entered."""
    from evaluations.models import EvaluationRun, MonitoringSample
    from governance import services
    from governance.selectors import gates_for
    from rollout.models import PhasePeriod
    from tests.governance.helpers import approve

    call_command("seed_demo", stdout=io.StringIO())
    main = Rollout.objects.get(slug=MAIN_SLUG)
    periods = {p.phase_id: p for p in PhasePeriod.objects.filter(phase__rollout=main)}
    runs = list(EvaluationRun.objects.filter(rollout=main))
    assert len(runs) == 32
    assert all(periods[r.phase_id].contains(r.finished_at) and not r.late for r in runs)
    assert all(periods[s.phase_id].contains(s.interval_end) for s in MonitoringSample.objects.filter(rollout=main))
    canary = main.phases.get(kind=PhaseKind.CANARY)
    first_canary_run = min(r.finished_at for r in runs if r.phase_id == canary.pk)
    assert canary.entered_at < first_canary_run
    assert timezone.now() - canary.entered_at > dt.timedelta(hours=main.canary_soak_hours)
    # The ledger's story reads in order: signed, requested, approved, applied, then canary entered.
    applied = TransitionRequest.objects.get(rollout=main, target=PhaseKind.CANARY)
    assert applied.requested_at < applied.decided_at <= applied.closed_at == canary.entered_at

    beta = TransitionRequest.objects.get(rollout=main, target=PhaseKind.LIMITED_BETA)
    assert [g.key for g in gates_for(main, PhaseKind.LIMITED_BETA) if not g.passed] == []
    users = {u.username: u for u in get_user_model().objects.all()}
    approve(beta, users, roles=["sre-lead", "support-lead"])
    services.transition_apply(request=beta, actor=users["rollout-admin"])
    assert main.phases.get(kind=PhaseKind.LIMITED_BETA).status == PhaseStatus.ACTIVE
