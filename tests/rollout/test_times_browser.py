"""In chromium: static/js/timezone.js reports the browser's zone and the next pages show times in it; sorting
a list by its header keeps the search typed into its filter form."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout import services
from rollout.models import Rollout
from rollout.roles import Role
from tests.browser import login


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_browser_zone_becomes_the_pages_zone_and_sorting_keeps_the_search(live_server, users, browser_page):
    page = browser_page
    admin = users[Role.ROLLOUT_ADMIN]
    for name in ("Voice beta", "Voice alpha", "Billing"):
        services.rollout_create_from_playbook(name=name, owner=admin)
    Rollout.objects.update(updated_at=dt.datetime(2026, 12, 3, 8, 32, tzinfo=dt.UTC))
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setTimezoneOverride", {"timezoneId": "Europe/Berlin"})
    login(page, Role.AUDITOR.value, "pw")
    page.wait_for_url(f"{live_server.url}/")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert cookies["rgd_tz"] == "Europe/Berlin"
    page.reload()
    time = page.locator("#rollouts tbody tr time").first
    assert time.inner_text() == "2026-12-03 09:32"
    assert time.get_attribute("title") == "2026-12-03 08:32:00 UTC"
    assert page.locator("#time-zone-in-force").inner_text() == "Europe/Berlin"
    # Search, then sort by a header: the search stays, the order follows the header.
    page.fill("#id_q", "voice")
    page.click("#rollout-filters button[type=submit]")
    page.wait_for_url("**q=voice**")
    page.click("#rollouts th a[data-sort=name]")
    page.wait_for_url("**sort=name**")
    assert "q=voice" in page.url
    names = page.locator("#rollouts tbody tr td:first-child > a:first-child").all_inner_texts()
    assert names == ["Voice alpha", "Voice beta"]
    assert page.locator("#rollouts th[aria-sort=ascending]").count() == 1
    page.click("#rollouts th a[data-sort=name]")
    page.wait_for_url("**sort=-name**")
    assert page.locator("#rollouts tbody tr td:first-child > a:first-child").all_inner_texts() == [
        "Voice beta",
        "Voice alpha",
    ]
