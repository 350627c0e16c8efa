"""Journey 1: the leads approve a phase. The demo's limited-beta request (product lead approved) waits in the SRE and
support leads' "My work"; each reads the gates and evidence on the request page and approves with a comment; the
requester cannot decide; the rollout admin applies it; limited beta is active, the beta cohort's flags are on, and
the ledger shows every step."""

from __future__ import annotations

import pytest

from governance.models import AuditEvent, TransitionApproval, TransitionRequest
from rollout.demo import MAIN_SLUG
from rollout.models import PhaseKind, PhaseStatus, Rollout

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

COMMENTS = {
    "sre-lead": "Canary latency and guardrails are inside the SLA; on-call briefed for beta.",
    "support-lead": "Support macros for beta tenants are live.",
}


def test_leads_approve_limited_beta_and_the_admin_applies_it(start, readme_shot):
    request = TransitionRequest.objects.get(rollout__slug=MAIN_SLUG, target=PhaseKind.LIMITED_BETA)
    rollout = Rollout.objects.get(slug=MAIN_SLUG)
    j = start("1-leads-approve")
    page = j.page

    for lead in ("sre-lead", "support-lead"):
        j.login(lead)
        j.check(f"home ({lead})")
        if lead == "sre-lead":
            readme_shot(j, "home")
        mine = page.locator("#my-decisions li")
        assert mine.count() == 1
        assert "into Limited beta" in mine.inner_text()
        mine.locator("a").click()
        page.wait_for_selector("[data-form=decide]")
        j.check(f"request ({lead})")
        assert page.locator("[data-gates] tr[data-gate]").count() >= 3
        # The evidence, in front of the approver: the canary's deltas and success criteria, the trigger streaks,
        # open incidents, each with a link to the full page.
        assert page.get_attribute("#evidence", "data-evidence-phase") == PhaseKind.CANARY
        assert "candidate and" in page.inner_text("[data-testid=evidence-verdicts]")
        assert page.locator("[data-evidence=deltas] tr[data-metric]").count() >= 5
        assert "of" in page.inner_text("[data-testid=criteria-met]")
        assert page.locator("[data-evidence=triggers] li[data-trigger]").count() == 2
        assert page.inner_text("[data-testid=open-incident-count]") == "0"
        for link in ("deltas", "runs", "triggers"):
            assert page.locator(f"#evidence [data-link={link}]").count() == 1
        page.fill("#decision-comment", COMMENTS[lead])
        page.click("[data-action=decision-approve]")
        page.wait_for_selector(".alert-success")
        j.check(f"approved ({lead})")
        assert page.get_attribute(f"#approvals tr[data-role={lead}]", "data-decision") == "approve"
        assert COMMENTS[lead] in page.inner_text("#approvals")
        j.logout()

    request.refresh_from_db()
    assert request.status == "approved"
    assert dict(TransitionApproval.objects.filter(request=request).values_list("role", "comment")) == {
        "product-lead": "Beta customers and account managers are lined up.",
        **COMMENTS,
    }

    # The requester: no decision form on their own request, and a decision posted anyway is refused.
    j.login("rollout-admin")
    j.check("home (rollout-admin)")
    page.click(f"#rollouts >> text={rollout.name}")
    j.check("rollout (rollout-admin)")
    readme_shot(j, "rollout-detail")
    j.nav("Rollouts")
    applies = page.locator("#my-applies li")
    assert applies.count() == 1 and "into Limited beta" in applies.inner_text()
    applies.locator("a").click()
    page.wait_for_selector("[data-action=apply]")
    j.check("approved request (requester)")
    assert page.locator("[data-form=decide]").count() == 0
    token = page.evaluate("() => document.cookie.match(/csrftoken=([^;]+)/)[1]")
    status = page.evaluate(
        """async ([path, token]) => (await fetch(path, {method: "POST", headers: {"X-CSRFToken": token},
             body: new URLSearchParams({role: "product-lead", decision: "reject", comment: "mine"}),
             redirect: "manual"})).status""",
        [f"{request.get_absolute_url()}decide/", token],
    )
    assert status == 403
    assert TransitionApproval.objects.filter(request=request, approver_name="rollout-admin").count() == 0

    page.click("[data-action=apply]")
    page.wait_for_selector("[data-form=apply]")
    j.check("apply confirmation")
    assert page.locator("[data-gates] tr[data-gate]").count() >= 3
    failing = page.locator("[data-gates] tr[data-state=fail]")
    blocked = failing.count() > 0
    if blocked:
        # Only if the demo's canary were too young (as before seam 1's demo timeline): the button is disabled with
        # the reason and the moment the soak passes. With the current demo data the apply branch runs.
        assert [g.get_attribute("data-gate") for g in failing.all()] == ["canary_soak"], failing.all_inner_texts()
        assert page.is_disabled("[data-action=confirm-apply]")
        assert "passes 20" in page.inner_text("[data-testid=apply-blocked]")
    else:
        apply_and_see_limited_beta(j, rollout, readme_shot)
    j.logout()
    ledger_shows_every_step(j, request, applied=not blocked)


