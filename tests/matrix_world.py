"""The data the access matrix runs against: one realistic world, built through the services.

Two rollouts: "ReAct rollout" in canary (readiness done, plan signed, the canary request approved and
applied, an open request into limited beta,
runs with raw outputs, feedback, communications, a daily delta report) and "Voice rollout", rolled back
from canary with an open incident and its playbook steps, under a legal hold. Compliance: the two
data-processing records with a pending change, the scheduled reviews of the current periods, job runs.
API tokens of each scope.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from evaluations.models import ApiToken
from evaluations.services import api_token_create
from governance import jobs, records, reports, retention, reviews
from governance import services as governance
from governance.models import Job, ProcessingRecord, RecordChange, ScheduledReview, TransitionRequest
from governance.selectors import approver_config
from rollout import services as rollout_services
from rollout.models import ChecklistKind, Communication, CommunicationKind, FeedbackSeverity, Incident, Rollout
from rollout.roles import LEAD_ROLES, Role
from tests.factories import advance_to, complete_readiness
from tests.governance.compliance_helpers import runs_with_outputs


@dataclass
class World:
    rollout: Rollout
    rolled_back: Rollout
    incident: Incident
    request: TransitionRequest
    draft: Communication
    published: Communication
    record: ProcessingRecord
    change: RecordChange
    review: ScheduledReview
    run_id: str
    report_day: dt.date
    tokens: dict[str, str]
    users: dict[str, Any]
    built_at: dt.datetime

    def kwargs(self) -> dict[str, dict[str, Any]]:
        """URL kwargs per URL name (names without kwargs need no entry)."""
        slug = self.rollout.slug
        item_open = self.rollout.checklist_items.filter(kind=ChecklistKind.EXIT, completed_at__isnull=True).first()
        item_done = self.rollout.checklist_items.filter(kind=ChecklistKind.READINESS).first()
        step = self.incident.steps.filter(done_at__isnull=True).order_by("pk").first()
        on_rolled_back = {"slug": self.rolled_back.slug, "pk": self.incident.pk}
        return {
            "api:evaluation-run": {"run_id": self.run_id},
            "openid_connect_login": {"provider_id": "oidc"},
            "openid_connect_callback": {"provider_id": "oidc"},
            "api:rollout": {"slug": slug},
            "api:rollout-flags": {"slug": slug},
            "api:rollout-deltas": {"slug": slug},
            "ofrep:evaluate-flag": {"key": "react_loop"},
            "evaluations:deltas": {"slug": slug},
            "evaluations:runs": {"slug": slug},
            "evaluations:run": {"slug": slug, "run_id": self.run_id},
            "evaluations:criteria": {"slug": slug},
            "rollout:detail": {"slug": slug},
            "rollout:status": {"slug": slug},
            "rollout:status_live": {"slug": slug},
            "rollout:plan_edit": {"slug": slug},
            "rollout:escalation_edit": {"slug": slug},
            "rollout:cohort_edit": {"slug": slug, "pk": self.rollout.cohorts.order_by("pk").first().pk},
            "rollout:phase": {"slug": slug, "kind": "canary"},
            "rollout:checklist_tick": {"slug": slug, "pk": item_open.pk},
            "rollout:checklist_untick": {"slug": slug, "pk": item_done.pk},
            "rollout:kill_switch": {"slug": slug},
            "rollout:rollback": {"slug": slug},
            "rollout:incident": on_rolled_back,
            "rollout:incident_step": {**on_rolled_back, "step_pk": step.pk},
            "rollout:incident_close": on_rolled_back,
            "rollout:communications": {"slug": slug},
            "rollout:communication_create": {"slug": slug},
            "rollout:communication": {"slug": slug, "pk": self.published.pk},
            "rollout:communication_edit": {"slug": slug, "pk": self.draft.pk},
            "rollout:communication_publish": {"slug": slug, "pk": self.draft.pk},
            "governance:sign_off": {"slug": slug},
            "governance:approvers": {"slug": slug},
            "governance:transitions": {"slug": slug},
            "governance:transition_create": {"slug": slug},
            "governance:transition": {"slug": slug, "pk": self.request.pk},
            "governance:transition_decide": {"slug": slug, "pk": self.request.pk},
            "governance:transition_apply": {"slug": slug, "pk": self.request.pk},
            "governance:transition_withdraw": {"slug": slug, "pk": self.request.pk},
            "governance:hold_release": {"pk": self.rolled_back.legal_holds.get(released_at__isnull=True).pk},
            "governance:job_run": {"job": Job.VERIFY_AUDIT_LOG},
            "governance:record": {"key": self.record.key},
            "governance:record_edit": {"key": self.record.key},
            "governance:change_decide": {"key": self.record.key, "pk": self.change.pk},
            "governance:review": {"pk": self.review.pk},
            "governance:review_reassign": {"pk": self.review.pk},
            "governance:delta_reports": {"slug": slug},
            "governance:delta_report": {"slug": slug, "day": self.report_day.isoformat()},
        }


def build_world(users: dict[str, Any]) -> World:
    admin = users[Role.ROLLOUT_ADMIN]
    reviewer = users[Role.COMPLIANCE_REVIEWER]
    now = timezone.now()

    # The rolled-back rollout first, so the main one is the newest (the home page lists it first).
    voice = rollout_services.rollout_create_from_playbook(name="Voice rollout", owner=admin)
    complete_readiness(voice, admin)
    advance_to(voice, "canary", admin)
    incident = rollout_services.rollout_rollback(
        rollout=voice, actor=admin, reason="Guardrail compensations above 5% in two candidate runs."
    )
    retention.legal_hold_place(rollout=voice, reason="Customer complaint under investigation.", actor=reviewer)

    rollout = rollout_services.rollout_create_from_playbook(name="ReAct rollout", owner=admin)
    complete_readiness(rollout, admin)
    for role in LEAD_ROLES:
        governance.plan_sign_off(
            rollout=rollout, role=role, decision="approve", comment="Reviewed.", actor=users[str(role)]
        )
    canary_request = governance.transition_request_create(
        rollout=rollout, justification="Readiness done, plan signed by the four leads.", actor=admin
    )
    for role in approver_config(rollout)[canary_request.target]:
        governance.transition_decide(
            request=canary_request, role=role, decision="approve", comment="Go.", actor=users[str(role)]
        )
    governance.transition_apply(request=canary_request, actor=admin, reason="Canary window opens.")
    request = governance.transition_request_create(
        rollout=rollout, justification="Canary soak looks healthy.", actor=admin
    )
    canary = rollout.phases.get(kind="canary")
    rollout_services.phase_feedback_add(
        phase=canary, actor=users[Role.SUPPORT_LEAD], severity=FeedbackSeverity.choices[0][0], text="Macros ok."
    )
    published = rollout_services.communication_create(
        rollout=rollout,
        kind=CommunicationKind.STATUS_UPDATE,
        title="Preparation done",
        body="Readiness complete; **canary** requested.",
        actor=admin,
        publish=True,
    )
    draft = rollout_services.communication_create(
        rollout=rollout, kind=CommunicationKind.STATUS_UPDATE, title="Canary plan", body="Draft.", actor=admin
    )

    finished = [timezone.now(), timezone.now()]  # inside the canary's current period
    runs = runs_with_outputs(rollout, finished, arm="baseline", phase=canary)
    runs += runs_with_outputs(rollout, finished, arm="candidate", phase=canary)
    yesterday = (now - dt.timedelta(days=1)).date()
    reports.generate_daily_delta_reports(report_date=yesterday)

    records.update_compliance_records()
    record = ProcessingRecord.objects.get(key=records.TELEMETRY_RECORD)
    change = RecordChange.objects.create(
        record=record,
        kind="telemetry_field",
        subject="run_output:sentiment",
        label="sentiment",
        detected_at=now,
    )
    reviews.check_scheduled_reviews()
    review = ScheduledReview.objects.get(kind="monthly_guardrail_drill")  # assigned to the SRE lead
    jobs.job_request(job=Job.VERIFY_AUDIT_LOG, actor=reviewer, reason="Before the quarterly audit.")

    tokens = {
        "ingest": api_token_create(name="harness", scopes=["ingest"], actor=None)[1],
        "read": api_token_create(name="config-service", scopes=["read"], actor=None)[1],
        "both": api_token_create(name="harness-full", scopes=["ingest", "read"], actor=None)[1],
        "bad": "rgd_not-a-token-anyone-was-given",
        "flags": api_token_create(name="openfeature", scopes=["flags"], actor=None)[1],
        "metrics": api_token_create(name="prometheus", scopes=["metrics"], actor=None)[1],
    }
    scopeless, tokens["none"] = api_token_create(name="legacy", scopes=["read"], actor=None)
    # The service refuses to create a token without scopes; a row could still lose them (an old
    # migration, the database by hand), and the scope check must not rely on the service.
    ApiToken.objects.filter(pk=scopeless.pk).update(scopes=[])

    return World(
        rollout=rollout,
        rolled_back=voice,
        incident=incident,
        request=request,
        draft=draft,
        published=published,
        record=record,
        change=change,
        review=review,
        run_id=runs[-1].run_id,
        report_day=yesterday,
        tokens=tokens,
        users=users,
        built_at=timezone.now(),
    )
