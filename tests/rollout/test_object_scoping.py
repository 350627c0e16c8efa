"""Issue 8, finding 9: every URL with a slug and a nested object resolves the object through both.

The test is generated from the URL patterns: each route holding a slug-type
parameter and a nested object parameter is requested with the slug of one
rollout (or record) and the object of another, by a superuser (so no 403 can
hide a leak), and must answer 404 and change nothing. A new route of that
shape fails the test until the table below says how to make its object.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from governance import records as records_service
from governance import services as governance_services
from governance.models import AuditEvent, ChangeKind, RecordChange
from governance.reports import generate_daily_delta_reports
from rollout import services
from rollout.models import IncidentStep
from rollout.roles import Role
from rollout.routes import reserved_segments, routes
from tests.conftest import make_user
from tests.evaluations.conftest import run as run_payload
from tests.factories import advance_to, complete_readiness

# Parameters that name a fixed thing every rollout has, not an object that belongs to one.
NOT_OBJECTS = {"kind"}
_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def scoped_routes() -> dict[str, tuple[str, list[str]]]:
    """URL name -> (owner parameter, nested object parameters), for every route of that shape."""
    found = {}
    for route, name, _pattern in routes():
        params = [(m["converter"], m["name"]) for m in _PARAM.finditer(route)]
        owners = [param for converter, param in params if converter == "slug"]
        nested = [param for _c, param in params if param not in owners and param not in NOT_OBJECTS]
        if owners and nested:
            found[name] = (owners[0], nested)
    return found


@pytest.fixture
def world(users, tenants, rollout):
    """Two rollouts in canary, and one object of every nested kind belonging to the second."""
    admin = users[Role.ROLLOUT_ADMIN]
    other = services.rollout_create_from_playbook(name="Other rollout", owner=admin)
    complete_readiness(other, admin)
    advance_to(other, "canary", admin)
    from evaluations.services import ingest_runs

    ingest_runs(payload={"runs": [run_payload(other.slug)]})
    # Today's delta report exists for the other rollout only (a report is keyed by rollout and day).
    today = timezone.now().date()
    generate_daily_delta_reports(report_date=today)
    complete_readiness(rollout, admin)
    advance_to(rollout, "canary", admin)
    transition = governance_services.transition_request_create(
        rollout=other, justification="Canary looks fine", actor=admin
    )
    comm = services.communication_create(rollout=other, kind="status_update", title="T", body="B", actor=admin)
    incident = services.rollout_rollback(rollout=other, actor=admin, reason="scoping test")
    found, _created = records_service.ensure_records()
    first, second = sorted(found.values(), key=lambda r: r.key)
    assert records_service._propose(second, ChangeKind.TELEMETRY_FIELD, "run_output:scoping", "A field", {})
    return {
        "mine": rollout,
        "other": other,
        "first_record": first,
        "objects": {
            "cohort": other.cohorts.first(),
            "checklist": other.checklist_items.first(),
            "incident": incident,
            "step": incident.steps.filter(done_at__isnull=True).first(),
            "comm": comm,
            "transition": transition,
            "day": today.isoformat(),
            "second_record": second,
            "change": RecordChange.objects.get(record=second),
        },
    }


def _run(world):
    from evaluations.models import EvaluationRun

    return EvaluationRun.objects.get(rollout=world["other"]).run_id


# How to fill a route's nested parameters with an object of the OTHER rollout (or record).
NESTED = {
    "rollout:cohort_edit": lambda w: {"pk": w["objects"]["cohort"].pk},
    "rollout:checklist_tick": lambda w: {"pk": w["objects"]["checklist"].pk},
    "rollout:checklist_untick": lambda w: {"pk": w["objects"]["checklist"].pk},
    "rollout:incident": lambda w: {"pk": w["objects"]["incident"].pk},
    "rollout:incident_close": lambda w: {"pk": w["objects"]["incident"].pk},
    "rollout:incident_step": lambda w: {"pk": w["objects"]["incident"].pk, "step_pk": w["objects"]["step"].pk},
    "rollout:communication": lambda w: {"pk": w["objects"]["comm"].pk},
    "rollout:communication_edit": lambda w: {"pk": w["objects"]["comm"].pk},
    "rollout:communication_publish": lambda w: {"pk": w["objects"]["comm"].pk},
    "evaluations:run": lambda w: {"run_id": _run(w)},
    "governance:transition": lambda w: {"pk": w["objects"]["transition"].pk},
    "governance:transition_decide": lambda w: {"pk": w["objects"]["transition"].pk},
    "governance:transition_apply": lambda w: {"pk": w["objects"]["transition"].pk},
    "governance:transition_withdraw": lambda w: {"pk": w["objects"]["transition"].pk},
    "governance:delta_report": lambda w: {"day": w["objects"]["day"]},
    "governance:change_decide": lambda w: {"pk": w["objects"]["change"].pk},
}


def _owner_kwargs(world, owner_param: str, *, own: bool) -> dict[str, str]:
    if owner_param == "key":
        return {"key": (world["objects"]["second_record"] if own else world["first_record"]).key}
    return {owner_param: (world["other"] if own else world["mine"]).slug}


def test_every_slug_and_nested_object_route_is_in_the_table():
    found = scoped_routes()
    assert set(found) == set(NESTED), (
        f"routes without a row: {set(found) - set(NESTED)}; stale rows: {set(NESTED) - set(found)}"
    )
    assert found["rollout:incident_step"] == ("slug", ["pk", "step_pk"])


def test_an_object_of_another_rollout_is_404_through_every_route(client, world, users):
    superuser = make_user("scoping-root", is_superuser=True, is_staff=True)
    client.force_login(superuser)
    step = world["objects"]["step"]
    ledger_before = AuditEvent.objects.count()
    done_before = IncidentStep.objects.filter(done_at__isnull=False).count()
    checked = []
    for name, (owner_param, _nested) in sorted(scoped_routes().items()):
        nested = NESTED[name](world)
        wrong = reverse(name, kwargs={**_owner_kwargs(world, owner_param, own=False), **nested})
        statuses = {method: getattr(client, method)(wrong).status_code for method in ("get", "post")}
        assert 404 in statuses.values() and set(statuses.values()) <= {404, 405}, (name, wrong, statuses)
        checked.append(name)
    assert len(checked) == len(NESTED)
    step.refresh_from_db()
    assert step.done_at is None and IncidentStep.objects.filter(done_at__isnull=False).count() == done_before
    assert AuditEvent.objects.count() == ledger_before
    # The same objects through their own rollout are found (so the 404s above were not wrong arguments).
    for name, (owner_param, _nested) in sorted(scoped_routes().items()):
        right = reverse(name, kwargs={**_owner_kwargs(world, owner_param, own=True), **NESTED[name](world)})
        statuses = {method: getattr(client, method)(right).status_code for method in ("get", "post")}
        assert 404 not in statuses.values(), (name, right, statuses)


def test_a_step_ticked_through_another_rollouts_slug_is_404_and_stays_open(client, world, users):
    """The measured case: POST /rollouts/<any-slug>/incidents/<pk>/steps/<step>/ ticked the other rollout's step."""
    client.force_login(users[Role.ROLLOUT_ADMIN])
    incident, step = world["objects"]["incident"], world["objects"]["step"]
    url = f"/rollouts/{world['mine'].slug}/incidents/{incident.pk}/steps/{step.pk}/"
    assert client.post(url).status_code == 404
    step.refresh_from_db()
    assert step.done_at is None
    ok = client.post(f"/rollouts/{world['other'].slug}/incidents/{incident.pk}/steps/{step.pk}/")
    assert ok.status_code == 302
    step.refresh_from_db()
    assert step.done_at is not None


