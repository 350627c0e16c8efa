"""Fixtures for the governance tests; builders live in ``helpers.py``."""

from __future__ import annotations

import pytest

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
