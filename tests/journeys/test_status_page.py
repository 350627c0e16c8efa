"""Journey 5: the live status page with the kill switch on, at 390 px (a phone) and 1280 px. The SRE lead (the
incident commander of the escalation matrix, who may pull it since seam 8) pulls the kill switch through its form;
then a support lead reads the status page on each screen: the menu collapsed behind its toggler on the phone (and
still usable), nothing scrolling sideways, every check of the harness, and the degraded state with its reason."""

from __future__ import annotations

import pytest

from governance.models import AuditEvent
from rollout.demo import MAIN_SLUG
from rollout.models import FlagExposure, FlagKey, Rollout

from .helpers import MAIN

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REASON = "Guardrail compensations spiking in canary; serving the legacy pipeline."


def pull_the_kill_switch(start, width: int) -> int:
    """The SRE lead turns agent_v1_fallback on for every tenant of the main rollout; returns how many."""
    sre = start(f"5-kill-switch-{width}", width=width, height=844 if width == 390 else 900)
    page = sre.page
    sre.login("sre-lead")
    sre.check("home (sre-lead)", screenshot=False)
    sre.goto(MAIN, "rollout")
    assert page.locator(".alert-warning", has_text="agent_v1_fallback is ON").count() == 0
    page.click("[data-action=kill-switch]")
    page.wait_for_selector("[data-form=kill-switch]")
    sre.check("kill switch form")
    total = int(page.get_attribute("#kill-switch-state", "data-total"))
    assert total > 0 and page.get_attribute("#kill-switch-state", "data-on") == "0"
    page.check("input[name=on][value='1']")
    page.fill("#id_reason", REASON)
    page.click("[data-form=kill-switch] button[type=submit]")
    page.wait_for_selector(".alert-success")
    sre.check("rollout with the kill switch on")
    assert "Kill switch ON" in page.inner_text(".alert-success")
    assert f"agent_v1_fallback is ON</strong> for {total} of {total}" in page.inner_html(".alert-warning")
    on = FlagExposure.objects.filter(flag__rollout__slug=MAIN_SLUG, flag__key=FlagKey.AGENT_V1_FALLBACK, enabled=True)
    assert on.count() == total
    # Break-glass, recorded like every change: one ledger entry per tenant switched, with the SRE lead's reason.
    entries = AuditEvent.objects.filter(object_type="rollout.flagexposure", actor_name="sre-lead", reason=REASON)
    assert entries.count() == total
    sre.logout()
    return total


@pytest.mark.parametrize("width", [390, 1280])
def test_the_status_page_shows_the_kill_switch_on_a_phone_and_a_desktop(start, width):
    total = pull_the_kill_switch(start, width)
    rollout = Rollout.objects.get(slug=MAIN_SLUG)
    j = start(f"5-status-{width}", width=width, height=844 if width == 390 else 900)
    page = j.page
    j.login("support-lead")
    j.check("home")
    nav = page.locator("nav.navbar")
    if width == 390:
        # Collapsed: one bar of brand and toggler (the issue measured 250 px of links before).
        assert nav.bounding_box()["height"] <= 64
        assert not page.is_visible("#main-nav")
        j.open_nav()
        assert page.is_visible("#main-nav >> text=Rollouts")
        page.locator(".navbar-toggler").click()
        page.wait_for_selector("#main-nav", state="hidden")
    else:
        assert page.is_visible("#main-nav >> text=Rollouts")
        assert page.locator(".navbar-toggler").is_hidden()
    # A fake clock for the page's timers, so its 30 s refresh can be brought forward instead of waited for.
    page.clock.install()
    page.locator("#rollouts tr", has_text=rollout.name).locator("text=status page").click()
    page.wait_for_url(f"**{MAIN}status/")
    j.check("status page")

    # Degraded, and why: the kill switch (no incident: the rollout is still in canary).
    assert page.get_attribute("[data-health]", "data-health") == "degraded"
    assert page.inner_text("[data-health]") == "Degraded"
    reasons = page.locator("#health-reasons li").all_inner_texts()
    assert reasons == [f"Kill switch on: agent_v1_fallback for {total} of {total} tenants"]
    assert page.is_visible("#health-reasons")
    assert page.inner_text("#health .status-hero") != "Healthy"
    assert "Canary (internal QA)" in page.inner_text("#health")
    # The page keeps itself current: 30 s later status-refresh.js fetches /status/live/ and swaps it in, no reload.
    seconds = int(page.get_attribute("#status-live", "data-refresh-seconds"))
    assert 30 <= seconds <= 60
    page.evaluate("() => { window.__sameDocument = true; }")
    with page.expect_response(lambda r: r.url.endswith(f"{MAIN}status/live/")) as live:
        page.clock.fast_forward(seconds * 1000 + 1000)
    assert live.value.status == 200 and live.value.headers.get("x-status-fragment") == "1"
    assert page.evaluate("() => window.__sameDocument === true")
    assert page.get_attribute("[data-health]", "data-health") == "degraded"
    j.check("status page refreshed", screenshot=False)

    j.nav("Rollouts")
    j.check("home again", screenshot=False)
