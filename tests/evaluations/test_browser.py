"""The deltas page in a real browser (Debian's chromium through Playwright): charts draw, nothing loads from outside."""

from __future__ import annotations

import os

import pytest

from rollout.roles import Role
from tests.evaluations.test_pages import add_runs

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_deltas_page_draws_its_charts_offline(live_server, users, tenants, canary):
    from playwright.sync_api import sync_playwright

    add_runs(canary, 8)
    user = users[Role.AUDITOR]
    user.set_password("pw-browser")
    user.save()
    requests: list[str] = []
    # All database work is done: Playwright's sync API runs an event loop in this thread.
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"), args=LAUNCH_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(f"{live_server.url}/login/")
            page.fill("#id_username", user.username)
            page.fill("#id_password", "pw-browser")
            page.click("button[type=submit]")
            page.goto(f"{live_server.url}/rollouts/{canary.slug}/deltas/")
            chart = page.locator("#chart-task_success_rate svg")
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            assert page.locator("#chart-task_success_rate circle").count() == 8
            assert page.locator("#chart-task_success_rate svg title").text_content() == "Task success rate over time"
            page.locator("#chart-task_success_rate summary").click()
            assert page.locator("#chart-task_success_rate table tbody tr").count() == 8
            verdict = page.locator('table[data-phase="canary"] tr[data-metric="task_success_rate"] .badge').first
            assert verdict.inner_text() in {"improved", "regressed", "no clear change", "not enough data"}
        finally:
            browser.close()
    outside = [url for url in requests if not url.startswith(live_server.url)]
    assert outside == []
