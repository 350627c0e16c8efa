"""The rollout-admin's forms end to end: plan, escalation matrix, cohorts, communications, incidents."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from rollout import services
from rollout.models import Communication, IncidentStatus, PhaseKind
from rollout.roles import Role
from tests.factories import advance_to


@pytest.fixture
def admin_client(client_for):
    return client_for(Role.ROLLOUT_ADMIN)


def test_plan_edit_changes_calendar_and_thresholds(admin_client, rollout):
    url = reverse("rollout:plan_edit", args=[rollout.slug])
    form = admin_client.get(url).context["form"]
    data = {name: form[name].value() or "" for name in form.fields}
    canary_start = rollout.phases.get(kind="canary").planned_start + dt.timedelta(days=2)
    data.update(latency_sla_ms="1800", start_canary=canary_start.isoformat(), reason="SRE asked for a tighter SLA")
    response = admin_client.post(url, data, follow=True)
    assert "Plan updated." in response.content.decode()
    rollout.refresh_from_db()
    assert rollout.latency_sla_ms == 1800
    assert rollout.phases.get(kind="canary").planned_start == canary_start
    assert rollout.history.first().history_change_reason == "SRE asked for a tighter SLA"


def test_plan_edit_rejects_bad_values_without_saving(admin_client, rollout):
    url = reverse("rollout:plan_edit", args=[rollout.slug])
    form = admin_client.get(url).context["form"]
    data = {name: form[name].value() or "" for name in form.fields}
    data.update(guardrail_compensation_threshold="1.5", latency_sla_ms="abc", reason="x")
    response = admin_client.post(url, data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Ensure this value is less than or equal to 1." in html
    assert "Enter a whole number." in html
    rollout.refresh_from_db()
    assert rollout.latency_sla_ms == 2000


def test_escalation_matrix_is_replaced_through_the_formset(admin_client, rollout):
    url = reverse("rollout:escalation_edit", args=[rollout.slug])
    data = {
        "rows-TOTAL_FORMS": "2",
        "rows-INITIAL_FORMS": "0",
        "rows-MIN_NUM_FORMS": "1",
        "rows-MAX_NUM_FORMS": "1000",
        "rows-0-severity": "sev1",
        "rows-0-contact": "Ana (SRE)",
        "rows-0-role": "Incident commander",
        "rows-0-channel": "Pager",
        "rows-1-severity": "",
        "rows-1-contact": "",
        "rows-1-role": "",
        "rows-1-channel": "",
        "reason": "New on-call rotation",
    }
    response = admin_client.post(url, data, follow=True)
    assert "Escalation matrix updated." in response.content.decode()
    assert list(rollout.escalation_contacts.values_list("contact", "channel")) == [("Ana (SRE)", "Pager")]


def test_cohort_members_page_refuses_overlap_with_a_message(admin_client, rollout, tenants):
    beta = rollout.cohorts.get(kind="beta")
    url = reverse("rollout:cohort_edit", args=[rollout.slug, beta.pk])
    data = {"tenants": [tenants["Beta A"].pk, tenants["General A"].pk], "reason": "add General A"}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "already elsewhere: General A (All other tenants)" in response.content.decode()
    assert set(beta.memberships.values_list("tenant__name", flat=True)) == {"Beta A", "Beta B"}


def test_prelaunch_draft_then_publish(admin_client, rollout):
    new_url = reverse("rollout:communication_create", args=[rollout.slug]) + "?kind=prelaunch"
    page = admin_client.get(new_url)
    initial = page.context["form"].initial
    assert initial["title"] == "Pre-launch announcement: ReAct rollout"
    assert "## Deployment calendar" in initial["body"] and "## Escalation matrix" in initial["body"]
    response = admin_client.post(new_url, {"kind": "prelaunch", "title": initial["title"], "body": initial["body"]})
    comm = Communication.objects.get()
    assert response["Location"] == comm.get_absolute_url()
    assert comm.is_draft
    detail = admin_client.get(comm.get_absolute_url()).content.decode()
    assert "<table>" in detail and "Publish" in detail  # Markdown tables rendered
    admin_client.post(reverse("rollout:communication_publish", args=[rollout.slug, comm.pk]), {"confirmed": "yes"})
    comm.refresh_from_db()
    assert comm.published_at is not None
    again = admin_client.post(
        reverse("rollout:communication_publish", args=[rollout.slug, comm.pk]), {"confirmed": "yes"}, follow=True
    )
    assert "already published" in again.content.decode()


def test_manual_rollback_from_the_page_then_steps_and_retrospective(admin_client, rollout, users):
    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])
    response = admin_client.post(reverse("rollout:rollback", args=[rollout.slug]), {"reason": "refund loops"})
    incident = rollout.incidents.get()
    assert response["Location"] == incident.get_absolute_url()
    close_url = reverse("rollout:incident_close", args=[rollout.slug, incident.pk])
    early = admin_client.post(close_url, {"retrospective": "## What happened", "confirmed": "yes"}, follow=True)
    assert "Every rollback step must be ticked" in early.content.decode()
    for step in incident.steps.filter(done_at__isnull=True):
        admin_client.post(reverse("rollout:incident_step", args=[rollout.slug, incident.pk, step.pk]))
    assert not incident.steps.filter(done_at__isnull=True).exists()
    admin_client.post(close_url, {"retrospective": "## What happened\nRefund flows looped.", "confirmed": "yes"})
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.CLOSED
    assert incident.retrospective.kind == "retrospective"
    assert incident.retrospective.published_at is not None
    page = admin_client.get(incident.get_absolute_url()).content.decode()
    assert "Refund flows looped." in page
    assert [e.kind for e in incident.events.all()] == ["opened", "flags", "step", "step", "closed"]


def test_auditor_reads_incident_but_cannot_tick(client_for, rollout, users):
    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])
    incident = services.rollout_rollback(rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="x")
    client = client_for(Role.AUDITOR)
    page = client.get(incident.get_absolute_url()).content.decode()
    assert "Mark done" not in page and "Close incident" not in page
    step = incident.steps.get(key="drain_workers")
    assert client.post(reverse("rollout:incident_step", args=[rollout.slug, incident.pk, step.pk])).status_code == 403
    step.refresh_from_db()
    assert step.done_at is None
