"""Manual rollback from the rollout page, the incident's three steps, and closing with a retrospective."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from rollout.models import CommunicationKind, Incident, IncidentKind, RolloutStatus
from rollout.roles import Role
from tests.factories import advance_to, complete_readiness


@pytest.fixture
def in_canary(rollout, users):
    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    return advance_to(rollout, "canary", admin)


def test_manual_rollback_steps_and_retrospective(client_for, in_canary):
    page = client_for(Role.PRODUCT_LEAD).get(f"/rollouts/{in_canary.slug}/").content.decode()
    assert 'data-action="rollback"' not in page
    assert (
        client_for(Role.PRODUCT_LEAD).post(f"/rollouts/{in_canary.slug}/rollback/", {"reason": "x"}).status_code == 403
    )

    admin = client_for(Role.ROLLOUT_ADMIN)
    assert 'data-action="rollback"' in admin.get(f"/rollouts/{in_canary.slug}/").content.decode()
    response = admin.post(f"/rollouts/{in_canary.slug}/rollback/", {"reason": "Refund flows loop"})
    incident = Incident.objects.get()
    assert response.status_code == 302 and response["Location"] == incident.get_absolute_url()
    assert (incident.kind, incident.reason, incident.opened_by.username) == (
        IncidentKind.MANUAL,
        "Refund flows loop",
        "rollout-admin",
    )
    in_canary.refresh_from_db()
    assert in_canary.status == RolloutStatus.ROLLED_BACK

    html = admin.get(incident.get_absolute_url()).content.decode()
    assert html.count("data-step=") == 3
    # Closing before every step is ticked is refused with a message.
    admin.post(f"{incident.get_absolute_url()}close/", {"retrospective": "Too early", "confirmed": "yes"})
    incident.refresh_from_db()
    assert incident.status == "open"
    for step in incident.steps.filter(done_at__isnull=True):
        admin.post(f"{incident.get_absolute_url()}steps/{step.pk}/")
    assert [(s.done_by.username if s.done_by else None, s.done_at is not None) for s in incident.steps.all()] == [
        ("rollout-admin", True)
    ] * 3
    admin.post(
        f"{incident.get_absolute_url()}close/",
        {"retrospective": "## What happened\n\nThe planner looped.", "confirmed": "yes"},
    )
    incident.refresh_from_db()
    assert incident.status == "closed"
    retro = incident.retrospective
    assert retro.kind == CommunicationKind.RETROSPECTIVE and retro.body.startswith("## What happened")
    assert retro in in_canary.communications.all()
    assert "<h2>What happened</h2>" in admin.get(incident.get_absolute_url()).content.decode()


def test_incident_page_queries_do_not_grow_with_its_timeline(client_for, in_canary, users, django_assert_num_queries):
    from rollout import notifications, services

    notifications.webhook_endpoint_create(rollout=in_canary, name="a", url="http://127.0.0.1:9/a", actor=None)
    incident = services.rollout_rollback(rollout=in_canary, actor=users[Role.ROLLOUT_ADMIN], reason="r")
    notifications.create_deliveries(incident_id=incident.pk)
    viewer = client_for(Role.AUDITOR)
    url = incident.get_absolute_url()
    viewer.get(url)
    with CaptureQueriesContext(connection) as small:
        assert viewer.get(url).status_code == 200
    for i in range(5):
        services.incident_add_event(incident=incident, kind="note", message=f"note {i}")
    notifications.webhook_endpoint_create(rollout=in_canary, name="b", url="http://127.0.0.1:9/b", actor=None)
    notifications.create_deliveries(incident_id=incident.pk)
    with django_assert_num_queries(len(small)):
        html = viewer.get(url).content.decode()
    assert html.count('data-status="pending"') == 2
