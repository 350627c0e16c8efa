"""Issue 9, seam 8: the smaller seams of the rollout pages, each a test that failed before the fix.

The retrospective survives a refused close; the kill switch page shows the fallback's state and the SRE lead can
pull it; a plan save names the roles that must sign again; readable labels; a server-side confirmation step before
closing an incident or publishing a communication; human times in incident evidence.
"""

from __future__ import annotations

import datetime as dt
import html
import inspect
import re

import pytest
from django import forms
from django.apps import apps
from django.contrib.messages import get_messages
from django.urls import reverse

from evaluations import forms as evaluation_forms
from evaluations import services as evaluation_services
from governance import forms as governance_forms
from governance import ledger
from governance.models import DEFAULT_APPROVING_ROLES, AuditEvent
from rollout import forms as rollout_forms
from rollout import services
from rollout.models import Communication, FlagExposure, FlagKey, Incident, IncidentStatus
from rollout.roles import Role
from tests.evaluations.conftest import run
from tests.factories import advance_to, complete_readiness
from tests.governance.helpers import sign_all

pytestmark = pytest.mark.django_db

ADMIN = Role.ROLLOUT_ADMIN


def last_message(response) -> str:
    return [str(m) for m in get_messages(response.wsgi_request)][-1]


@pytest.fixture
def in_canary(rollout, users):
    complete_readiness(rollout, users[ADMIN])
    return advance_to(rollout, "canary", users[ADMIN])


@pytest.fixture
def incident(in_canary, users) -> Incident:
    return services.rollout_rollback(rollout=in_canary, actor=users[ADMIN], reason="Refund flows loop")


# --- (a) and (f): closing an incident: a confirmation step, and a refusal keeps the retrospective -----------------


RETRO = "## What happened\n\nThe planner looped on refunds <b>twice</b>."


def test_a_refused_close_keeps_the_retrospective_typed(client_for, incident):
    admin = client_for(ADMIN)
    url = reverse("rollout:incident_close", args=[incident.rollout.slug, incident.pk])
    response = admin.post(url, {"retrospective": RETRO, "confirmed": "yes"})  # steps not ticked yet
    assert response.status_code == 400
    assert last_message(response) == "Every rollback step must be ticked before the incident closes."
    page = response.content.decode()
    textarea = re.search(r'<textarea name="retrospective"[^>]*>(.*?)</textarea>', page, re.S)
    assert textarea and html.unescape(textarea.group(1)).strip() == RETRO
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN and not Communication.objects.filter(kind="retrospective").exists()


def test_closing_an_incident_asks_for_confirmation_first(client_for, incident, users):
    for step in incident.steps.filter(done_at__isnull=True):
        services.incident_tick_step(step=step, actor=users[ADMIN])
    admin = client_for(ADMIN)
    url = reverse("rollout:incident_close", args=[incident.rollout.slug, incident.pk])
    before = AuditEvent.objects.count()

    confirm = admin.post(url, {"retrospective": RETRO})
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert f"Close the incident “{incident.title}”?" in html.unescape(page)
    assert "<h2>What happened</h2>" in page  # the retrospective as it will be published
    assert f'<input type="hidden" name="retrospective" value="{html.escape(RETRO)}">' in page
    assert 'name="confirmed" value="yes" data-action="confirm"' in page
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN and AuditEvent.objects.count() == before  # nothing written

    back = admin.post(url, {"retrospective": RETRO, "confirmed": "back"})  # "Edit the retrospective"
    assert back.status_code == 200 and html.escape(RETRO) in back.content.decode()
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN

    done = admin.post(url, {"retrospective": RETRO, "confirmed": "yes"})
    assert done.status_code == 302 and done["Location"] == incident.get_absolute_url()
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.CLOSED and incident.retrospective.body == RETRO


def test_an_empty_retrospective_is_refused_before_any_confirmation(client_for, incident):
    url = reverse("rollout:incident_close", args=[incident.rollout.slug, incident.pk])
    response = client_for(ADMIN).post(url, {"retrospective": "", "confirmed": "yes"})
    assert response.status_code == 400 and "This field is required." in response.content.decode()


# --- (f): publishing a communication ------------------------------------------------------------------------------


def test_publishing_a_draft_asks_for_confirmation_first(client_for, rollout, users):
    comm = services.communication_create(
        rollout=rollout, actor=users[ADMIN], kind="status_update", title="Canary week 1", body="All **green**."
    )
    admin = client_for(ADMIN)
    url = reverse("rollout:communication_publish", args=[rollout.slug, comm.pk])
    confirm = admin.post(url)
    assert confirm.status_code == 200
    page = html.unescape(confirm.content.decode())
    assert "Publish “Canary week 1”?" in page and "<strong>green</strong>" in page
    comm.refresh_from_db()
    assert comm.published_at is None
    assert admin.post(url, {"confirmed": "yes"}).status_code == 302
    comm.refresh_from_db()
    assert comm.published_at is not None


