"""The rollout page's checklist, flag and history rows drawn in one pass equal the template loops they replaced.

``rollout_rows_reference.html`` keeps those loops (``rollout/_checklist.html``'s body and the page's flag and
history loops) as they were; both are rendered with the same varied data, permissions and zones.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.context_processors import PermWrapper
from django.template import Context, Template
from django.utils import timezone

from rollout.models import ChecklistItem, Cohort, FeatureFlag, RolloutStatus
from rollout.roles import Role
from rollout.selectors import FlagRow

REFERENCE = (Path(__file__).parent / "rollout_rows_reference.html").read_text()
NEW = (
    '{% load rollout_page %}<section id="checklist">{% include "rollout/_checklist.html" %}</section>'
    '<section id="flags"><table><tbody>{% flag_rows d.flag_rows %}</tbody></table></section>'
    '<section id="history"><ul>{% history_entries d.history %}</ul></section>'
)


def _normalised(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r">\s+<", "><", html)).strip()


def _data(rollout) -> dict:
    at = dt.datetime(2026, 11, 30, 23, 59, 58, tzinfo=dt.UTC)
    User = get_user_model()
    zoe = User(username='zoë <b>"x"</b>')
    nameless = User(username="")
    odd = 'Sign-off & <review> "quoted" é'
    items = [
        ChecklistItem(
            pk=11,
            key="legal-sign-off",
            title=odd,
            evidence_url="https://e.example/a?b=1&c='2'",
            completed_by=zoe,
            completed_at=at,
        ),
        ChecklistItem(pk=12, key="runbook", title="Runbook", evidence_url="", completed_by=None, completed_at=at),
        ChecklistItem(
            pk=13,
            key="no-url",
            title="No evidence",
            evidence_url="",
            completed_by=nameless,
            completed_at=at - dt.timedelta(days=40, minutes=7),
        ),
        ChecklistItem(
            pk=14,
            key="open-with-url",
            title="Open <one>",
            evidence_url="https://x.example/",
            completed_by=None,
            completed_at=None,
        ),
        ChecklistItem(pk=1234567, key="open", title="", evidence_url="", completed_by=None, completed_at=None),
    ]
    cohorts = [Cohort(pk=1, kind="pilot", name="Pilot"), Cohort(pk=2, kind="early", name="Early <&>")]
    flag_rows = [
        FlagRow(flag=FeatureFlag(pk=1, key="agent_v1_fallback"), cells=[(cohorts[0], 3, 12), (cohorts[1], 0, 1234567)]),
        FlagRow(flag=FeatureFlag(pk=2, key="voice_insights"), cells=[(cohorts[0], 0, 0), (cohorts[1], 1500, 2000)]),
        FlagRow(flag=FeatureFlag(pk=3, key='x<&>"'), cells=[]),
    ]
    long = "e\u0301" * 50 + ' <b>"why"</b> & ' + "x" * 100
    history = [
        {"at": at, "model": "Checklist item", "object": odd, "type": "changed", "user": "mia <m>", "reason": long},
        {
            "at": at - dt.timedelta(hours=5),
            "model": "Rollout",
            "object": None,
            "type": "created",
            "user": "system",
            "reason": "",
        },
        {"at": at, "model": "Flag exposure", "object": 42, "type": "deleted", "user": "", "reason": "e\u0301 short"},
        {
            "at": dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC),
            "model": "Phase",
            "object": "Canary",
            "type": "changed",
            "user": "ana",
            "reason": "x" * 80,
        },
    ]
    return {"items": items, "flag_rows": flag_rows, "history": history}


@pytest.mark.parametrize("zone", ["UTC", "America/Sao_Paulo"])
@pytest.mark.parametrize("role", [Role.ROLLOUT_ADMIN, Role.AUDITOR, None])
@pytest.mark.parametrize("status", [RolloutStatus.IN_PROGRESS, RolloutStatus.COMPLETED])
def test_rows_drawn_in_one_pass_are_the_template_loops_markup(rollout, users, zone, role, status):
    data = _data(rollout)
    rollout.status = status
    context = {
        "rollout": rollout,
        "items": data["items"],
        "kind": "readiness",
        "d": {"flag_rows": data["flag_rows"], "history": data["history"]},
        "csrf_token": 'tok<"en>',
    }
    if role is not None:
        context["perms"] = PermWrapper(users[role])
    with timezone.override(zone):
        fast = Template(NEW).render(Context(context))
        slow = Template(REFERENCE).render(Context(context))
    assert _normalised(fast) == _normalised(slow)
    # The data reached every branch.
    assert fast.count("<tr data-item=") == 5 and fast.count('class="table-warning"') == 1
    assert "(deleted user)" in fast and "…" in fast and "<strong>1500</strong>" in fast and "None" in fast
    editing = role == Role.ROLLOUT_ADMIN
    assert ("Reopen…" in fast) is editing
    assert ("csrfmiddlewaretoken" in fast) is (editing and status == RolloutStatus.IN_PROGRESS)


def test_the_rollout_page_uses_the_one_pass_rows(client_for, rollout):
    client = client_for(Role.ROLLOUT_ADMIN)
    html = client.get(rollout.get_absolute_url()).content.decode()
    assert html.count("<tr data-item=") == rollout.checklist_items.count() > 0
    assert 'data-action="tick"' in html and 'id="flags"' in html
