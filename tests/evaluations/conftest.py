"""Fixtures of the evaluations tests: a rollout in canary, API tokens, run payloads."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from django.utils import timezone

from rollout.roles import Role
from tests.factories import advance_to, complete_readiness

_ids = itertools.count(1)


@pytest.fixture
def admin(users):
    return users[Role.ROLLOUT_ADMIN]


# When the ``canary`` fixture entered canary: runs may be dated up to this far back.
CANARY_ENTERED_DAYS_AGO = 10


@pytest.fixture
def canary(rollout, admin):
    """The rollout fixture, readiness done, in canary (entered ``CANARY_ENTERED_DAYS_AGO`` days ago)."""
    complete_readiness(rollout, admin)
    return advance_to(rollout, "canary", admin, at=timezone.now() - dt.timedelta(days=CANARY_ENTERED_DAYS_AGO))


@pytest.fixture
def live_canary(canary):
    """The canary, active since a day ago: files a tool wrote earlier in the session end inside its activity."""
    from tests.evaluations.import_tools import backdate_phase

    backdate_phase(canary, "canary")
    return canary


def run(rollout_slug: str, *, phase: str = "canary", arm: str = "candidate", **overrides: Any) -> dict[str, Any]:
    """A valid run object as the harness sends it; ``finished_at`` defaults to now (inside the period of a phase
    entered before the call)."""
    finished = overrides.pop("finished", None) or timezone.now()
    body = {
        "run_id": f"run-{next(_ids):06d}",
        "rollout": rollout_slug,
        "phase": phase,
        "arm": arm,
        "started_at": (finished - dt.timedelta(minutes=30)).isoformat(),
        "finished_at": finished.isoformat(),
        "conversations": 100,
        "guardrail_compensations": 2,
        "metrics": {"task_success_rate": 0.9, "latency_p95_ms": 1500.0},
        "harness_version": "h-1",
    }
    body.update(overrides)
    return body


@pytest.fixture
def make_run():
    return run