def test_creating_a_published_communication_asks_first_a_draft_does_not(client_for, rollout):
    admin = client_for(ADMIN)
    url = reverse("rollout:communication_create", args=[rollout.slug])
    body = {"kind": "status_update", "title": "Go", "body": "Now.", "publish": "on"}
    confirm = admin.post(url, body)
    assert confirm.status_code == 200 and "Publish “Go”?" in html.unescape(confirm.content.decode())
    assert not Communication.objects.filter(title="Go").exists()
    assert admin.post(url, {**body, "confirmed": "yes"}).status_code == 302
    assert Communication.objects.get(title="Go").published_at is not None
    draft = admin.post(url, {"kind": "status_update", "title": "Later", "body": "Draft."})
    assert draft.status_code == 302 and Communication.objects.get(title="Later").published_at is None


# --- (b) and (c): the kill switch page shows the state; the SRE lead pulls it ------------------------------------


def test_the_kill_switch_page_shows_which_tenants_have_the_fallback_since_when_and_by_whom(client_for, incident):
    rollout = incident.rollout
    page = client_for(ADMIN).get(reverse("rollout:kill_switch", args=[rollout.slug])).content.decode()
    exposures = FlagExposure.objects.filter(
        flag__rollout=rollout, flag__key=FlagKey.AGENT_V1_FALLBACK, enabled=True
    ).select_related("tenant")
    on = sorted(e.tenant.name for e in exposures)
    assert on  # the rollback turned it on for the canary's tenants
    members = sorted({t.name for t in services._member_tenants(rollout)})
    assert f'data-on="{len(on)}" data-total="{len(members)}"' in page
    for name in members:
        assert f'data-tenant="{name}" data-fallback="{"on" if name in on else "off"}"' in page
    row = page.split(f'data-tenant="{on[0]}"', 1)[1].split("</tr>", 1)[0]
    history = FlagExposure.history.filter(tenant__name=on[0], flag__key=FlagKey.AGENT_V1_FALLBACK).latest(
        "history_date"
    )
    assert f"{history.history_date:%Y-%m-%d %H:%M}" in row
    assert "rollout-admin" in row and "Refund flows loop" in row


def test_the_sre_lead_pulls_the_kill_switch_recorded_like_every_break_glass_change(client_for, in_canary):
    sre = client_for(Role.SRE_LEAD)
    url = reverse("rollout:kill_switch", args=[in_canary.slug])
    assert sre.get(url).status_code == 200
    top = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    response = sre.post(url, {"on": "1", "reason": "p95 doubled, paging SRE"})
    assert response.status_code == 302
    members = services._member_tenants(in_canary)
    assert last_message(response) == f"Kill switch ON: agent_v1_fallback changed for {len(members)} tenant(s)."
    entries = AuditEvent.objects.filter(sequence__gt=top, object_type="rollout.flagexposure")
    assert entries.count() == len(members)
    assert {(e.actor_name, e.reason) for e in entries} == {("sre-lead", "p95 doubled, paging SRE")}
    page = sre.get(url).content.decode()
    assert f'data-on="{len(members)}" data-total="{len(members)}"' in page
    # Still not for the other leads.
    assert client_for(Role.PRODUCT_LEAD).post(url, {"on": "0", "reason": "x"}).status_code == 403


# --- (d): a plan save names the roles that must sign again ------------------------------------------------------


def test_a_plan_save_names_the_roles_whose_sign_offs_were_superseded(client_for, rollout, users):
    sign_all(rollout, users, roles=[Role.PRODUCT_LEAD, Role.SRE_LEAD])
    admin = client_for(ADMIN)
    url = reverse("rollout:plan_edit", args=[rollout.slug])
    form = admin.get(url).context["form"]
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(latency_sla_ms="1800", reason="SRE asked for a tighter SLA.")
    response = admin.post(url, data)
    assert response.status_code == 302
    assert last_message(response) == (
        "Plan updated: 2 sign-offs superseded. Product lead and SRE lead must sign the new version again."
    )
    data.update(latency_sla_ms="1700", reason="tighter still")
    assert last_message(admin.post(url, data)) == "Plan updated."  # nobody had signed the current version
    assert last_message(admin.post(url, data)) == "Nothing changed: the plan is as it was."


# --- (e): labels -----------------------------------------------------------------------------------------------

# Lower-case abbreviations and units as Django derives them from field names: "Latency sla ms", "Ga consecutive".
# A unit in parentheses, "(ms)", is how it should read.
BAD_LABEL = re.compile(r"(?<!\()\b(sla|ga|ms|id|url|usd|api|ip)\b(?!\))|\b(hours|days|seconds)$")


