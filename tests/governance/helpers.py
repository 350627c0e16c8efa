"""Builders shared by the governance tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from governance import services
from governance.models import AuditEvent, Decision, TransitionRequest
from rollout.roles import LEAD_ROLES

# Tests with real threads need committed data. The flush after each of them also
# empties the role groups the data migrations laid down; the ``role_groups``
# fixture (tests/conftest.py, used by ``users``) puts them back.
threaded = pytest.mark.django_db(transaction=True)


def sign_all(rollout, users, roles=LEAD_ROLES) -> None:
    for role in roles:
        services.plan_sign_off(
            rollout=rollout, role=role, decision=Decision.APPROVE, comment="", actor=users[str(role)]
        )


def approve(request: TransitionRequest, users, roles=None) -> TransitionRequest:
    from governance.selectors import approver_config

    for role in roles or approver_config(request.rollout)[request.target]:
        services.transition_decide(
            request=request, role=role, decision=Decision.APPROVE, comment="ok", actor=users[str(role)]
        )
    request.refresh_from_db()
    return request


class Snapshot:
    """Row counts of everything a governance rule could write, to prove a refusal wrote nothing."""

    def __init__(self):
        from governance.models import ApprovingRole, PlanSignOff, TransitionApproval
        from rollout.models import Phase, Rollout

        self.models = [
            AuditEvent,
            PlanSignOff,
            PlanSignOff.history.model,
            TransitionRequest,
            TransitionRequest.history.model,
            TransitionApproval,
            TransitionApproval.history.model,
            ApprovingRole,
            ApprovingRole.history.model,
            Rollout.history.model,
            Phase.history.model,
        ]
        self.counts = self.take()

    def take(self) -> dict[str, int]:
        return {m.__name__: m.objects.count() for m in self.models}

    def unchanged(self) -> bool:
        return self.take() == self.counts


def run_threads(n: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``n`` real threads released together; returns results or exceptions, in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = target(i)
        except Exception as exc:  # collected for the test to inspect
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def disable_ledger_guard() -> None:
    """Tests that tamper with the ledger must switch the append-only trigger off themselves."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE governance_auditevent DISABLE TRIGGER audit_ledger_append_only")


def enable_ledger_guard() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE governance_auditevent ENABLE TRIGGER audit_ledger_append_only")
