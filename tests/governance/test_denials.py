"""Denied actions in the ledger: API 401/403, CSRF failures and rule refusals are recorded, and a burst from one
source is one entry per window plus one summary with the count."""

from __future__ import annotations

import datetime as dt

import pytest
from django.apps import apps
from django.test import Client

from governance import denials, ledger, services, tasks
from governance.models import AuditEvent, DenialWindow, PlanSignOff, TransitionApproval
from governance.selectors import transition_view
from rollout.roles import Role
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

ADMIN = Role.ROLLOUT_ADMIN
# What a denial may write: its ledger entry, its window's counter, axes' attempt records.
DENIAL_BOOKKEEPING = {"governance.auditevent", "governance.denialwindow"}


def top() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


def new_since(sequence: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence"))


def row_counts() -> dict[str, int]:
    """Rows of every model of the project and of auth, but the denial bookkeeping."""
    return {
        model._meta.label_lower: model.objects.count()
        for model in apps.get_models()
        if model._meta.app_label in {"rollout", "evaluations", "governance", "auth", "sessions"}
        and model._meta.label_lower not in DENIAL_BOOKKEEPING
    }


class Clock:
    """Moves ``governance.denials.clock``: the start of a window, then any number of seconds after it."""

    def __init__(self, monkeypatch):
        seconds = denials.window_seconds()
        now = int(dt.datetime.now(dt.UTC).timestamp())
        self.start = dt.datetime.fromtimestamp(now - now % seconds, tz=dt.UTC)
        self.offset = 10.0
        monkeypatch.setattr(denials, "clock", lambda: self.start + dt.timedelta(seconds=self.offset))

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


# --- Rule refusals raised by services, through the pages ----------------------------------------------------------


def test_a_lead_deciding_for_a_role_they_do_not_hold_is_recorded_and_changes_nothing(canary_request, client_for):
    client = client_for(Role.SUPPORT_LEAD)
    url = f"/rollouts/{canary_request.rollout.slug}/transitions/{canary_request.pk}/decide/"
    start, before = top(), row_counts()
    version = transition_view(canary_request).version
    response = client.post(url, {"role": "product-lead", "decision": "approve", "comment": "ok", "version": version})
    assert response.status_code == 302
    [entry] = new_since(start)
    assert (entry.action, entry.actor_kind, entry.actor_name) == ("auth.rule_refused", "user", "support-lead")
    assert entry.rollout_id == canary_request.rollout_id
    assert entry.after == {
        "method": "POST",
        "path": url,
        "view": "governance:transition_decide",
        "code": "not-in-role",
        "error": "NotInRole",
        "message": entry.after["message"],
    }
    assert entry.reason == "Only a member of the role's group decides for it"
    assert row_counts() == before
    assert not TransitionApproval.objects.exists()


def test_a_requester_approving_their_own_request_is_recorded_and_changes_nothing(ready_rollout, client):
    both = make_user("admin-product", ADMIN, Role.PRODUCT_LEAD)
    request = services.transition_request_create(rollout=ready_rollout, justification="x", actor=both)
    client.force_login(both)
    start, before = top(), row_counts()
    response = client.post(
        f"/rollouts/{ready_rollout.slug}/transitions/{request.pk}/decide/",
        {"role": "product-lead", "decision": "approve", "comment": "mine", "version": transition_view(request).version},
    )
    assert response.status_code == 302
    [entry] = new_since(start)
    assert (entry.action, entry.actor_name, entry.after["code"], entry.after["error"]) == (
        "auth.rule_refused",
        "admin-product",
        "self-approval-forbidden",
        "SelfApprovalForbidden",
    )
    assert row_counts() == before


def test_a_refusal_raised_outside_a_request_records_nothing(canary_request, users):
    """A service called by a command or a task has no request: its caller reports the error, nothing is collected."""
    from governance.errors import NotInRole

    start = top()
    with pytest.raises(NotInRole):
        services.transition_decide(
            request=canary_request, role="product-lead", decision="approve", comment="", actor=users["support-lead"]
        )
    assert top() == start


# --- API 401 and 403 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "not-authenticated"),
        ({"HTTP_AUTHORIZATION": "Bearer not-a-token"}, 401, "invalid-token"),
        ({"HTTP_AUTHORIZATION": "Basic dXNlcjpwdw=="}, 401, "invalid-token"),
    ],
)
def test_api_401s_are_recorded_and_change_nothing(client, headers, status, code):
    start, before = top(), row_counts()
    response = client.post("/api/v1/monitoring-samples/", {"samples": []}, content_type="application/json", **headers)
    assert (response.status_code, response["Content-Type"], response.json()["code"]) == (
        status,
        "application/problem+json",
        code,
    )
    [entry] = new_since(start)
    assert (entry.action, entry.actor_kind, entry.actor_name) == ("auth.api_denied", "anonymous", "anonymous")
    assert entry.after == {
        "method": "POST",
        "path": "/api/v1/monitoring-samples/",
        "view": "api:monitoring-samples",
        "status": status,
        "code": code,
    }
    assert row_counts() == before
    assert DenialWindow.objects.get().source == "ip:127.0.0.1"