def apply_and_see_limited_beta(j, rollout, readme_shot) -> None:
    page = j.page
    page.fill("#id_note", "Limited beta for the ten pilot tenants.")
    page.click("[data-action=confirm-apply]")
    page.wait_for_selector(".alert-success")
    j.check("rollout after apply")
    assert "Limited beta" in page.inner_text(".alert-success")
    assert page.get_attribute(".phase[data-kind=limited_beta]", "data-status") == PhaseStatus.ACTIVE
    assert page.get_attribute(".phase[data-kind=canary]", "data-status") == PhaseStatus.COMPLETED
    beta = page.inner_text("#flags td[data-flag=multi_agent_runner][data-cohort=beta]")
    on, members = beta.split("/")
    assert on == members and int(members) > 0
    assert rollout.phases.get(kind=PhaseKind.LIMITED_BETA).status == PhaseStatus.ACTIVE


def ledger_shows_every_step(j, request, *, applied: bool) -> None:
    """The ledger as a lead reads it: the request's own history (its link), then the audit log filtered to the
    rollout and each step's action: who requested, who approved with which role, who applied."""
    page = j.page
    j.login("product-lead")
    j.goto(request.get_absolute_url(), "request (product-lead)")
    page.click("[data-link=object-history]")
    page.wait_for_selector("#audit-entries")
    j.check("request history in the ledger")
    assert ("rollout-admin", "transition.request") in ledger_rows(page)
    expected = {
        "transition.request": [("rollout-admin", "transition.request")],
        "transition.approve": [
            ("support-lead", "transition.approve"),
            ("sre-lead", "transition.approve"),
            ("product-lead", "transition.approve"),
        ],
        "transition.apply": [("rollout-admin", "transition.apply")] if applied else [],
    }
    page.click("#audit-filter >> text=Clear")
    page.wait_for_load_state()
    j.check("ledger, unfiltered", screenshot=False)
    page.fill("#id_since", request.requested_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    for action, rows in expected.items():
        page.fill("#id_action", action)
        page.select_option("#id_rollout", MAIN_SLUG)
        page.click("#audit-filter button[type=submit]")
        page.wait_for_load_state()
        j.check(f"ledger: {action}", screenshot=action == "transition.approve")
        assert ledger_rows(page) == rows, action
        db = AuditEvent.objects.filter(action=action, rollout_id=request.rollout_id, at__gte=request.requested_at)
        assert db.count() == len(rows)


def ledger_rows(page) -> list[tuple[str, str]]:
    """(actor, action) of each entry shown, newest first."""
    return [
        (row.locator("td").nth(2).inner_text().split()[-1], row.locator("td code").inner_text())
        for row in page.locator("#audit-entries tbody.audit-entry > tr:first-child").all()
    ]
