"""The deltas page in a real browser (Debian's chromium through Playwright): charts draw, nothing loads from outside."""

from __future__ import annotations

import pytest

from rollout.roles import Role
from tests.evaluations.test_pages import add_runs


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_deltas_page_draws_its_charts_offline(live_server, users, tenants, canary, browser_page):
    add_runs(canary, 8)
    user = users[Role.AUDITOR]
    user.set_password("pw-browser")
    user.save()
    requests: list[str] = []
    page = browser_page
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
    outside = [url for url in requests if not url.startswith(live_server.url)]
    assert outside == []
