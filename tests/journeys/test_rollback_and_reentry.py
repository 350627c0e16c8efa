"""Journey 2: a trigger rolls the canary back and the rollout comes back.

The SRE and support leads approve the demo's limited-beta request (it is then approved, waiting to be applied).
The evaluation harness, as a client of the API, pushes two breaching canary runs over HTTP with its bearer token;
the guardrail trigger fires on the second: the canary is rolled back, an incident opened with the two runs as
evidence, ``agent_v1_fallback`` on for the canary's tenants and the approved request withdrawn with a note. The
rollout admin ticks the rollback steps, writes the retrospective, closes the incident (its confirmation step) and
requests re-entry into the canary; the product and SRE leads approve it; the admin applies it: the canary is active
again in a second activity period, the multi-agent flags are back and the fallback off. Everything after the API
calls happens in the browser; each step is checked in the database and the ledger.
"""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from django.utils import timezone

from evaluations.models import EvaluationRun, TriggerFiring
from evaluations.services import api_token_create
from governance.models import AuditEvent, RequestKind, RequestStatus, TransitionApproval, TransitionRequest
from rollout.demo import MAIN_SLUG
from rollout.models import (
    Communication,
    CommunicationKind,
    FlagExposure,
    FlagKey,
    Incident,
    IncidentKind,
    IncidentStatus,
    PeriodEnd,
    PhaseKind,
    PhasePeriod,
    PhaseStatus,
    Rollout,
    RolloutStatus,
)

from .helpers import MAIN

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RETROSPECTIVE = """## What happened
Two canary runs compensated 7% and 8% of conversations (threshold 5%): the planner looped on partial refunds.

## Lessons learned
- The refund tool's idempotency key is now part of the planner prompt.
- An offline replay of the 400 refund conversations passes before re-entry.
"""
JUSTIFICATION = "Planner prompt fixed (idempotent refunds); the replay of the refund conversations passes."
APPROVALS = {
    "product-lead": "Retrospective read; the fix addresses the refund loop.",
    "sre-lead": "Replay clean and on-call briefed; re-enter the canary.",
}


