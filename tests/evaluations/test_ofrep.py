"""OFREP (issue 12 part 3): the flags the dashboard governs, through the OpenFeature Remote Evaluation Protocol.

The first half speaks HTTP through Django's test client (error shapes, ETags, throttling, the governing rule);
the second runs the real ``openfeature-sdk`` with ``openfeature-provider-ofrep`` against a live server on
loopback and compares every demo tenant's value with ``GET /api/v1/rollouts/<slug>/flags/``.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from governance.models import AuditEvent
from rollout import services
from rollout.models import FlagKey, PhaseKind, Rollout, RolloutStatus
from rollout.roles import Role
from rollout.selectors import tenant_flags
from tests.factories import advance_to

pytestmark = pytest.mark.django_db

FLAG = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


@pytest.fixture
def ofrep(client, token):
    raw = token("flags")

    def post(path: str, body, **extra):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return client.post(path, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}", **extra)

    return post


@pytest.fixture
def canary(rollout, users):
    return advance_to(rollout, PhaseKind.CANARY, users[Role.ROLLOUT_ADMIN])


def ctx(tenant: str) -> dict:
    return {"context": {"targetingKey": tenant}}


# --- Values, reasons, variants, metadata -----------------------------------------------------------------------


def test_a_flag_is_the_tenants_cohort_exposure_in_the_current_phase(ofrep, canary):
    on = ofrep(FLAG.format("react_loop"), ctx("internal-a"))
    assert on.status_code == 200 and on["Content-Type"] == "application/json"
    assert on.json() == {
        "key": "react_loop",
        "value": True,
        "reason": "TARGETING_MATCH",
        "variant": "on",
        "metadata": {
            "tenantKnown": True,
            "tenant": "internal-a",
            "rollout": canary.slug,
            "rolloutStatus": "in_progress",
            "phase": "canary",
            "cohort": "internal",
        },
    }
    off = ofrep(FLAG.format("react_loop"), ctx("beta-a")).json()
    assert (off["value"], off["variant"], off["reason"], off["metadata"]["cohort"]) == (
        False,
        "off",
        "TARGETING_MATCH",
        "beta",
    )
    # Voice insights only where transcript ingestion is confirmed (Internal B has not confirmed it).
    assert ofrep(FLAG.format("voice_insights"), ctx("internal-a")).json()["value"] is True
    assert ofrep(FLAG.format("voice_insights"), ctx("internal-b")).json()["value"] is False


def test_rollback_is_disabled_and_the_kill_switch_is_on(ofrep, canary, users):
    services.rollout_rollback(rollout=canary, actor=users[Role.ROLLOUT_ADMIN], reason="Refund regression.")
    react = ofrep(FLAG.format("react_loop"), ctx("internal-a")).json()
    assert (react["value"], react["reason"], react["metadata"]["rolloutStatus"], react["metadata"]["phase"]) == (
        False,
        "DISABLED",
        "rolled_back",
        "canary",
    )
    fallback = ofrep(FLAG.format("agent_v1_fallback"), ctx("internal-a")).json()
    assert (fallback["value"], fallback["reason"], fallback["variant"]) == (True, "TARGETING_MATCH", "on")


def test_an_unknown_tenant_gets_every_flag_off_by_default(ofrep, canary):
    body = ofrep(FLAG.format("react_loop"), ctx("no-such-tenant")).json()
    assert body == {
        "key": "react_loop",
        "value": False,
        "reason": "DEFAULT",
        "variant": "off",
        "metadata": {"tenantKnown": False},
    }
    bulk = ofrep(BULK, ctx("no-such-tenant")).json()
    assert [(f["key"], f["value"], f["reason"]) for f in bulk["flags"]] == [
        (key, False, "DEFAULT") for key in FlagKey.values
    ]


def test_a_rollout_in_progress_governs_before_a_draft_and_a_completed_one(ofrep, canary, users, tenants):
    """The governing rule of the README: in progress/rolled back > completed > draft > cancelled, then newest."""
    admin = users[Role.ROLLOUT_ADMIN]
    draft = services.rollout_create_from_playbook(name="Later wave", owner=admin)  # newer, every tenant a member
    assert draft.status == RolloutStatus.DRAFT
    body = ofrep(FLAG.format("react_loop"), ctx("internal-a")).json()
    assert (body["value"], body["metadata"]["rollout"]) == (True, canary.slug)
    # A completed rollout had everything on; the one in progress decides while it runs.
    done = services.rollout_create_from_playbook(name="Earlier wave", owner=admin)
    advance_to(done, PhaseKind.GENERAL_AVAILABILITY, admin)
    services.rollout_advance(rollout=done, to="completed", actor=admin, reason="GA done")
    assert ofrep(FLAG.format("react_loop"), ctx("beta-a")).json()["metadata"]["rollout"] == canary.slug
    assert ofrep(FLAG.format("react_loop"), ctx("beta-a")).json()["value"] is False
    # Once the one in progress is cancelled, the completed rollout governs: a static value.
    services.rollout_cancel(rollout=canary, actor=admin, reason="Superseded.")
    body = ofrep(FLAG.format("react_loop"), ctx("beta-a")).json()
    assert (body["value"], body["reason"], body["metadata"]["rollout"]) == (True, "STATIC", done.slug)
    # A draft ranks above a cancelled rollout: off, by default.
    Rollout.objects.filter(pk=done.pk).update(status=RolloutStatus.CANCELLED)  # test data: no service cancels GA
    body = ofrep(FLAG.format("react_loop"), ctx("beta-a")).json()
    assert (body["value"], body["reason"], body["metadata"]["rollout"]) == (False, "DEFAULT", draft.slug)


# --- Errors, exactly as OFREP has them ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "PARSE_ERROR"),
        ("[1, 2]", 400, "PARSE_ERROR"),
        ({}, 400, "TARGETING_KEY_MISSING"),
        ({"context": {}}, 400, "TARGETING_KEY_MISSING"),
        ({"context": {"targetingKey": ""}}, 400, "TARGETING_KEY_MISSING"),
        ({"context": "internal-a"}, 400, "INVALID_CONTEXT"),
        ({"context": {"targetingKey": 7}}, 400, "INVALID_CONTEXT"),
    ],
)
def test_bad_requests_are_ofrep_errors_never_a_200(ofrep, canary, body, status, code):
    single = ofrep(FLAG.format("react_loop"), body)
    assert single.status_code == status and single["Content-Type"] == "application/json"
    assert single.json()["key"] == "react_loop" and single.json()["errorCode"] == code
    assert single.json()["errorDetails"]
    bulk = ofrep(BULK, body)
    assert bulk.status_code == status and set(bulk.json()) == {"errorCode", "errorDetails"}
    assert bulk.json()["errorCode"] == code


def test_an_unknown_flag_is_flag_not_found(ofrep, canary):
    response = ofrep(FLAG.format("teleporter"), ctx("internal-a"))
    assert response.status_code == 404
    assert response.json() == {
        "key": "teleporter",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "No flag 'teleporter'.",
    }


def test_a_non_json_content_type_is_a_parse_error(client, token, canary):
    raw = token("flags")
    response = client.post(
        BULK, "targetingKey=internal-a", content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert response.status_code == 400 and response.json()["errorCode"] == "PARSE_ERROR"


def test_tokens_need_the_flags_scope_and_refusals_are_recorded(client, token, canary):
    body = json.dumps(ctx("internal-a"))
    anonymous = client.post(BULK, body, content_type="application/json")
    assert anonymous.status_code == 401 and anonymous["Content-Type"] == "application/json"
    assert set(anonymous.json()) == {"errorDetails"} and anonymous["WWW-Authenticate"] == 'Bearer realm="api"'
    read = token("read")
    refused = client.post(BULK, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {read}")
    assert refused.status_code == 403 and refused.json() == {"errorDetails": "This token lacks the 'flags' scope."}
    denials = AuditEvent.objects.filter(action="auth.api_denied").order_by("sequence")
    assert [(e.after or {}).get("status") for e in denials] == [401, 403]


def test_over_the_rate_a_429_with_retry_after_in_seconds(client, token, canary, settings):
    settings.API_THROTTLE_RATE_TOKEN = "2/min"
    raw = token("flags")
    answers = [
        client.post(
            BULK, json.dumps(ctx("internal-a")), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
        )
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 1 <= int(answers[2]["Retry-After"]) <= 60
    assert set(answers[2].json()) == {"errorDetails"}


# --- Bulk evaluation: ETag and If-None-Match ---------------------------------------------------------------------


def test_bulk_has_an_etag_and_answers_304_until_the_tenants_flags_change(ofrep, canary, users):
    first = ofrep(BULK, ctx("internal-a"))
    assert first.status_code == 200
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert [f["key"] for f in first.json()["flags"]] == FlagKey.values
    assert {f["key"]: f["value"] for f in first.json()["flags"]} == {
        "react_loop": True,
        "multi_agent_runner": True,
        "critic_revision": True,
        "voice_insights": True,
        "agent_v1_fallback": False,
    }
    again = ofrep(BULK, ctx("internal-a"), HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert ofrep(BULK, ctx("internal-a"), HTTP_IF_NONE_MATCH=f'"other", W/{etag}').status_code == 304
    assert ofrep(BULK, ctx("internal-a"), HTTP_IF_NONE_MATCH="*").status_code == 304
    # Another tenant has another state, hence another tag.
    assert ofrep(BULK, ctx("beta-a"), HTTP_IF_NONE_MATCH=etag).status_code == 200
    services.kill_switch_set(rollout=canary, on=True, actor=users[Role.ROLLOUT_ADMIN], reason="Refund regression.")
    changed = ofrep(BULK, ctx("internal-a"), HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert {f["key"]: f["value"] for f in changed.json()["flags"]}["agent_v1_fallback"] is True


# --- Queries -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rollouts", [1, 4])
def test_tenant_flags_reads_a_fixed_number_of_queries(canary, users, rollouts):
    admin = users[Role.ROLLOUT_ADMIN]
    for i in range(rollouts - 1):
        advance_to(services.rollout_create_from_playbook(name=f"Wave {i}", owner=admin), PhaseKind.LIMITED_BETA, admin)
    with CaptureQueriesContext(connection) as queries:
        flags = tenant_flags("internal-a")
    assert len(queries) == 5
    assert flags["react_loop"].value is True
    with CaptureQueriesContext(connection) as queries:
        tenant_flags("nobody")
    assert len(queries) == 1
