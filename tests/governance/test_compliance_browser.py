"""The compliance pages in a real browser: a reviewer places a legal hold, queues a dry run, confirms a record change;
the SRE lead completes the guardrail drill."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from governance import records, reviews
from governance.models import JobRun, LegalHold, RecordChange, ScheduledReview

from .compliance_helpers import runs_with_outputs
from .helpers import threaded
from .test_browser import login

pytestmark = [pytest.mark.browser, threaded]


def test_a_reviewer_works_through_the_compliance_pages(rollout, users, live_server, browser_page):
    page = browser_page
    runs_with_outputs(rollout, [timezone.now() - dt.timedelta(days=100)])
    records.update_compliance_records()
    change = RecordChange.objects.create(
        record=records.ensure_records()[0][records.TELEMETRY_RECORD],
        kind="telemetry_field",
        subject="run_output:caller_phone",
        label="caller_phone (run outputs)",
        detected_at=timezone.now(),
    )
    reviews.check_scheduled_reviews()

    login(page, live_server, "compliance-reviewer")
    page.click("[data-nav=compliance]")
    page.select_option("#id_rollout", rollout.slug)
    page.fill("#id_reason", "Litigation hold LH-7")
    page.click("[data-action=place-hold]")
    assert "Place a legal hold on" in page.inner_text("h1")  # the confirmation step
    page.click("[data-action=confirm]")
    page.wait_for_selector(".alert-success")
    assert page.is_visible(f'[data-hold="{rollout.slug}"]')
    assert LegalHold.objects.get().reason == "Litigation hold LH-7"

    page.click("[data-action=run-retention]")
    assert page.is_checked("#id_dry_run")
    page.click("[data-action=confirm]")
    page.wait_for_selector(".alert-success")
    assert "(dry run) queued as run #" in page.inner_text(".alert-success")
    run = JobRun.objects.get(job="enforce_retention")  # eager in tests: it ran on commit
    assert (run.options, run.status) == ({"dry_run": True}, "succeeded")
    assert run.receipts.get().rows_held == 2

    page.click("text=Processing records")
    page.click(f"text={change.record.name}")
    card = page.locator('[data-change="run_output:caller_phone"]')
    card.locator("textarea").fill("Phone numbers are masked upstream (ticket PRIV-88).")
    card.locator("[data-action=confirm-change]").click()
    page.wait_for_selector(".alert-success")
    assert page.is_visible("#confirmed-fields >> text=run_output:caller_phone")
    change.refresh_from_db()
    assert (change.status, change.decided_by_name) == ("confirmed", "compliance-reviewer")
    page.screenshot(path="/tmp/compliance-browser-record.png", full_page=True)

    drill = ScheduledReview.objects.get(kind="monthly_guardrail_drill")
    page.click("text=Log out")
    login(page, live_server, "sre-lead")
    page.goto(f"{live_server.url}{drill.get_absolute_url()}")
    page.fill("#id_notes", "Scenario 3 (refund loop): compensation fired within 2 s.")
    page.select_option("#id_compensations_as_designed", "yes")
    page.click("[data-action=complete-review]")
    assert page.inner_text("h1").startswith("Complete ")  # the confirmation step
    page.click("[data-action=confirm]")
    page.wait_for_selector(".alert-success")
    assert page.inner_text("[data-testid=as-designed]") == "yes"
    drill.refresh_from_db()
    assert (drill.status, drill.completed_by_name) == ("completed", "sre-lead")
