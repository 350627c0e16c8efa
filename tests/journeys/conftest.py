"""The journeys' world: the demo data (``seed_demo``, as ``make run`` loads it) behind a live server on PostgreSQL,
and ``start(name, width=...)`` opening a checked browser journey (tests/browser.py: axe-core, request guard,
layout checks, screenshots under var/artifacts/journeys/<name>/)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.browser import journeys

# README screenshots (docs/screenshots/): scripts/readme-screenshots sets this to the folder to write them to.
README_SHOTS = os.environ.get("README_SCREENSHOTS")


@pytest.fixture
def demo(role_groups, live_server) -> str:
    """The demo data, committed where the live server's threads see it. Returns the live server's URL."""
    call_command("seed_demo", stdout=io.StringIO())
    return live_server.url


@pytest.fixture
def start(demo):
    with journeys(demo) as opener:
        yield opener


@pytest.fixture
def readme_shot():
    """``readme_shot(journey, "home")`` saves the README's screenshot when README_SCREENSHOTS is set."""

    def shoot(journey, name: str) -> Path | None:
        if not README_SHOTS:
            return None
        return journey.screenshot(name, full_page=False, path=Path(README_SHOTS) / f"{name}.png")

    return shoot
