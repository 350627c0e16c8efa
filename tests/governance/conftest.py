"""Fixtures for the governance tests; builders live in ``helpers.py``."""

from __future__ import annotations

import pytest
from django.db import connections

from governance import services
from governance.models import TransitionRequest
from rollout.roles import Role
from tests.factories import complete_readiness

from .helpers import approve, sign_all


@pytest.fixture
def ready_rollout(rollout, users):
    """A rollout in preparation whose canary gates pass: readiness complete, plan signed by the four leads."""
    complete_readiness(rollout, users[Role.ROLLOUT_ADMIN])
    sign_all(rollout, users)
    return rollout


@pytest.fixture
def canary_request(ready_rollout, users) -> TransitionRequest:
    return services.transition_request_create(
        rollout=ready_rollout, justification="Readiness done, plan signed.", actor=users[Role.ROLLOUT_ADMIN]
    )


@pytest.fixture
def approved_canary(canary_request, users) -> TransitionRequest:
    return approve(canary_request, users)


BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(live_server):
    """A Playwright page on Debian's chromium (``CHROMIUM_PATH``); Playwright's own download is not used."""
    import os
    import shutil

    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's ORM calls are still synchronous.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    executable = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            browser.close()
            # Inside sync_playwright() Django's context-local connection storage gives the test another
            # connection than the one pytest-django closes; left open, the test database cannot be dropped.
            connections.close_all()
