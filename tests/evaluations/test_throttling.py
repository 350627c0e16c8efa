"""API rate limits: per token, and per client address for requests without a valid token; 429 problem+json with
Retry-After; on Redis (and the file cache of the embedded default); open, and logged, when the cache is down."""

from __future__ import annotations

import logging

import pytest

from governance.models import AuditEvent, DenialWindow

pytestmark = pytest.mark.django_db


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        "file",
    ]
)
def throttle_cache(request, settings, tmp_path):
    """The default cache the throttles count on: the configured Redis, or the embedded default's file cache."""
    import os

    if request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": os.environ.get("REDIS_URL", ""),
            }
        }
    else:
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
        }
    return request.param


def assert_throttled(response, *, most: int) -> None:
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"], body["type"]) == (429, "throttled", "urn:rollout-dashboard:problem:throttled")
    assert 1 <= int(response["Retry-After"]) <= most


def test_a_token_gets_its_rate_then_429_with_retry_after(client, token, settings, throttle_cache):
    settings.API_THROTTLE_RATE_TOKEN = "5/min"
    raw, other = token("read"), token("read")
    for i in range(5):
        assert client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200, i
    assert_throttled(client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {raw}"), most=60)
    # The limit is the token's: the same address with another token is served.
    assert client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {other}").status_code == 200
    # ... and the token is limited from any address.
    assert_throttled(
        client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {raw}", REMOTE_ADDR="10.9.9.9"), most=60
    )


def test_bad_tokens_from_one_address_get_401s_then_429(client, token, settings, throttle_cache):
    settings.API_THROTTLE_RATE_ADDRESS = "4/min"
    for i in range(4):
        response = client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer guess-{i}")
        assert response.status_code == 401, i
    assert_throttled(client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION="Bearer guess-5"), most=60)
    assert_throttled(client.get("/api/v1/rollouts/"), most=60)  # no token at all counts the same
    # A valid token from that address is still served; another address still gets its 401s.
    assert client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {token('read')}").status_code == 200
    assert client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION="Bearer x", REMOTE_ADDR="10.8.8.8").status_code == 401
    # A forged X-Forwarded-For does not buy a fresh budget.
    forged = client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION="Bearer x", HTTP_X_FORWARDED_FOR="192.0.2.1")
    assert forged.status_code == 429


def test_throttled_requests_are_denials_in_the_ledger_aggregated(client, token, settings):
    settings.API_THROTTLE_RATE_TOKEN = "2/min"
    raw = token("read")
    start = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    statuses = [client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code for _ in range(12)]
    assert statuses == [200, 200] + [429] * 10
    [entry] = AuditEvent.objects.filter(sequence__gt=start)
    assert (entry.action, entry.actor_kind, entry.after["status"], entry.after["code"]) == (
        "auth.api_denied",
        "token",
        429,
        "throttled",
    )
    assert DenialWindow.objects.get().count == 10


def test_the_api_fails_open_and_logs_when_the_cache_is_down(client, token, settings, dead_redis_url, caplog):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead_redis_url}
    }
    settings.API_THROTTLE_RATE_TOKEN = "1/min"
    settings.API_THROTTLE_RATE_ADDRESS = "1/min"
    raw = token("read")
    with caplog.at_level(logging.WARNING, logger="evaluations.throttling"):
        for _ in range(3):
            assert client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
            assert client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION="Bearer bad").status_code == 401
    skipped = [r for r in caplog.records if r.name == "evaluations.throttling"]
    assert [r.getMessage() for r in skipped] == [
        "API throttle token skipped: the cache did not answer",
        "API throttle address skipped: the cache did not answer",
    ] * 3


def test_the_default_limits_are_the_documented_ones():
    from config import settings as real

    assert (real.API_THROTTLE_RATE_TOKEN, real.API_THROTTLE_RATE_ADDRESS) == ("1200/min", "30/min")
    assert (real.AXES_FAILURE_LIMIT, real.AXES_COOLOFF_TIME.total_seconds()) == (5, 900)
    assert real.AUDIT_DENIAL_WINDOW_SECONDS == 300
