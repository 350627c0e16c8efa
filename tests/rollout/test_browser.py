"""Every demo user logs in through the real login form and sees the home and rollout pages in chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import call_command

from rollout.roles import Role
from tests.browser import login

SHOTS = Path(os.environ.get("SCREENSHOT_DIR", "var/screenshots"))


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_each_demo_user_sees_home_and_rollout_pages(live_server, role_groups, browser_page):
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser_page
    for role in Role:
        login(page, role.value)
        page.wait_for_url(f"{live_server.url}/")
        assert page.locator("h1").first.inner_text() == "Rollouts"
        assert role.value in page.locator("[data-testid=whoami]").inner_text()
        assert page.locator("#rollouts tbody tr").count() == 2
        page.click("#rollouts >> text=ReAct + multi-agent assistant")
        page.wait_for_selector("#h-phases")
        assert page.locator(".phase[data-kind=canary] .badge[data-state=active]").inner_text() == "Active"
        assert page.locator("#checklist-readiness tbody tr").count() == 12
        can_tick = page.locator("[data-action=kill-switch]").count() == 1
        assert can_tick is (role in (Role.ROLLOUT_ADMIN, Role.SRE_LEAD))  # the SRE lead pulls it too
        page.screenshot(path=str(SHOTS / f"rollout-{role.value}.png"), full_page=True)
        page.click("text=Log out")
        page.wait_for_url(f"{live_server.url}/login/")
