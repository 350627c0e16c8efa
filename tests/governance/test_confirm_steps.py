"""Issue 9, seam 8 (f): a server-side confirmation step before placing a legal hold and completing a review.

The first post validates and answers a page naming what is about to happen, with what was entered; nothing is
written until the second post, which carries ``confirmed=yes``. "Edit" shows the form again, filled in.
"""

from __future__ import annotations

import html

import pytest

from governance import reviews
from governance.models import AuditEvent, LegalHold, ScheduledReview
from rollout.roles import Role

pytestmark = pytest.mark.django_db

REVIEWER = Role.COMPLIANCE_REVIEWER


def test_placing_a_legal_hold_asks_for_confirmation_first(rollout, client_for):
    client = client_for(REVIEWER)
    before = AuditEvent.objects.count()
    data = {"rollout": rollout.slug, "reason": "Subpoena 42"}
    confirm = client.post("/compliance/retention/", data)
    assert confirm.status_code == 200
    page = html.unescape(confirm.content.decode())
    assert f"Place a legal hold on {rollout.name}?" in page
    assert '<dd><span class="text-break">Subpoena 42</span></dd>' in page
    assert f'<input type="hidden" name="rollout" value="{rollout.slug}">' in page
    assert 'name="confirmed" value="yes" data-action="confirm"' in page
    assert not LegalHold.objects.exists() and AuditEvent.objects.count() == before

    back = client.post("/compliance/retention/", {**data, "confirmed": "back"})
    assert back.status_code == 200 and 'data-form="place-hold"' in back.content.decode()
    assert "Subpoena 42</textarea>" in back.content.decode() and not LegalHold.objects.exists()

    done = client.post("/compliance/retention/", {**data, "confirmed": "yes"})
    assert done.status_code == 302
    assert LegalHold.objects.get().reason == "Subpoena 42"


def test_an_invalid_hold_is_refused_before_any_confirmation(rollout, client_for):
    response = client_for(REVIEWER).post("/compliance/retention/", {"rollout": rollout.slug, "reason": " "})
    assert response.status_code == 400 and "data-confirm-step" not in response.content.decode()


def test_completing_a_review_asks_for_confirmation_first(db, client_for):
    reviews.check_scheduled_reviews()
    drill = ScheduledReview.objects.get(kind="monthly_guardrail_drill")
    client = client_for(Role.SRE_LEAD)
    data = {"notes": "Scenario 3: compensation fired within 2 s.", "compensations_as_designed": "yes"}
    confirm = client.post(drill.get_absolute_url(), data)
    assert confirm.status_code == 200
    page = html.unescape(confirm.content.decode())
    assert f"Complete {drill}?" in page
    assert '<dt>Did guardrail compensations execute as designed?</dt><dd><span class="text-break">Yes</span>' in page
    drill.refresh_from_db()
    assert drill.status == "open"

    done = client.post(drill.get_absolute_url(), {**data, "confirmed": "yes"})
    assert done.status_code == 302
    drill.refresh_from_db()
    assert (drill.status, drill.completed_by_name, drill.compensations_as_designed) == ("completed", "sre-lead", True)