def test_an_api_403_is_recorded_with_the_token_as_actor(client, token):
    raw = token("read")
    start, before = top(), row_counts()
    response = client.post(
        "/api/v1/monitoring-samples/",
        {"samples": []},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert (response.status_code, response.json()["code"]) == (403, "insufficient-scope")
    [entry] = new_since(start)
    assert (entry.action, entry.actor_kind, entry.after["status"], entry.after["code"]) == (
        "auth.api_denied",
        "token",
        403,
        "insufficient-scope",
    )
    assert DenialWindow.objects.get().source == f"token:{entry.actor_token_id}"
    # last_used_at of the token is the one field a refused token may touch; nothing else changes.
    assert row_counts() == before


# --- CSRF ---------------------------------------------------------------------------------------------------------


def test_a_csrf_failure_is_recorded_and_changes_nothing(rollout, users):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users[Role.COMPLIANCE_LEAD])
    url = f"/rollouts/{rollout.slug}/sign-off/"
    start, before = top(), row_counts()
    response = client.post(url, {"role": "compliance-lead", "decision": "approve", "comment": "ok"})
    assert response.status_code == 403
    assert "CSRF check failed" in response.content.decode()
    [entry] = new_since(start)
    assert (entry.action, entry.actor_name, entry.rollout_id) == ("auth.csrf_failed", "compliance-lead", rollout.pk)
    assert entry.after == {"method": "POST", "path": url, "view": "governance:sign_off"}
    assert row_counts() == before
    assert not PlanSignOff.objects.exists()


# --- Aggregation per source, reason and window -------------------------------------------------------------------


def test_a_burst_of_denials_is_one_entry_per_window_and_one_summary_with_the_count(rollout, client_for, clock):
    client = client_for(Role.AUDITOR)
    url = f"/rollouts/{rollout.slug}/kill-switch/"
    start = top()
    for _ in range(25):
        assert client.get(url).status_code == 403
        clock.advance(1)
    [first] = new_since(start)
    assert (first.action, first.actor_name) == ("auth.permission_denied", "auditor")
    window = DenialWindow.objects.get()
    assert (window.count, window.reason, window.first_sequence) == (25, "permission-denied", first.sequence)

    clock.advance(denials.window_seconds())  # the next window
    assert client.get(url).status_code == 403
    summary, second = new_since(first.sequence)
    assert (summary.action, summary.actor_name, second.action) == (
        "audit.denials_repeated",
        "auditor",
        "auth.permission_denied",
    )
    assert summary.after == {
        "source": f"user:{first.actor_user_id}",
        "reason": "permission-denied",
        "action": "auth.permission_denied",
        "first_sequence": first.sequence,
        "window_start": ledger.format_at(clock.start),
        "window_end": ledger.format_at(clock.start + dt.timedelta(seconds=denials.window_seconds())),
        "count": 25,
        "repeated": 24,
        "last_at": summary.after["last_at"],
    }
    assert DenialWindow.objects.get().count == 1  # only the open window remains
    assert ledger.verify(ledger.database_records()).ok


def test_sources_and_reasons_are_counted_apart(rollout, client_for, client, clock):
    start = top()
    for role in (Role.AUDITOR, Role.PRODUCT_LEAD):
        logged_in = client_for(role)
        for _ in range(3):
            assert logged_in.get(f"/rollouts/{rollout.slug}/kill-switch/").status_code == 403
    client.logout()
    for address in ("10.0.0.1", "10.0.0.2"):
        for _ in range(3):
            assert client.get("/api/v1/rollouts/", REMOTE_ADDR=address).status_code == 401
    entries = new_since(start)
    assert [(e.action, e.actor_name) for e in entries] == [
        ("auth.permission_denied", "auditor"),
        ("auth.permission_denied", "product-lead"),
        ("auth.api_denied", "anonymous"),
        ("auth.api_denied", "anonymous"),
    ]
    assert sorted(DenialWindow.objects.values_list("source", "reason", "count")) == sorted(
        [
            ("ip:10.0.0.1", "api:not-authenticated", 3),
            ("ip:10.0.0.2", "api:not-authenticated", 3),
            (f"user:{entries[0].actor_user_id}", "permission-denied", 3),
            (f"user:{entries[1].actor_user_id}", "permission-denied", 3),
        ]
    )


def test_the_beat_task_summarises_closed_windows_once(rollout, client_for, clock):
    client = client_for(Role.AUDITOR)
    for _ in range(4):
        assert client.get(f"/rollouts/{rollout.slug}/kill-switch/").status_code == 403
    assert client_for(Role.SUPPORT_LEAD).get(f"/rollouts/{rollout.slug}/kill-switch/").status_code == 403
    start = top()
    assert tasks.summarise_denials() == 0  # the window is still open
    clock.advance(denials.window_seconds())
    assert tasks.summarise_denials() == 1  # the support lead's lone denial needs no summary
    [summary] = new_since(start)
    assert (summary.action, summary.actor_name, summary.after["count"]) == ("audit.denials_repeated", "auditor", 4)
    assert tasks.summarise_denials() == 0
    assert not DenialWindow.objects.exists()
    assert new_since(start) == [summary]
