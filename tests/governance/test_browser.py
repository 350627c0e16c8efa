"""The governance pages driven in a real browser: a lead signs the plan, the admin applies an approved request."""

from __future__ import annotations

import pytest

from governance.models import PlanSignOff
from rollout.models import PhaseKind, PhaseStatus
from rollout.roles import Role
from tests.factories import complete_readiness

from .helpers import approve, sign_all, threaded

pytestmark = [pytest.mark.browser, threaded]


def login(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw")
    page.click("button[type=submit]")
    page.wait_for_selector("[data-testid=whoami]")


def test_a_lead_signs_the_plan_and_the_admin_applies_the_approved_request(rollout, users, live_server, browser_page):
    from governance import services

    page = browser_page
    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    sign_all(rollout, users, roles=(Role.PRODUCT_LEAD, Role.SUPPORT_LEAD, Role.SRE_LEAD))

    login(page, live_server, "compliance-lead")
    page.goto(f"{live_server.url}{rollout.get_absolute_url()}")
    assert page.inner_text("[data-testid=signoff-count]") == "3/4"
    page.fill("#signoff-comment", "Records of processing updated.")
    page.click("[data-action=signoff-approve]")
    page.wait_for_selector(".alert-success")
    assert page.inner_text("[data-testid=signoff-count]") == "4/4"
    assert page.get_attribute('[data-gate="sign_off"]', "data-state") == "pass"
    assert PlanSignOff.objects.get(role="compliance-lead").comment == "Records of processing updated."

    request = approve(
        services.transition_request_create(rollout=rollout, justification="Ready.", actor=users[Role.ROLLOUT_ADMIN]),
        users,
    )
    page.click("text=Log out")
    login(page, live_server, "rollout-admin")
    page.goto(f"{live_server.url}{request.get_absolute_url()}")
    page.click("[data-action=apply]")
    page.wait_for_selector("text=Every approval and automated gate is checked again when you press the button.")
    page.click("button:has-text('Apply now')")
    page.wait_for_selector(".alert-success")
    assert "moved into Canary (internal QA)" in page.inner_text(".alert-success")
    assert page.get_attribute('[data-kind="canary"]', "data-status") == "active"
    page.screenshot(path="/tmp/governance-browser-apply.png", full_page=True)
    assert rollout.phases.get(kind=PhaseKind.CANARY).status == PhaseStatus.ACTIVE