def _forms():
    for module in (rollout_forms, governance_forms, evaluation_forms):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, forms.BaseForm) and cls.__module__ == module.__name__:
                yield name, cls


def _instance(cls):
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    if "kind" in params:
        kwargs["kind"] = "weekly_evaluation"
    if "metric" in params:
        kwargs["metric"] = "latency_p95_ms"
    if "config" in params:
        kwargs["config"] = {target: tuple(roles) for target, roles in DEFAULT_APPROVING_ROLES.items()}
    return cls(**kwargs)


def test_no_form_label_reads_like_a_field_name(db):
    bad = []
    for name, cls in _forms():
        form = _instance(cls)
        for field_name in form.fields:
            label = str(form[field_name].label)
            if BAD_LABEL.search(label):
                bad.append(f"{name}.{field_name}: {label!r}")
    assert bad == []
    plan = rollout_forms.PlanForm()
    assert [str(plan[f].label) for f in ("latency_sla_ms", "ga_consecutive_runs", "canary_soak_hours")] == [
        "Latency SLA (ms)",
        "GA consecutive runs",
        "Canary soak (hours)",
    ]


def test_no_model_field_of_the_admin_reads_like_a_field_name():
    bad = []
    for app in ("rollout", "governance", "evaluations"):
        for model in apps.get_app_config(app).get_models():
            if model.__name__.startswith("Historical") or model.__name__ == "RunDaySummary":
                continue  # history copies the fields; day summaries are internal sums, not shown
            for field in model._meta.get_fields():
                if getattr(field, "auto_created", True) or not hasattr(field, "verbose_name"):
                    continue
                if BAD_LABEL.search(str(field.verbose_name)):
                    bad.append(f"{model._meta.label}.{field.name}: {field.verbose_name!r}")
    assert bad == []


# --- (g): incident evidence in human times -----------------------------------------------------------------------


def test_incident_evidence_and_audit_diffs_show_human_times(client_for, in_canary):
    entered = in_canary.phases.get(kind="canary").entered_at
    finished = [entered + dt.timedelta(microseconds=123457 * (i + 1)) for i in range(2)]
    evaluation_services.ingest_runs(
        payload={
            "runs": [run(in_canary.slug, finished=f, guardrail_compensations=9, conversations=100) for f in finished]
        }
    )
    firing = evaluation_services.evaluate_triggers(rollout_id=in_canary.pk)
    assert firing is not None
    page = client_for(Role.SRE_LEAD).get(firing.incident.get_absolute_url()).content.decode()
    evidence = page.split('class="table table-sm table-sm-text mt-1 evidence"', 1)[1].split("</table>", 1)[0]
    for moment in finished:
        assert f"<td>{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC</td>" in evidence
        assert moment.isoformat() not in page
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d{6}", evidence)

    # The ledger keeps the exact ISO strings; its page shows them like people read them, nested ones included.
    ledger.append(
        action="update",
        object_type="rollout.incident",
        object_id=firing.incident.pk,
        rollout_id=in_canary.pk,
        before={"closed_at": None},
        after={"closed_at": finished[0].isoformat(), "evidence": [{"finished_at": finished[1].isoformat()}]},
    )
    audit = client_for(Role.AUDITOR).get("/audit/", {"object_type": "rollout.incident"}).content.decode()
    assert f"{finished[0].astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" in audit
    assert f"&quot;finished_at&quot;: &quot;{finished[1].astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC&quot;" in audit
    assert finished[0].isoformat() not in audit and finished[1].isoformat() not in audit


@pytest.mark.parametrize("n", [1, 8])
def test_the_kill_switch_page_runs_a_fixed_number_of_queries(
    client_for, in_canary, users, django_assert_num_queries, n
):
    from tests.factories import tenant

    general = in_canary.cohorts.get(kind="general")
    extra = [tenant(f"Extra {i}") for i in range(n)]
    services.cohort_set_tenants(
        cohort=general,
        tenants=[*(m.tenant for m in general.memberships.select_related("tenant")), *extra],
        actor=users[ADMIN],
        reason="more tenants",
    )
    for i in range(n):  # history grows with every pull and release
        services.kill_switch_set(rollout=in_canary, on=i % 2 == 0, actor=users[ADMIN], reason=f"drill {i}")
    client = client_for(Role.SRE_LEAD)
    # Session, user, permissions, the ledger banner; the state itself is two (flag, tenants with their last change).
    with django_assert_num_queries(9):
        page = client.get(reverse("rollout:kill_switch", args=[in_canary.slug])).content.decode()
    assert page.count("data-tenant=") == len(services._member_tenants(in_canary))
