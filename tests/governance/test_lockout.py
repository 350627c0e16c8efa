"""Brute force on the logins: django-axes locks a username and an address out after N failures, on /login/ and
/admin/login/, with a clear page and a cool-off; each lockout is a ledger entry."""

from __future__ import annotations

import datetime as dt

import pytest
from axes.models import AccessAttempt
from django.test import Client

from governance.models import AuditEvent

pytestmark = pytest.mark.django_db

LIMIT = 3
COOLOFF = dt.timedelta(minutes=15)


@pytest.fixture(autouse=True)
def lockout_settings(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = COOLOFF


def top() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


def new_since(sequence: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence"))


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_the_nth_wrong_password_locks_the_login_out_even_for_the_right_one(client, users, url):
    start = top()
    for attempt in range(1, LIMIT):
        response = client.post(url, {"username": "admin", "password": f"wrong-{attempt}"})
        assert response.status_code == 200, attempt
    response = client.post(url, {"username": "admin", "password": "wrong-last"})
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page and "Try again in 15 minutes" in page
    assert response["Retry-After"] == str(int(COOLOFF.total_seconds()))

    response = client.post(url, {"username": "admin", "password": "pw"})  # the right password, during the cool-off
    assert response.status_code == 429
    assert not logged_in(client)

    entries = new_since(start)
    assert [e.action for e in entries] == ["auth.login_failed", "auth.locked_out"]
    locked = entries[1]
    assert (locked.actor_kind, locked.object_repr) == ("anonymous", "admin")
    assert locked.after == {
        "username": "admin",
        "ip": "127.0.0.1",
        "failure_limit": LIMIT,
        "cooloff_seconds": int(COOLOFF.total_seconds()),
    }


def test_the_login_works_again_after_the_cool_off(client, users):
    for attempt in range(LIMIT):
        client.post("/login/", {"username": "auditor", "password": f"wrong-{attempt}"})
    assert client.post("/login/", {"username": "auditor", "password": "pw"}).status_code == 429
    # The cool-off has passed for the recorded failures.
    AccessAttempt.objects.update(attempt_time=dt.datetime.now(dt.UTC) - COOLOFF - dt.timedelta(seconds=1))
    response = client.post("/login/", {"username": "auditor", "password": "pw"})
    assert response.status_code == 302 and logged_in(client)


def test_a_username_is_locked_out_whatever_the_address(client, users):
    for attempt in range(LIMIT):
        client.post("/login/", {"username": "auditor", "password": "wrong"}, REMOTE_ADDR=f"10.0.0.{attempt + 1}")
    response = client.post("/login/", {"username": "auditor", "password": "pw"}, REMOTE_ADDR="10.0.0.99")
    assert response.status_code == 429
    # Another user from a fresh address is not affected.
    response = client.post("/login/", {"username": "sre-lead", "password": "pw"}, REMOTE_ADDR="10.0.0.98")
    assert response.status_code == 302


def test_an_address_is_locked_out_whatever_the_username(client, users):
    for name in ("auditor", "sre-lead", "product-lead"):
        client.post("/login/", {"username": name, "password": "wrong"}, REMOTE_ADDR="10.1.1.1")
    response = client.post("/login/", {"username": "support-lead", "password": "pw"}, REMOTE_ADDR="10.1.1.1")
    assert response.status_code == 429
    # A forged X-Forwarded-For does not make it another address.
    response = client.post(
        "/login/",
        {"username": "support-lead", "password": "pw"},
        REMOTE_ADDR="10.1.1.1",
        HTTP_X_FORWARDED_FOR="192.0.2.7",
    )
    assert response.status_code == 429


def test_attempts_during_the_lockout_are_counted_not_each_an_entry(client, users):
    start = top()
    for attempt in range(LIMIT + 20):
        client.post("/login/", {"username": "admin", "password": f"wrong-{attempt}"})
    assert [e.action for e in new_since(start)] == ["auth.login_failed", "auth.locked_out"]


def test_a_successful_login_below_the_limit_resets_the_count(client, users):
    for attempt in range(LIMIT - 1):
        client.post("/login/", {"username": "auditor", "password": f"wrong-{attempt}"})
    assert client.post("/login/", {"username": "auditor", "password": "pw"}).status_code == 302
    client.logout()
    for attempt in range(LIMIT - 1):
        assert client.post("/login/", {"username": "auditor", "password": f"again-{attempt}"}).status_code == 200


def test_logins_do_not_depend_on_the_cache(client, users, settings, dead_redis_url):
    """Lockouts live in the database: with the cache's Redis down a login still works and a lockout still holds."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead_redis_url}
    }
    for attempt in range(LIMIT):
        client.post("/login/", {"username": "auditor", "password": f"wrong-{attempt}"})
    assert client.post("/login/", {"username": "auditor", "password": "pw"}).status_code == 429
    assert client.post("/login/", {"username": "sre-lead", "password": "pw"}, REMOTE_ADDR="10.2.2.2").status_code == 302


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_browser_sees_the_lockout_page(role_groups, users, live_server, browser_page):
    page = browser_page
    for attempt in range(LIMIT):
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", "auditor")
        page.fill("input[name=password]", f"wrong-{attempt}")
        page.click("button[type=submit]")
    assert page.inner_text("h1") == "Too many failed logins"
    assert "Try again in 15 minutes" in page.inner_text("[role=alert]")
    # The right password during the cool-off is refused the same way.
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "auditor")
    page.fill("input[name=password]", "pw")
    page.click("button[type=submit]")
    assert page.inner_text("h1") == "Too many failed logins"
