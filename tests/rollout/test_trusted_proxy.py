"""Behind a TLS proxy the client's address comes from X-Forwarded-For, as many hops from the right as
TRUSTED_PROXY_COUNT says; with the default 0 the header is ignored."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory

from rollout.middleware import TrustedProxyMiddleware

pytestmark = pytest.mark.django_db


def seen_address(settings, count: int, forwarded: str | None, remote: str = "10.0.0.1") -> str:
    settings.TRUSTED_PROXY_COUNT = count
    seen = {}

    def view(request):
        seen["addr"] = request.META["REMOTE_ADDR"]
        return HttpResponse()

    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    TrustedProxyMiddleware(view)(RequestFactory().get("/", **extra))
    return seen["addr"]


def test_without_trusted_proxies_the_header_is_ignored(settings):
    assert seen_address(settings, 0, "203.0.113.9") == "10.0.0.1"


def test_one_proxy_takes_the_address_it_appended_not_what_the_client_wrote(settings):
    assert seen_address(settings, 1, "198.51.100.66, 203.0.113.9") == "203.0.113.9"
    assert seen_address(settings, 2, "198.51.100.66, 203.0.113.9, 192.0.2.4") == "203.0.113.9"


def test_a_shorter_chain_than_the_count_keeps_the_peer_address(settings):
    assert seen_address(settings, 2, "203.0.113.9") == "10.0.0.1"
    assert seen_address(settings, 1, None) == "10.0.0.1"


def test_behind_one_proxy_a_lockout_is_per_client_not_per_proxy(settings, users):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.AXES_FAILURE_LIMIT = 3
    attacker = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    for attempt in range(3):
        attacker.post("/login/", {"username": f"nobody-{attempt}", "password": "wrong"})
    assert attacker.post("/login/", {"username": "nobody-x", "password": "wrong"}).status_code == 429

    colleague = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.10")
    response = colleague.post("/login/", {"username": "rollout-admin", "password": "pw"})
    assert response.status_code == 302
    assert "_auth_user_id" in colleague.session
