"""Shared fixtures and the rules for tests that need PostgreSQL or Redis.

A test marked ``postgres`` or ``redis`` is skipped locally when the service is
not configured, and fails (never skips) in CI (``CI=true``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.utils import timezone

from rollout.roles import Role

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _redis_available() -> bool:
    url = os.environ.get("REDIS_URL") or ""
    if not url.startswith("redis"):
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    missing = []
    if item.get_closest_marker("postgres") and not settings.USING_POSTGRES:
        missing.append("PostgreSQL (set DATABASE_URL=postgres://...)")
    if item.get_closest_marker("redis") and not _redis_available():
        missing.append("Redis (set REDIS_URL / CELERY_BROKER_URL=redis://...)")
    if missing:
        message = "needs " + " and ".join(missing)
        if IN_CI:
            pytest.fail(f"{message}: in CI this is a failure, not a skip", pytrace=False)
        pytest.skip(message)


def _force_login_authenticates(sender, request, user, **kwargs) -> None:
    """The test client's ``force_login`` skips allauth's login flow, which records that the user authenticated
    (by password) at that moment. Record it the same way, so a forced login counts as a login for the
    re-authentication before a decision (rollout/auth.py), as a real one does. A real login has its records already."""
    from allauth.account.internal.flows.login import get_authentication_records, record_authentication

    if request is not None and hasattr(request, "session") and not get_authentication_records(request, user):
        record_authentication(request, user, method="password", username=user.get_username())


@pytest.fixture(autouse=True, scope="session")
def _forced_logins_authenticate():
    from django.contrib.auth.signals import user_logged_in

    user_logged_in.connect(_force_login_authenticates, dispatch_uid="tests-force-login-authenticates")
    yield
    user_logged_in.disconnect(dispatch_uid="tests-force-login-authenticates")


@pytest.fixture(autouse=True)
def _fresh_throttle_keys(settings) -> None:
    """Each test starts with empty API throttle budgets: its own key prefix in the shared cache (no clear(),
    which would also empty what other xdist workers keep in the same Redis database)."""
    settings.API_THROTTLE_KEY_PREFIX = f"rgd-test-throttle-{uuid.uuid4().hex}"


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL on a loopback port nobody listens on: the cache is down."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def make_user(username: str, *roles: str, **extra):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=username, password="pw", **extra)
    if roles:
        user.groups.add(*Group.objects.filter(name__in=[str(r) for r in roles]))
    return user


@pytest.fixture(scope="session")
def role_group_snapshot(django_db_setup, django_db_blocker) -> dict[str, list[tuple[str, str]]]:
    """The role groups and their permissions as the data migrations created them."""
    with django_db_blocker.unblock():
        return {
            group.name: list(group.permissions.values_list("content_type__app_label", "codename"))
            for group in Group.objects.prefetch_related("permissions")
        }


@pytest.fixture
def role_groups(db, role_group_snapshot) -> None:
    """Make sure the role groups exist.

    A ``transaction=True`` test ends with a flush that empties every table; Django's
    post_migrate brings the permissions back but not the groups the data migrations
    made, so later tests on the same worker restore them from the snapshot.
    """
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.management import create_contenttypes

    if Group.objects.count() >= len(role_group_snapshot):
        return
    for app_config in apps.get_app_configs():
        create_contenttypes(app_config, verbosity=0)
        create_permissions(app_config, verbosity=0)
    perms = {(p.content_type.app_label, p.codename): p for p in Permission.objects.select_related("content_type")}
    for name, codenames in role_group_snapshot.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set([perms[key] for key in codenames])


@pytest.fixture
def users(role_groups) -> dict[str, object]:
    """One user per role, named after the role's group."""
    return {role.value: make_user(role.value, role.value) for role in Role}


@pytest.fixture
def admin_user_(users):
    return users[Role.ROLLOUT_ADMIN]


@pytest.fixture
def tenants(db):
    from tests.factories import default_tenants

    return default_tenants()


@pytest.fixture
def rollout(users, tenants):
    from rollout.services import rollout_create_from_playbook

    # Created (preparation entered) a month ago, so a phase can be entered days back and carry older runs.
    return rollout_create_from_playbook(
        name="ReAct rollout", owner=users[Role.ROLLOUT_ADMIN], now=timezone.now() - dt.timedelta(days=30)
    )


@pytest.fixture
def client_for(client, users):
    """``client_for("auditor")`` gives a test client logged in as that role's user."""

    def login(role: str):
        client.force_login(users[str(role)])
        return client

    return login


@pytest.fixture
def browser_page(live_server):
    """A Playwright page on Debian's chromium, its base URL the live server."""
    from tests.browser import browser_page as open_page

    with open_page(live_server.url) as page:
        yield page


_token_names = itertools.count(1)


@pytest.fixture
def token(db):
    """``token("ingest", "read")`` -> the raw bearer token."""

    from evaluations.services import api_token_create

    def create(*scopes: str, **kwargs: Any) -> str:
        _obj, raw = api_token_create(
            name=f"t{next(_token_names)}", scopes=list(scopes) or ["ingest", "read"], actor=None, **kwargs
        )
        return raw

    return create


@pytest.fixture
def api(client, token):
    """A test client speaking to the API with a token of both scopes."""
    raw = token("ingest", "read")

    class Api:
        auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

        def post(self, path: str, body: Any, **extra: Any):
            return client.post(path, body, content_type="application/json", **{**self.auth, **extra})

        def get(self, path: str, **extra: Any):
            return client.get(path, **{**self.auth, **extra})

    return Api()


class CapturingHandler(logging.Handler):
    """A log handler with the project's request-id filter, as config.settings.LOGGING's console handler has."""

    def __init__(self):
        from rollout.context import RequestIdLogFilter

        super().__init__(level=logging.ERROR)
        self.addFilter(RequestIdLogFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def error_log():
    """ERROR records logged while the test runs, each with the ``request_id`` the settings' filter adds."""
    from django.conf import settings

    assert settings.LOGGING["handlers"]["console"]["filters"] == ["request_id"]
    assert "%(request_id)s" in settings.LOGGING["formatters"]["plain"]["format"]
    handler = CapturingHandler()
    logging.getLogger().addHandler(handler)
    yield handler.records
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="session")
def oidc_provider():
    """The test identity provider (tests/oidc/provider.mjs, a real oidc-provider) on a free loopback port, for the
    session of this worker; stopped at its end."""
    from tests.oidc import op

    provider = op.start()
    yield provider
    provider.stop()
    provider.log_path.unlink(missing_ok=True)