def post_runs(base_url: str, token: str, runs: list[dict]) -> tuple[int, dict]:
    """``POST /api/v1/evaluation-runs/`` as the evaluation harness sends it: JSON, bearer token, real HTTP."""
    response = requests.post(
        f"{base_url}/api/v1/evaluation-runs/",
        json={"runs": runs},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    return response.status_code, response.json()


def breaching_run(n: int, finished: dt.datetime, compensations: int) -> dict:
    """A candidate canary run of the internal cohort: ``compensations`` of 100 conversations (threshold 5%)."""
    return {
        "run_id": f"harness-canary-breach-{n}",
        "rollout": MAIN_SLUG,
        "phase": PhaseKind.CANARY,
        "arm": "candidate",
        "cohort": "internal",
        "started_at": (finished - dt.timedelta(minutes=40)).isoformat(),
        "finished_at": finished.isoformat(),
        "conversations": 100,
        "guardrail_compensations": compensations,
        "metrics": {"task_success_rate": 0.86, "latency_p95_ms": 1750.0, "tool_call_accuracy": 0.91},
        "harness_version": "harness-2.4.1",
    }


def flags(rollout: Rollout, key: str) -> dict[str, bool]:
    """Tenant -> enabled of one flag, for the canary's (internal) tenants."""
    return dict(
        FlagExposure.objects.filter(flag__rollout=rollout, flag__key=key, tenant__tier="internal").values_list(
            "tenant__name", "enabled"
        )
    )


def test_a_trigger_rolls_the_canary_back_and_the_rollout_comes_back(start, demo):
    rollout = Rollout.objects.get(slug=MAIN_SLUG)
    beta = TransitionRequest.objects.get(rollout=rollout, target=PhaseKind.LIMITED_BETA)
    canary = rollout.phases.get(kind=PhaseKind.CANARY)
    first_period = PhasePeriod.objects.get(phase=canary, exited_at__isnull=True)
    internal = sorted(flags(rollout, FlagKey.MULTI_AGENT_RUNNER))
    assert flags(rollout, FlagKey.MULTI_AGENT_RUNNER) == dict.fromkeys(internal, True)
    assert not any(flags(rollout, FlagKey.AGENT_V1_FALLBACK).values())  # no fallback row is on yet
    j = start("2-rollback-and-reentry")
    page = j.page

    # The two leads still waiting approve limited beta: the request is approved, ready to apply.
    for lead, comment in (("sre-lead", "Canary inside the SLA."), ("support-lead", "Beta macros ready.")):
        j.login(lead)
        j.goto(beta.get_absolute_url(), f"beta request ({lead})", screenshot=False)
        page.fill("#decision-comment", comment)
        page.click("[data-action=decision-approve]")
        page.wait_for_selector(".alert-success")
        j.logout()
    beta.refresh_from_db()
    assert beta.status == RequestStatus.APPROVED

    # The harness pushes two breaching runs through the API, finished inside the canary's activity period.
    _token, raw = api_token_create(name="evaluation-harness (journey 2)", scopes=["ingest"], actor=None)
    now = timezone.now()
    status, body = post_runs(demo, raw, [breaching_run(1, now - dt.timedelta(minutes=20), 7)])
    assert (status, body.get("created_ids")) == (201, ["harness-canary-breach-1"]), body
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS  # one breaching run: streak 1 of 2
    status, body = post_runs(demo, raw, [breaching_run(2, now - dt.timedelta(minutes=5), 8)])
    assert (status, body.get("created_ids")) == (201, ["harness-canary-breach-2"]), body
    stored = EvaluationRun.objects.filter(run_id__startswith="harness-canary-breach-", cohort__kind="internal")
    assert stored.count() == 2

    # Rolled back by the trigger: incident with evidence, fallback on, multi-agent flags off, beta withdrawn.
    rollout.refresh_from_db()
    canary.refresh_from_db()
    assert (rollout.status, canary.status) == (RolloutStatus.ROLLED_BACK, PhaseStatus.ROLLED_BACK)
    firing = TriggerFiring.objects.get(rollout=rollout)
    assert (firing.trigger, firing.streak, firing.run.run_id) == ("guardrail", 2, "harness-canary-breach-2")
    incident = Incident.objects.get(rollout=rollout, status=IncidentStatus.OPEN)
    assert (incident.kind, incident.phase_id, firing.incident_id) == (IncidentKind.AUTOMATIC, canary.pk, incident.pk)
    assert flags(rollout, FlagKey.AGENT_V1_FALLBACK) == dict.fromkeys(internal, True)
    assert flags(rollout, FlagKey.MULTI_AGENT_RUNNER) == dict.fromkeys(internal, False)
    first_period.refresh_from_db()
    assert first_period.ended == PeriodEnd.ROLLED_BACK and first_period.exited_at is not None
    beta.refresh_from_db()
    note = (
        f"Withdrawn by the rollback of Canary (internal QA) (incident #{incident.pk}: {incident.title}). "
        "A rollback voids every pending transition request; request again once the incident is closed."
    )
    assert (beta.status, beta.close_reason, beta.closed_by_name) == (
        RequestStatus.WITHDRAWN,
        note,
        "automatic rollback",
    )
    withdraw = AuditEvent.objects.get(action="transition.withdraw", object_id=str(beta.pk))
    # Recorded as the trigger evaluation's work (the task the ingest queued), not as the harness's token.
    trigger_task = ("task", "evaluations.evaluate_triggers")
    assert (withdraw.reason, withdraw.actor_kind, withdraw.actor_name, withdraw.rollout_id) == (
        note,
        *trigger_task,
        rollout.pk,
    )
    rollback = AuditEvent.objects.get(action="rollout.rollback", object_id=str(incident.pk))
    assert (rollback.actor_kind, rollback.actor_name) == trigger_task

    # The rollout admin: nothing left to apply; the rollout page shows the rollback.
    j.login("rollout-admin")
    j.check("home after the rollback")
    assert page.locator("#my-applies li").count() == 0
    page.click(f"#rollouts >> text={rollout.name}")
    page.wait_for_selector("#transition")
    j.check("rollout rolled back")
    assert page.get_attribute(".phase[data-kind=canary]", "data-status") == PhaseStatus.ROLLED_BACK
    assert "agent_v1_fallback is ON" in page.inner_text(".alert-warning")
    for tenant_count in (page.inner_text("#flags td[data-flag=agent_v1_fallback][data-cohort=internal]"),):
        on, members = tenant_count.split("/")
        assert on == members == str(len(internal))
    assert page.locator("[data-pending]").count() == 0 and page.locator("[data-action=apply]").count() == 0
    assert "Next step: re-entry into Canary (internal QA)" in page.inner_text("#h-transition")

    # The withdrawn request says why.
    j.goto(beta.get_absolute_url(), "withdrawn beta request")
    assert "Withdrawn" in page.inner_text("h1")
    assert note in page.inner_text("main")
    assert page.locator("[data-action=apply]").count() == 0

    # The incident, with the trigger's evidence: the two runs.
    j.goto(MAIN, "rollout again", screenshot=False)
    page.locator(".alert-danger a", has_text=incident.title).click()
    page.wait_for_selector("#steps")
    j.check("incident with evidence")
    evidence = page.locator("#timeline table.evidence tbody tr")
    assert evidence.count() == 2
    assert "harness-canary-breach-1" in evidence.nth(0).inner_text()
    assert "harness-canary-breach-2" in evidence.nth(1).inner_text()

    # Tick the rollback steps, then close with the retrospective (a confirmation step first).
    # The rollback itself switched the flags off (that step is done by the system); the admin does the rest.
    assert list(incident.steps.filter(done_at__isnull=False).values_list("key", "done_by")) == [("disable_flags", None)]
    to_do = list(incident.steps.filter(done_at__isnull=True).order_by("order").values_list("key", flat=True))
    assert to_do == ["drain_workers", "notify_stakeholders"]
    for key in to_do:
        page.locator(f"#steps li[data-step={key}] button", has_text="Mark done").click()
        page.wait_for_selector(f"#steps li[data-step={key}] .badge:has-text('done')")
    j.check("incident steps done")
    assert incident.steps.filter(done_at__isnull=True).count() == 0
    ticked = incident.steps.filter(key__in=to_do).values_list("done_by__username", flat=True)
    assert set(ticked) == {"rollout-admin"}
    page.fill("#id_retrospective", RETROSPECTIVE)
    page.click("[data-form=close-incident] button[type=submit]")
    page.wait_for_selector("[data-form=confirm]")
    j.check("close incident confirmation")
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN  # nothing written before the confirmation
    page.click("[data-action=confirm]")
    page.wait_for_selector(".alert-success")
    j.check("incident closed")
    incident.refresh_from_db()
    assert (incident.status, incident.closed_by.username) == (IncidentStatus.CLOSED, "rollout-admin")
    retro = Communication.objects.get(rollout=rollout, kind=CommunicationKind.RETROSPECTIVE)
    # As typed (a browser posts a textarea's line breaks as CRLF; the form strips the last one).
    body = retro.body.replace("\r\n", "\n")
    assert (incident.retrospective_id, body, retro.published_at is not None) == (retro.pk, RETROSPECTIVE.strip(), True)
    assert "The refund tool" in page.inner_text(".markdown-body")

    # Request re-entry from the rollout page.
    j.goto(MAIN, "rollout, incident closed")
    assert page.locator("[data-gates] tr[data-state=fail]").count() == 0
    page.click("[data-action=request-reentry]")
    page.wait_for_selector("[data-action=submit-request]")
    j.check("re-entry request form")
    page.fill("#id_justification", JUSTIFICATION)
    page.click("[data-action=submit-request]")
    page.wait_for_selector("[data-action=withdraw]")
    reentry = TransitionRequest.objects.get(rollout=rollout, kind=RequestKind.REENTRY)
    j.check("re-entry request")
    assert page.inner_text("h1").startswith(f"Request #{reentry.pk}: Re-entry into Canary (internal QA)")
    assert (reentry.status, reentry.from_phase, reentry.target, reentry.requester_name) == (
        RequestStatus.OPEN,
        PhaseKind.CANARY,
        PhaseKind.CANARY,
        "rollout-admin",
    )
    assert reentry.justification == JUSTIFICATION
    j.logout()

    # The leads who approve entering the canary approve the re-entry, from their "My work".
    for lead, comment in APPROVALS.items():
        j.login(lead)
        j.check(f"home ({lead})", screenshot=False)
        mine = page.locator("#my-decisions li", has_text="re-entry into Canary")
        assert mine.count() == 1
        mine.locator("a").first.click()
        page.wait_for_selector("[data-form=decide]")
        j.check(f"re-entry request ({lead})")
        page.fill("#decision-comment", comment)
        page.click("[data-action=decision-approve]")
        page.wait_for_selector(".alert-success")
        j.check(f"re-entry approved ({lead})", screenshot=False)
        j.logout()
    reentry.refresh_from_db()
    assert reentry.status == RequestStatus.APPROVED
    decided = TransitionApproval.objects.filter(request=reentry, voided_at__isnull=True)
    assert dict(decided.values_list("role", "comment")) == APPROVALS

    # The admin applies it: canary active again, in a second activity period; flags back, fallback off.
    j.login("rollout-admin")
    applies = page.locator("#my-applies li")
    assert applies.count() == 1 and "re-entry into Canary" in applies.inner_text()
    applies.locator("a").click()
    page.wait_for_selector("[data-action=apply]")
    page.click("[data-action=apply]")
    page.wait_for_selector("[data-form=apply]")
    j.check("re-entry apply confirmation")
    assert page.locator("[data-gates] tr[data-state=fail]").count() == 0
    assert page.is_enabled("[data-action=confirm-apply]")
    page.fill("#id_note", "Re-entering the canary after the refund-loop fix.")
    page.click("[data-action=confirm-apply]")
    page.wait_for_selector(".alert-success")
    j.check("canary re-entered")
    assert page.get_attribute(".phase[data-kind=canary]", "data-status") == PhaseStatus.ACTIVE
    assert page.locator(".phase[data-kind=canary] li[data-period]").count() == 2
    assert page.locator(".alert-warning", has_text="agent_v1_fallback is ON").count() == 0
    runner = page.inner_text("#flags td[data-flag=multi_agent_runner][data-cohort=internal]")
    assert runner == f"{len(internal)}/{len(internal)}"
    assert page.inner_text("#flags td[data-flag=agent_v1_fallback][data-cohort=internal]") == f"0/{len(internal)}"

    rollout.refresh_from_db()
    canary.refresh_from_db()
    reentry.refresh_from_db()
    assert (rollout.status, canary.status, reentry.status) == (
        RolloutStatus.IN_PROGRESS,
        PhaseStatus.ACTIVE,
        RequestStatus.APPLIED,
    )
    periods = list(PhasePeriod.objects.filter(phase=canary).order_by("ordinal"))
    assert [(p.ordinal, p.ended) for p in periods] == [(1, PeriodEnd.ROLLED_BACK), (2, "")]
    assert periods[1].entered_at > incident.closed_at and canary.entered_at == periods[1].entered_at
    assert flags(rollout, FlagKey.AGENT_V1_FALLBACK) == dict.fromkeys(internal, False)
    assert flags(rollout, FlagKey.MULTI_AGENT_RUNNER) == dict.fromkeys(internal, True)

    # The transitions list tells the re-entry from the moves; the request's history holds its decisions.
    j.goto(f"{MAIN}transitions/", "transition requests")
    row = page.locator(f"#transition-requests tr[data-request='{reentry.pk}']")
    assert row.get_attribute("data-kind") == RequestKind.REENTRY and "Re-entry into" in row.inner_text()
    assert page.locator(f"#transition-requests tr[data-request='{beta.pk}'] >> text=Withdrawn").count() == 1
    j.logout()
    ledger_tells_the_story(j, rollout, incident, beta, reentry, since=now)


def ledger_tells_the_story(j, rollout, incident, beta, reentry, *, since) -> None:
    """The request's history link shows the request and both decisions; the rollout's ledger holds every step."""
    page = j.page
    j.login("auditor")
    j.goto(reentry.get_absolute_url(), "re-entry request (auditor)", screenshot=False)
    page.click("[data-link=object-history]")
    page.wait_for_selector("#audit-entries")
    j.check("re-entry request history")
    actions = page.locator("#audit-entries tbody.audit-entry > tr:first-child td code").all_inner_texts()
    assert sorted(actions) == sorted(
        ["transition.request", "transition.approve", "transition.approve", "transition.approved", "transition.apply"]
    ), actions
    assert "with its 2 decisions" in page.inner_text("[data-testid=history-of]")

    entries = AuditEvent.objects.filter(rollout_id=rollout.pk, at__gte=since)
    steps = [
        ("rollout.rollback", "evaluations.evaluate_triggers"),
        ("transition.withdraw", "evaluations.evaluate_triggers"),
        ("transition.request", "rollout-admin"),
        ("transition.approve", "product-lead"),
        ("transition.approve", "sre-lead"),
        ("transition.apply", "rollout-admin"),
    ]
    for action, actor in steps:
        assert entries.filter(action=action, actor_name=actor).count() == 1, (action, actor)
    assert entries.filter(object_type="rollout.incidentstep", actor_name="rollout-admin").count() == 2
    closed = entries.filter(object_type="rollout.incident", object_id=str(incident.pk), actor_name="rollout-admin")
    assert closed.filter(reason="Incident closed with retrospective").count() == 1
    assert entries.filter(object_type="rollout.phaseperiod", action="create").count() == 1
