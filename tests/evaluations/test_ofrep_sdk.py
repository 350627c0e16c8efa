"""The real OpenFeature SDK (``openfeature-sdk`` + ``openfeature-provider-ofrep``) against a live server on loopback.

For every tenant of the demo, the SDK's value must equal ``GET /api/v1/rollouts/<slug>/flags/`` of the rollout
that governs it: as seeded (canary), after a phase apply (limited beta), after a rollback and after the kill
switch. The changes go through the services, committed, so the live server's threads see them.
"""

from __future__ import annotations

import itertools

import pytest
import requests
from django.core.management import call_command
from openfeature import api as openfeature_api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from rollout import services
from rollout.demo import MAIN_SLUG, TENANTS
from rollout.models import FlagKey, PhaseKind, Rollout

pytestmark = pytest.mark.django_db(transaction=True)

_domains = itertools.count(1)


@pytest.fixture
def world(role_groups, token, live_server):
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115 - the command's chatter
    flags_token, read_token = token("flags"), token("read")
    domain = f"rgd-{next(_domains)}"
    provider = OFREPProvider(live_server.url, headers_factory=lambda: {"Authorization": f"Bearer {flags_token}"})
    openfeature_api.set_provider(provider, domain=domain)
    client = openfeature_api.get_client(domain)

    def flags_api(slug: str) -> dict:
        response = requests.get(
            f"{live_server.url}/api/v1/rollouts/{slug}/flags/",
            headers={"Authorization": f"Bearer {read_token}"},
            timeout=10,
        )
        assert response.status_code == 200
        return response.json()

    yield {"client": client, "flags_api": flags_api, "url": live_server.url, "token": flags_token}
    openfeature_api.clear_providers()


def check_every_tenant(world) -> dict[tuple[str, str], bool]:
    """The SDK's value of every flag for every demo tenant equals the flags API; returns the values."""
    state = world["flags_api"](MAIN_SLUG)
    seen: dict[tuple[str, str], bool] = {}
    for cohort in state["cohorts"]:
        for tenant in cohort["tenants"]:
            for key, expected in tenant["flags"].items():
                details = world["client"].get_boolean_details(
                    key, not expected, EvaluationContext(targeting_key=tenant["tenant"])
                )
                assert details.error_code is None, (tenant["tenant"], key, details.error_message)
                assert details.value is expected, (tenant["tenant"], key)
                assert details.variant == ("on" if expected else "off")
                assert details.flag_metadata["rollout"] == MAIN_SLUG
                assert details.flag_metadata["cohort"] == cohort["cohort"]
                seen[(tenant["tenant"], key)] = expected
    # Every demo tenant, every flag.
    assert {t for t, _ in seen} == {name.lower().replace(" ", "-") for name, *_ in TENANTS}
    assert len(seen) == len(TENANTS) * len(FlagKey.values)
    return seen


def on_for(values: dict[tuple[str, str], bool], key: str) -> set[str]:
    return {t for (t, k), v in values.items() if k == key and v}


def test_the_sdk_reads_what_the_flags_api_says_through_apply_rollback_and_kill_switch(world):
    main = Rollout.objects.get(slug=MAIN_SLUG)
    internal = {"acme-internal-qa", "support-sandbox"}
    beta = {"northwind-health", "globex-retail", "initech-finance"}

    seeded = check_every_tenant(world)
    assert on_for(seeded, "react_loop") == internal
    assert on_for(seeded, "voice_insights") == {"acme-internal-qa"}  # the only internal tenant with ingestion
    reason = world["client"].get_boolean_details("react_loop", False, EvaluationContext(targeting_key="stark-media"))
    assert reason.reason == Reason.TARGETING_MATCH

    services.rollout_advance(rollout=main, to=PhaseKind.LIMITED_BETA, actor=None, reason="Test: beta starts")
    applied = check_every_tenant(world)
    assert on_for(applied, "react_loop") == internal | beta

    services.rollout_rollback(rollout=main, actor=None, reason="Test: refund regression")
    rolled_back = check_every_tenant(world)
    assert on_for(rolled_back, "react_loop") == set()
    assert on_for(rolled_back, "agent_v1_fallback") == internal | beta
    details = world["client"].get_boolean_details("react_loop", True, EvaluationContext(targeting_key="globex-retail"))
    assert (details.value, details.reason) == (False, Reason.DISABLED)

    services.rollout_resume(rollout=main, actor=None, reason="Test: fixed")
    services.kill_switch_set(rollout=main, on=True, actor=None, reason="Test: break glass")
    killed = check_every_tenant(world)
    assert on_for(killed, "agent_v1_fallback") == {t for t, _ in killed}
    assert on_for(killed, "react_loop") == internal | beta


def test_the_sdk_gets_ofrep_errors_as_openfeature_errors(world, settings):
    client = world["client"]
    unknown = client.get_boolean_details("teleporter", True, EvaluationContext(targeting_key="stark-media"))
    assert (unknown.value, unknown.error_code, unknown.reason) == (True, ErrorCode.FLAG_NOT_FOUND, Reason.ERROR)
    missing = client.get_boolean_details("react_loop", True, EvaluationContext())
    assert (missing.value, missing.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)
    nobody = client.get_boolean_details("react_loop", True, EvaluationContext(targeting_key="no-such-tenant"))
    assert (nobody.value, nobody.reason, nobody.error_code) == (False, Reason.DEFAULT, None)

    # Bulk through a real server: the ETag survives the trip and If-None-Match answers 304.
    headers = {"Authorization": f"Bearer {world['token']}"}
    body = {"context": {"targetingKey": "acme-internal-qa"}}
    first = requests.post(f"{world['url']}/ofrep/v1/evaluate/flags", json=body, headers=headers, timeout=10)
    assert first.status_code == 200 and len(first.json()["flags"]) == len(FlagKey.values)
    again = requests.post(
        f"{world['url']}/ofrep/v1/evaluate/flags",
        json=body,
        headers={**headers, "If-None-Match": first.headers["ETag"]},
        timeout=10,
    )
    assert (again.status_code, again.content) == (304, b"")

    # Over the token's rate: the provider reads Retry-After and pauses itself.
    settings.API_THROTTLE_RATE_TOKEN = "1/min"  # this token has made 5 requests in the last minute
    throttled = client.get_boolean_details("react_loop", False, EvaluationContext(targeting_key="stark-media"))
    assert throttled.error_code == ErrorCode.GENERAL and "Rate limited" in throttled.error_message
    paused = client.get_boolean_details("react_loop", False, EvaluationContext(targeting_key="stark-media"))
    assert paused.error_code == ErrorCode.GENERAL and "paused" in paused.error_message
