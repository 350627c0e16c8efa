"""Issue 9, seam 6: the live status page tells the truth (incidents, kill switch, fired triggers, next step)
and refreshes itself by fetching its live part."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from rollout import services
from rollout.roles import Role
from tests.evaluations.conftest import run
from tests.factories import advance_to, complete_readiness, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_canary(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    return advance_to(rollout, "canary", admin)


def _page(client, rollout, live: bool = False) -> str:
    response = client.get(f"/rollouts/{rollout.slug}/status/{'live/' if live else ''}")
    assert response.status_code == 200
    return response.content.decode()


def _health(html: str) -> tuple[str, str]:
    match = re.search(r'data-health="([a-z]+)">([^<]+)<', html)
    return match.group(1), match.group(2)


def _reasons(html: str) -> list[str]:
    block = re.search(r'<ul[^>]*id="health-reasons">(.*?)</ul>', html, re.S)
    return re.findall(r"<li>([^<]+)</li>", block.group(1)) if block else []


def _next_step(html: str) -> str:
    block = re.search(r'<div id="next-step">(.*?)</div>\s*</div>', html, re.S).group(1)
    return " ".join(re.sub(r"<[^>]+>", " ", block).split())


def test_healthy_in_canary_with_nothing_wrong(client_for, in_canary):
    html = _page(client_for(Role.AUDITOR), in_canary)
    assert _health(html) == ("ok", "Healthy")
    assert _reasons(html) == []
    assert _next_step(html).startswith("Next step Limited beta planned")


def test_the_kill_switch_on_for_every_tenant_is_not_healthy(client_for, in_canary, users):
    """It said Healthy while agent_v1_fallback was on for 9 of 9 tenants."""
    services.kill_switch_set(rollout=in_canary, on=True, actor=users[Role.ROLLOUT_ADMIN], reason="Drill")
    html = _page(client_for(Role.AUDITOR), in_canary)
    assert _health(html) == ("degraded", "Degraded")
    assert _reasons(html) == ["Kill switch on: agent_v1_fallback for 6 of 6 tenants"]


def test_after_a_trigger_rollback_health_names_it_and_the_next_step_is_the_re_entry(client_for, in_canary):
    """It showed "Current phase: none" and still "Next planned step: Limited beta planned ..."."""
    from evaluations.models import TriggerFiring
    from evaluations.services import evaluate_triggers, ingest_runs

    now = timezone.now()
    ingest_runs(payload={"runs": [run(in_canary.slug, guardrail_compensations=6, finished=now) for _ in range(2)]})
    assert evaluate_triggers(rollout_id=in_canary.pk) is not None
    firing = TriggerFiring.objects.get()
    html = _page(client_for(Role.AUDITOR), in_canary)
    assert _health(html) == ("incident", "Rolled back")
    assert _reasons(html) == [
        "Rolled back out of Canary (internal QA)",
        "1 open incident",
        "Kill switch on: agent_v1_fallback for 2 of 6 tenants",
        f"Guardrail compensations trigger fired in Canary (internal QA) at {firing.fired_at:%Y-%m-%d %H:%M} UTC",
    ]
    step = _next_step(html)
    assert step == (
        "Next step Re-entry into Canary (internal QA) to be requested once the incident is closed with its "
        "retrospective"
    )
    assert "Limited beta" not in step


def test_the_next_step_links_the_re_entry_request_once_made(client_for, in_canary, users):
    from governance import services as governance

    services.rollout_rollback(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="Refund loop")
    request = governance.transition_request_create(
        rollout=in_canary, justification="Fixed.", actor=users[Role.ROLLOUT_ADMIN]
    )
    html = _page(client_for(Role.AUDITOR), in_canary)
    assert _next_step(html) == f"Next step Re-entry into Canary (internal QA) request #{request.pk} open"
    assert f'href="{request.get_absolute_url()}"' in html


def test_the_page_refreshes_its_live_part_from_a_fragment_without_inline_script(client_for, in_canary):
    client = client_for(Role.AUDITOR)
    html = _page(client, in_canary)
    assert f'data-refresh-url="/rollouts/{in_canary.slug}/status/live/"' in html
    assert 'data-refresh-seconds="30"' in html
    assert '<script src="/static/js/status-refresh.js"></script>' in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline script (CSP)"
    response = client.get(f"/rollouts/{in_canary.slug}/status/live/")
    assert response["X-Status-Fragment"] == "1"
    fragment = response.content.decode()
    assert "<html" not in fragment and 'data-health="ok"' in fragment and 'id="status-updated"' in fragment
    # The fragment is exactly what the page holds in its live box (bar the time stamp).
    box = html[html.index('<div id="status-live"') :]
    stamp = re.compile(r'<p class="small text-muted mb-0" id="status-updated">.*?</p>')
    assert stamp.sub("", fragment).strip() in stamp.sub("", box)


@pytest.mark.parametrize("live", [False, True], ids=["page", "fragment"])
def test_status_page_and_fragment_use_the_same_queries_at_two_sizes(
    client_for, in_canary, users, live, django_assert_num_queries
):
    client = client_for(Role.AUDITOR)
    url = f"/rollouts/{in_canary.slug}/status/{'live/' if live else ''}"
    admin = users[Role.ROLLOUT_ADMIN]
    services.rollout_rollback(rollout=in_canary, actor=admin, reason="Refund loop")
    client.get(url)
    with CaptureQueriesContext(connection) as small:
        assert client.get(url).status_code == 200
    # More tenants, incidents, status updates, a kill switch on.
    cohort = in_canary.cohorts.get(kind="general")
    extra = [tenant(f"Extra {i}") for i in range(5)]
    services.cohort_set_tenants(
        cohort=cohort,
        tenants=[m.tenant for m in cohort.memberships.select_related("tenant")] + extra,
        actor=admin,
        reason="More tenants",
    )
    services.kill_switch_set(rollout=in_canary, on=True, actor=admin, reason="Drill")
    for n in range(3):
        services.communication_create(
            rollout=in_canary, kind="status_update", title=f"Update {n}", body="All well.", actor=admin, publish=True
        )
    with django_assert_num_queries(len(small)):
        assert client.get(url).status_code == 200


def test_the_status_page_names_the_readers_zone_not_utc(in_canary, client_for):
    """Found by the journeys: times are shown in the reader's zone but the page labelled them all "UTC"."""
    client = client_for(Role.SUPPORT_LEAD)
    entered = timezone.localtime(in_canary.phases.get(kind="canary").entered_at, timezone.get_fixed_timezone(330))
    client.cookies["rgd_tz"] = "Asia/Kolkata"
    for html in (_page(client, in_canary), _page(client, in_canary, live=True)):
        since = re.search(r"since <time [^>]*>([^<]+)</time>", html)
        assert since and since.group(1) == f"{entered:%Y-%m-%d %H:%M} IST"
        assert re.search(r'id="status-updated">As of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST</p>', html)
        assert "</time> UTC" not in html
