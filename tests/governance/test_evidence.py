"""The evidence approvers see on a transition request page: the current phase's deltas, trigger streaks, incidents."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from evaluations import selectors as evaluation_selectors
from evaluations import services as evaluation_services
from evaluations.stats import Verdict
from governance import services
from governance.models import TransitionRequest
from governance.selectors import transition_evidence
from rollout.models import Incident, IncidentKind
from rollout.roles import Role
from tests.evaluations.conftest import run
from tests.factories import advance_to, complete_readiness

from .helpers import approve

pytestmark = pytest.mark.django_db

ADMIN = Role.ROLLOUT_ADMIN


def _in_canary(rollout, users):
    complete_readiness(rollout, users[ADMIN])
    return advance_to(rollout, "canary", users[ADMIN])


def _moments(rollout, n: int) -> list[dt.datetime]:
    """``n`` increasing moments while the canary has been active: after it was entered, not later than now."""
    entered = rollout.phases.get(kind="canary").entered_at
    span = timezone.now() - entered
    return [entered + span * (i + 1) / (n + 1) for i in range(n)]


def _ingest(rollout, n: int, *, breaching_tail: int = 1) -> None:
    """``n`` baseline and ``n`` candidate canary runs; the candidate is better on task success, worse on cost,
    and its last ``breaching_tail`` runs breach the guardrail threshold (9 compensations in 100 conversations)."""
    moments = _moments(rollout, 2 * n)
    runs = []
    for i in range(n):
        runs.append(
            run(
                rollout.slug,
                arm="baseline",
                finished=moments[2 * i],
                guardrail_compensations=1,
                metrics={"task_success_rate": 0.80 + i % 2 * 0.01, "cost_per_conversation_usd": 0.05 + i % 2 * 0.001},
            )
        )
        runs.append(
            run(
                rollout.slug,
                arm="candidate",
                finished=moments[2 * i + 1],
                guardrail_compensations=9 if i >= n - breaching_tail else 1,
                metrics={"task_success_rate": 0.90 + i % 2 * 0.01, "cost_per_conversation_usd": 0.10 + i % 2 * 0.001},
            )
        )
    result = evaluation_services.ingest_runs(payload={"runs": runs})
    assert len(result.created) == 2 * n, result


def _incident(rollout, title: str) -> Incident:
    return Incident.objects.create(
        rollout=rollout,
        phase=rollout.phases.get(kind="canary"),
        kind=IncidentKind.MANUAL,
        title=title,
        reason="seen in support tickets",
        opened_at=timezone.now(),
    )


def _beta_request(rollout, users):
    return services.transition_request_create(rollout=rollout, justification="Canary looks good.", actor=users[ADMIN])


def test_the_selector_reuses_the_evaluations_figures(rollout, users):
    rollout = _in_canary(rollout, users)
    _ingest(rollout, 4)
    _incident(rollout, "Refund tool misfires")
    req = _beta_request(rollout, users)

    ev = transition_evidence(req)
    assert ev.phase.kind == "canary"
    full = next(p for p in evaluation_selectors.deltas(rollout).phases if p.phase.kind == "canary")
    assert [(m.spec.key, m.comparison.verdict, m.meets_criterion) for m in ev.deltas.metrics] == [
        (m.spec.key, m.comparison.verdict, m.meets_criterion) for m in full.metrics
    ]
    by_key = {m.spec.key: m for m in ev.deltas.metrics}
    assert by_key["task_success_rate"].comparison.verdict == Verdict.IMPROVED
    assert by_key["cost_per_conversation_usd"].comparison.verdict == Verdict.REGRESSED
    assert (ev.deltas.baseline_runs, ev.deltas.candidate_runs) == (4, 4)
    # Six default criteria: task success (0.905 >= 0.85) is met, cost (0.1005 > 0.08) is not; the other four
    # metrics have no data.
    assert len(ev.criteria) == 6
    assert ev.criteria_met == 1
    assert [m.spec.key for m in ev.criteria_unmet] == ["cost_per_conversation_usd"]
    assert dict(ev.verdicts)[Verdict.REGRESSED] >= 1 and ev.verdicts[0][0] == Verdict.REGRESSED
    triggers = {t.trigger: t for t in ev.triggers}
    assert (triggers["guardrail"].streak, triggers["guardrail"].required) == (1, rollout.guardrail_breach_runs)
    assert triggers["latency"].streak == 0
    assert [t.streak for t in ev.triggers] == [
        t.streak for t in evaluation_selectors.trigger_statuses(rollout, rollout.phases.get(kind="canary"))
    ]
    assert [i.title for i in ev.open_incidents] == ["Refund tool misfires"]


def test_the_request_page_shows_deltas_streaks_and_incidents_with_links(rollout, users, client_for):
    rollout = _in_canary(rollout, users)
    _ingest(rollout, 4)
    incident = _incident(rollout, "Refund tool misfires")
    req = _beta_request(rollout, users)

    page = client_for(Role.PRODUCT_LEAD).get(req.get_absolute_url()).content.decode()
    assert 'data-evidence-phase="canary"' in page
    assert 'data-metric="task_success_rate" data-verdict="improved" data-meets="yes"' in page
    assert 'data-metric="cost_per_conversation_usd" data-verdict="regressed" data-meets="no"' in page
    assert 'data-metric="latency_p95_ms" data-verdict="not enough data" data-meets="no data"' in page
    assert 'data-testid="criteria-met">1 of 6 met<' in page
    assert "(not met: Cost per conversation)" in page
    assert "4 candidate and 4 baseline runs." in page
    assert f'data-trigger="guardrail" data-streak="1" data-required="{rollout.guardrail_breach_runs}"' in page
    assert re.search(r"Guardrail compensations</strong>: streak <strong>1</strong> of 2", page)
    assert "threshold &gt; 5.00% of conversations in a candidate run" in page
    assert f'data-trigger="latency" data-streak="0" data-required="{rollout.latency_breach_intervals}"' in page
    assert 'data-testid="open-incident-count">1<' in page
    assert f'<li data-incident="{incident.pk}"><a href="{incident.get_absolute_url()}">Refund tool misfires</a>' in page
    assert f'href="/rollouts/{rollout.slug}/deltas/#phase-canary" data-link="deltas"' in page
    assert f'href="/rollouts/{rollout.slug}/runs/" data-link="runs"' in page
    assert f'href="/rollouts/{rollout.slug}/#evaluations-panel" data-link="triggers"' in page


def test_a_firing_trigger_and_no_incident_read_as_such(rollout, users, client_for):
    rollout = _in_canary(rollout, users)
    _ingest(rollout, 3, breaching_tail=2)
    req = _beta_request(rollout, users)
    page = client_for(Role.SRE_LEAD).get(req.get_absolute_url()).content.decode()
    assert 'data-trigger="guardrail" data-streak="2" data-required="2"' in page
    assert "firing</span>" in page
    assert 'data-testid="open-incident-count">0<' in page and "No open incidents." in page


def test_a_canary_request_shows_preparation_without_runs(canary_request, client_for):
    page = client_for(Role.PRODUCT_LEAD).get(canary_request.get_absolute_url()).content.decode()
    assert 'data-evidence-phase="preparation"' in page
    assert "No evaluation runs in Preparation yet." in page
    assert "No active phase: streaks are not evaluated." not in page  # preparation is the active phase
    assert 'data-trigger="guardrail" data-streak="0"' in page


def test_a_closed_request_shows_no_live_evidence(approved_canary, users, client_for):
    services.transition_apply(request=approved_canary, actor=users[ADMIN], reason="go")
    page = client_for(Role.PRODUCT_LEAD).get(approved_canary.get_absolute_url()).content.decode()
    assert 'id="evidence"' not in page


@pytest.mark.parametrize("n", [2, 25])
def test_the_request_page_with_evidence_runs_a_fixed_number_of_queries(
    rollout, users, client_for, django_assert_num_queries, n
):
    rollout = _in_canary(rollout, users)
    _ingest(rollout, n, breaching_tail=1)
    for i in range(n // 2 + 1):
        _incident(rollout, f"incident {i}")
    req = approve(_beta_request(rollout, users), users, roles=["product-lead"])
    client = client_for(Role.SRE_LEAD)
    req = TransitionRequest.objects.select_related("rollout").get(pk=req.pk)  # as the page reads it
    with django_assert_num_queries(9):
        transition_evidence(req)
    # The request page's own reads and gates (nine), plus the nine of the evidence.
    with django_assert_num_queries(18):
        page = client.get(req.get_absolute_url())
    assert page.status_code == 200
    assert page.content.decode().count("<li data-incident=") == n // 2 + 1


# --- The apply confirmation: live gates, a disabled button with the reason and when the soak passes -------------


def test_the_apply_page_disables_the_button_and_says_when_the_soak_passes(rollout, users, client_for):
    from rollout import services as rollout_services

    rollout_services.rollout_update_plan(rollout=rollout, actor=users[ADMIN], reason="short soak", canary_soak_hours=31)
    rollout = _in_canary(rollout, users)
    req = approve(_beta_request(rollout, users), users)
    assert req.status == "approved"
    passes = rollout.phases.get(kind="canary").entered_at + dt.timedelta(hours=31)

    page = client_for(ADMIN).get(f"/rollouts/{rollout.slug}/transitions/{req.pk}/apply/").content.decode()
    button = page.split('data-action="confirm-apply"')[0].rsplit("<button", 1)[1]
    assert "disabled" in button and 'aria-describedby="apply-blocked"' in button
    assert 'id="apply-blocked"' in page
    assert 'data-gate="canary_soak" data-state="fail"' in page
    reason = f"Canary active ≥ 31 h: canary soak 0 h of 31 h — passes {passes:%Y-%m-%d %H:%M} UTC, in 31 h"
    assert f'<li data-blocked-gate="canary_soak">{reason}</li>' in page
    # The same moment on the request page's gate table.
    page = client_for(Role.PRODUCT_LEAD).get(req.get_absolute_url()).content.decode()
    assert f"(passes {passes:%Y-%m-%d %H:%M} UTC, in 31 h)" in page

    # Nothing blocks once the soak is over: the button is live and has no reason attached.
    rollout_services.rollout_update_plan(rollout=rollout, actor=users[ADMIN], reason="no soak", canary_soak_hours=0)
    page = client_for(ADMIN).get(f"/rollouts/{rollout.slug}/transitions/{req.pk}/apply/").content.decode()
    button = page.split('data-action="confirm-apply"')[0].rsplit("<button", 1)[1]
    assert "disabled" not in button and 'id="apply-blocked"' not in page
