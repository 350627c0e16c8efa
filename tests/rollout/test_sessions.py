"""A login's idle timeout and absolute lifetime (SESSION_IDLE_TIMEOUT_SECONDS, SESSION_ABSOLUTE_LIFETIME_SECONDS)."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from rollout import middleware
from rollout.roles import Role


class Clock:
    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(1_800_000_000.0)
    monkeypatch.setattr(middleware.time, "time", clock)
    return clock


@pytest.fixture
def logged_in(client, users, clock):
    client.post("/login/", {"username": Role.AUDITOR.value, "password": "pw"})
    assert client.get("/").status_code == 200
    return client


def test_defaults_are_8_hours_idle_and_24_hours_absolute():
    assert django_settings.SESSION_IDLE_TIMEOUT_SECONDS == 8 * 3600
    assert django_settings.SESSION_ABSOLUTE_LIFETIME_SECONDS == 24 * 3600
    assert django_settings.SESSION_COOKIE_AGE == 24 * 3600


def test_a_request_within_the_idle_timeout_keeps_the_login(logged_in, clock):
    clock.now += 8 * 3600 - 1
    assert logged_in.get("/").status_code == 200
    clock.now += 8 * 3600 - 1  # idle counted from the last request, not from the login
    assert logged_in.get("/").status_code == 200


def test_idle_timeout_logs_out_and_sends_to_the_login_page(logged_in, clock):
    clock.now += 8 * 3600
    response = logged_in.get("/audit/")
    assert (response.status_code, response["Location"]) == (302, "/login/?next=/audit/")
    clock.now += 1
    assert logged_in.get("/").status_code == 302  # the session is gone, not just this request
    assert "_auth_user_id" not in logged_in.session


def test_absolute_lifetime_ends_an_active_login(logged_in, clock):
    for _ in range(23):
        clock.now += 3600
        assert logged_in.get("/").status_code == 200
    clock.now += 3600  # 24 h after the login, though the last request was an hour ago
    response = logged_in.get("/")
    assert (response.status_code, response["Location"]) == (302, "/login/?next=/")


def test_the_timeouts_are_settings(logged_in, clock, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 600
    clock.now += 599
    assert logged_in.get("/").status_code == 200
    clock.now += 600
    assert logged_in.get("/").status_code == 302


def test_a_new_login_starts_a_new_lifetime(client, users, clock):
    client.post("/login/", {"username": Role.AUDITOR.value, "password": "pw"})
    clock.now += 20 * 3600
    client.post("/logout/")
    client.post("/login/", {"username": Role.AUDITOR.value, "password": "pw"})
    clock.now += 5 * 3600
    assert client.get("/").status_code == 200
