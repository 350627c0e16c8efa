"""Pages: login everywhere, actions shown only to roles that may use them, 403 behind them, fixed query counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from rollout import services
from rollout.models import ChecklistItem, FlagExposure, FlagKey, PhaseKind, Rollout
from rollout.roles import Role
from tests.factories import advance_to, tenant


@pytest.mark.parametrize("url", ["/", "/rollouts/x/", "/tenants/", "/rollouts/new/"])
def test_every_page_requires_login(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_login_and_logout(client, users):
    response = client.post("/login/", {"username": "auditor", "password": "pw"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    response = client.post("/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302
    bad = client.post("/login/", {"username": "auditor", "password": "wrong"})
    assert bad.status_code == 200
    assert "didn't match" in bad.content.decode()


ADMIN_ONLY_MARKERS = ['data-action="rollback"', 'data-action="tick"', "Edit plan"]
# The SRE lead, incident commander of the escalation matrix, may pull the kill switch too (issue 9, seam 8).
KILL_SWITCH_ROLES = (Role.ROLLOUT_ADMIN, Role.SRE_LEAD)


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_rollout_page_shows_only_the_actions_a_role_may_use(client_for, rollout, users, role):
    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])
    html = client_for(role).get(rollout.get_absolute_url()).content.decode()
    for marker in ADMIN_ONLY_MARKERS:
        assert (marker in html) is (role == Role.ROLLOUT_ADMIN), (role, marker)
    assert ('data-action="kill-switch"' in html) is (role in KILL_SWITCH_ROLES), role
    assert ("Draft pre-launch announcement" in html) is (role == Role.ROLLOUT_ADMIN)


@pytest.mark.parametrize("role", [r.value for r in Role if r != Role.ROLLOUT_ADMIN])
def test_forbidden_posts_answer_403_and_change_nothing(client_for, rollout, role):
    client = client_for(role)
    item = rollout.checklist_items.first()
    responses = [
        client.post(
            reverse("rollout:checklist_tick", args=[rollout.slug, item.pk]), {"evidence_url": "https://e.example.com"}
        ),
        client.post(reverse("rollout:rollback", args=[rollout.slug]), {"reason": "stop"}),
        client.post(reverse("rollout:create"), {"name": "Sneaky"}),
        client.post(reverse("rollout:plan_edit", args=[rollout.slug]), {"latency_sla_ms": 1}),
    ]
    if role not in KILL_SWITCH_ROLES:
        responses.append(client.post(reverse("rollout:kill_switch", args=[rollout.slug]), {"on": "1", "reason": "x"}))
    assert [r.status_code for r in responses] == [403] * len(responses)
    assert "Not allowed" in responses[0].content.decode()
    item.refresh_from_db()
    assert item.completed_at is None
    assert not FlagExposure.objects.filter(flag__rollout=rollout).exists()


def test_support_lead_logs_feedback_but_auditor_gets_403(client_for, rollout, users):
    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])
    url = reverse("rollout:phase", args=[rollout.slug, "canary"])
    data = {"severity": "medium", "text": "Planner loops on refunds", "link": ""}
    assert client_for(Role.AUDITOR).post(url, data).status_code == 403
    response = client_for(Role.SUPPORT_LEAD).post(url, data, follow=True)
    assert response.status_code == 200
    assert "Feedback logged." in response.content.decode()
    assert "Planner loops on refunds" in response.content.decode()


def test_tick_from_the_page_and_bad_input_gets_a_message(client_for, rollout):
    client = client_for(Role.ROLLOUT_ADMIN)
    item = rollout.checklist_items.get(key="runbooks-published")
    url = reverse("rollout:checklist_tick", args=[rollout.slug, item.pk])
    response = client.post(url, {"evidence_url": "not a url at all"}, follow=True)
    assert "Enter a valid URL." in response.content.decode()
    item.refresh_from_db()
    assert item.completed_at is None
    response = client.post(url, {"evidence_url": "https://wiki.example.com/runbooks"}, follow=True)
    assert "Ticked" in response.content.decode()
    item.refresh_from_db()
    assert item.evidence_url == "https://wiki.example.com/runbooks"


def test_kill_switch_page_confirms_then_applies(client_for, rollout):
    client = client_for(Role.ROLLOUT_ADMIN)
    url = reverse("rollout:kill_switch", args=[rollout.slug])
    page = client.get(url).content.decode()
    assert "Break-glass" in page
    missing_reason = client.post(url, {"on": "1", "reason": ""})
    assert missing_reason.status_code == 200 and "This field is required." in missing_reason.content.decode()
    assert not FlagExposure.objects.filter(flag__key=FlagKey.AGENT_V1_FALLBACK, enabled=True).exists()
    response = client.post(url, {"on": "1", "reason": "regression in refunds"}, follow=True)
    assert "Kill switch ON: agent_v1_fallback changed for 6 tenant(s)." in response.content.decode()
    assert "agent_v1_fallback is ON" in response.content.decode()


def test_rollout_create_page(client_for, tenants):
    client = client_for(Role.ROLLOUT_ADMIN)
    response = client.post(reverse("rollout:create"), {"name": "Voice wave 2", "start_date": "2027-01-04"})
    assert response.status_code == 302 and response["Location"] == "/rollouts/voice-wave-2/"
    bad = client.post(reverse("rollout:create"), {"name": "", "start_date": "04/01/2027x"})
    assert bad.status_code == 200
    assert "This field is required." in bad.content.decode() and "Enter a valid date." in bad.content.decode()


def test_unknown_rollout_and_phase_are_clear_404s(client_for, rollout):
    client = client_for(Role.AUDITOR)
    response = client.get("/rollouts/no-such-rollout/")
    assert response.status_code == 404 and "404 · Not found" in response.content.decode()
    assert client.get(f"/rollouts/{rollout.slug}/phases/bogus/").status_code == 404
    assert client.get(f"/rollouts/{rollout.slug}/communications/99999/").status_code == 404


def test_empty_home_says_so(client_for, users):
    html = client_for(Role.AUDITOR).get("/").content.decode()
    assert "No rollouts yet." in html


def _grow(users, n_rollouts: int, n_tenants: int) -> None:
    """More rollouts, tenants, ticked items, feedback and history: query counts must not move."""
    admin = users[Role.ROLLOUT_ADMIN]
    for i in range(n_tenants):
        tenant(f"Extra {i}", tier=["internal", "beta", "general"][i % 3], confirmed=bool(i % 2))
    for i in range(n_rollouts):
        rollout = services.rollout_create_from_playbook(name=f"Rollout {i}", owner=admin)
        for item in ChecklistItem.objects.filter(rollout=rollout)[: 3 + i]:
            services.checklist_item_tick(item=item, actor=admin, evidence_url="https://e.example.com")
        advance_to(rollout, PhaseKind.CANARY, admin)


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def _url(page: str) -> str:
    rollout = Rollout.objects.order_by("pk").first()
    return {
        "home": "/",
        "detail": rollout.get_absolute_url(),
        "status": reverse("rollout:status", args=[rollout.slug]),
        "phase": reverse("rollout:phase", args=[rollout.slug, "canary"]),
        "communications": reverse("rollout:communications", args=[rollout.slug]),
        "tenants": "/tenants/",
    }[page]


def _add_notes(users, n: int) -> None:
    rollout = Rollout.objects.order_by("pk").first()
    canary = rollout.phases.get(kind="canary")
    for i in range(n):
        services.phase_feedback_add(phase=canary, actor=users[Role.SUPPORT_LEAD], severity="low", text=f"note {i}")
        services.communication_create(
            rollout=rollout,
            kind="status_update",
            title=f"u{i}",
            body="b",
            actor=users[Role.ROLLOUT_ADMIN],
            publish=True,
        )


@pytest.mark.parametrize("page", ["home", "detail", "status", "phase", "communications", "tenants"])
def test_query_count_is_the_same_at_two_data_sizes(client_for, users, tenants, page, django_assert_num_queries):
    client = client_for(Role.ROLLOUT_ADMIN)
    _grow(users, n_rollouts=1, n_tenants=0)
    _add_notes(users, 1)
    small = _queries(client, _url(page))
    _grow(users, n_rollouts=4, n_tenants=12)
    _add_notes(users, 8)
    services.rollout_rollback(
        rollout=Rollout.objects.order_by("pk").last(), actor=users[Role.ROLLOUT_ADMIN], reason="x"
    )
    url = _url(page)
    with django_assert_num_queries(small):
        response = client.get(url)
    assert response.status_code == 200


@pytest.mark.parametrize("limit", [10, 3])
def test_recent_history_from_its_compiled_statement_equals_the_orm_query(users, tenants, limit):
    """On PostgreSQL the recent-history statement is compiled once per process and run with the rollout's id; its
    rows are exactly the ORM's for every rollout (a placeholder id left in would show another rollout's or none)."""
    from rollout import selectors

    _grow(users, n_rollouts=2, n_tenants=3)
    _add_notes(users, 4)
    rollouts = list(Rollout.objects.order_by("pk"))
    assert len(rollouts) >= 2
    for rollout in rollouts:
        expected = list(selectors._history_union(rollout.pk, limit))
        assert expected  # every rollout has history
        assert selectors._history_rows(rollout.pk, limit) == expected
    if connection.vendor == "postgresql":
        assert selectors._history_sql[(connection.alias, limit)] is not None  # the compiled path ran


def test_rollout_page_makes_a_fixed_number_of_queries_at_two_sizes(
    client_for, users, tenants, django_assert_num_queries
):
    """The rollout page with every panel (an auditor sees the compliance panel too): its recent changes are one
    query over all tracked models, and the panels read the active phase, open incidents and success criteria from
    what the page's selector prefetched, and the plan's version (governance) is hashed from what it loaded."""
    client = client_for(Role.AUDITOR)
    _grow(users, n_rollouts=1, n_tenants=0)
    _add_notes(users, 1)
    url = _url("detail")
    client.get(url)  # the session's first request
    with django_assert_num_queries(30):
        assert client.get(url).status_code == 200
    _grow(users, n_rollouts=3, n_tenants=12)
    _add_notes(users, 8)
    with django_assert_num_queries(30):
        response = client.get(url)
    history = response.context["d"].history
    assert len(history) == 10
    assert [h["at"] for h in history] == sorted((h["at"] for h in history), reverse=True)
    assert history[0]["model"] == "Communication" and history[0]["object"] == "u7"
    assert history[0]["type"] == "created" and history[0]["user"] == "rollout-admin"
