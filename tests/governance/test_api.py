"""The API's rollout detail shows the same gates as the request page, plus the GA and trigger streaks."""

from __future__ import annotations

from governance.selectors import gates_for
from rollout.models import PhaseKind
from rollout.roles import Role
from tests.factories import advance_to, complete_readiness

from .helpers import sign_all


def test_rollout_detail_gates_match_the_request_page(api, rollout, users):
    body = api.get(f"/api/v1/rollouts/{rollout.slug}/").json()
    assert (body["status"], body["current_phase"], body["next_step"]) == ("draft", "preparation", "canary")
    assert [p["kind"] for p in body["phases"]] == ["preparation", "canary", "limited_beta", "general_availability"]
    assert [(g["key"], g["passed"], g["detail"]) for g in body["gates"]][1:] == [
        ("readiness", False, "readiness 0/12"),
        ("sign_off", False, body["gates"][2]["detail"]),
    ]
    assert body["gates"][2]["detail"].startswith("plan signed 0/4")
    assert body["gates_pass"] is False
    assert body["ga_gate"] == {"required": 5, "streak": 0, "passed": False}
    assert [(t["trigger"], t["required"], t["streak"]) for t in body["triggers"]] == [
        ("guardrail", 2, 0),
        ("latency", 3, 0),
    ]

    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    sign_all(rollout, users)
    body = api.get(f"/api/v1/rollouts/{rollout.slug}/").json()
    assert body["gates_pass"] is True
    expected = [
        {"key": g.key, "label": g.label, "passed": g.passed, "detail": g.detail} for g in gates_for(rollout, "canary")
    ]
    assert body["gates"] == expected

    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])
    body = api.get(f"/api/v1/rollouts/{rollout.slug}/").json()
    assert body["next_step"] == "limited_beta"
    soak = next(g for g in body["gates"] if g["key"] == "canary_soak")
    assert soak == {
        "key": "canary_soak",
        "label": "Canary active ≥ 48 h",
        "passed": False,
        "detail": "canary soak 0 h of 48 h",
    }
    assert api.get("/api/v1/rollouts/nope/").status_code == 404


def test_rollout_detail_needs_the_read_scope(client, token, rollout):
    raw = token("ingest")
    response = client.get(f"/api/v1/rollouts/{rollout.slug}/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"


def test_rollout_detail_makes_the_same_queries_at_two_sizes(api, rollout, users, django_assert_num_queries):
    """Nine queries with the canary active (token, rollout, phases once: the gates and the GA gate read them from the
    rollout's prefetch cache, and limited beta was never entered, so no GA runs to read; the incidents' counts, the
    five of the trigger streaks), whatever the runs."""
    import datetime as dt

    from django.utils import timezone

    from evaluations import services as evaluation_services
    from tests.evaluations.conftest import run

    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN], at=timezone.now() - dt.timedelta(days=2))
    url = f"/api/v1/rollouts/{rollout.slug}/"
    api.get(url)  # the per-process caches (content types, ...)
    with django_assert_num_queries(9):
        assert api.get(url).json()["current_phase"] == "canary"
    now = timezone.now()
    runs = [
        run(
            rollout.slug,
            arm=("baseline", "candidate")[i % 2],
            finished=now - dt.timedelta(minutes=i),
            guardrail_compensations=i % 4,
        )
        for i in range(40)
    ]
    evaluation_services.ingest_runs(payload={"runs": runs})
    with django_assert_num_queries(9):
        body = api.get(url).json()
    assert body["triggers"][0]["trigger"] == "guardrail"
