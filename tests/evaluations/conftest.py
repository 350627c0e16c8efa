"""Fixtures of the evaluations tests: a rollout in canary, API tokens, run payloads."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from django.utils import timezone

from evaluations import services
from rollout.roles import Role
from tests.factories import advance_to, complete_readiness

_ids = itertools.count(1)


@pytest.fixture
def admin(users):
    return users[Role.ROLLOUT_ADMIN]


@pytest.fixture
def canary(rollout, admin):
    """The rollout fixture, readiness done, in canary (entered just now)."""
    complete_readiness(rollout, admin)
    return advance_to(rollout, "canary", admin)


def run(rollout_slug: str, *, phase: str = "canary", arm: str = "candidate", **overrides: Any) -> dict[str, Any]:
    """A valid run object as the harness sends it; ``finished_at`` defaults to a moment ago."""
    finished = overrides.pop("finished", None) or timezone.now() - dt.timedelta(seconds=1)
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


@pytest.fixture
def token(db):
    """``token("ingest", "read")`` -> the raw bearer token."""

    def create(*scopes: str, **kwargs: Any) -> str:
        _obj, raw = services.api_token_create(
            name=f"t{next(_ids)}", scopes=list(scopes) or ["ingest", "read"], actor=None, **kwargs
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