def test_the_reserved_words_come_from_the_url_patterns():
    assert reserved_segments("rollouts/") == {"new"}
    assert reserved_segments("compliance/records/") == {"new"}


@pytest.mark.parametrize("name", ["New", "new", "NEW!"])
def test_a_rollout_named_like_a_route_gets_a_reachable_slug(client, users, tenants, name):
    admin = users[Role.ROLLOUT_ADMIN]
    created = services.rollout_create_from_playbook(name=name, owner=admin)
    assert created.slug == "new-2"
    client.force_login(admin)
    page = client.get(f"/rollouts/{created.slug}/")
    assert page.status_code == 200 and name.encode() in page.content


def test_a_reserved_slug_given_explicitly_is_refused(users, tenants):
    from rollout.errors import InvalidPlan
    from rollout.models import Rollout

    with pytest.raises(InvalidPlan, match="addresses use"):
        services.rollout_create_from_playbook(name="Anything", owner=users[Role.ROLLOUT_ADMIN], slug="new")
    assert not Rollout.objects.filter(slug="new").exists()


def test_a_record_keyed_like_a_route_is_refused(users):
    from governance.models import ProcessingRecord
    from rollout.errors import DomainError

    values = {**records_service._defaults()[records_service.TELEMETRY_RECORD]}
    record = ProcessingRecord(key="new", **values)
    with pytest.raises(DomainError, match="like “new”"):
        records_service.record_save(record=record, values={}, actor=users[Role.COMPLIANCE_REVIEWER], reason="test")
