"""Journey 4: a compliance reviewer at work. Confirms a pending telemetry field of the evaluation telemetry record,
places and releases a legal hold, completes a review assigned to their role (the superuser assigned it: a reviewer may
not assign one to their own role), runs a job now and sees its result appear on the Jobs page without reloading:
a real Celery worker on Redis runs it while the page refreshes its tables in place (static/js/live-refresh.js)."""

from __future__ import annotations

import contextlib

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections

from governance.models import JobRun, LegalHold, RecordChange, ScheduledReview
from rollout.demo import MAIN_SLUG

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def _close_connections(**kwargs) -> None:
    connections.close_all()


@pytest.fixture
def real_worker():
    """``real_worker()`` starts a Celery worker (threads) in this process, consuming this pytest worker's queue on
    Redis. Until then tasks wait in Redis: "Run now" is queued by the live server, not run inside the request."""
    from config.celery_app import app

    app.conf.task_always_eager = False
    app.control.purge()
    task_postrun.connect(_close_connections, weak=False, dispatch_uid="journey-worker-close")
    with contextlib.ExitStack() as stack:

        def begin() -> None:
            stack.enter_context(
                start_worker(
                    app,
                    pool="threads",
                    concurrency=1,
                    perform_ping_check=False,
                    loglevel="WARNING",
                    shutdown_timeout=30,
                )
            )

        try:
            yield begin
        finally:
            task_postrun.disconnect(dispatch_uid="journey-worker-close")
            app.conf.task_always_eager = True
    connections.close_all()


def test_a_compliance_reviewer_works_through_records_holds_reviews_and_jobs(start, real_worker):
    page_of = start("4-compliance-reviewer")

    # The superuser hands the quarterly security & privacy review to the compliance reviewers.
    admin = page_of
    page = admin.page
    review = ScheduledReview.objects.get(kind="quarterly_security_privacy")
    admin.login("admin")
    admin.goto(review.get_absolute_url(), "review (superuser)")
    page.select_option("#id_role", "compliance-reviewer")
    page.fill("#id_reason", "Compliance lead on leave until January; reviewers take this quarter.")
    page.click("[data-form=reassign] button[type=submit]")
    page.wait_for_selector(".alert-success")
    assert page.inner_text("[data-testid=assigned-role]") == "Compliance reviewer"
    admin.logout()

    j = page_of
    j.login("compliance-reviewer")
    j.check("home")

    # A pending telemetry field of the evaluation telemetry record: confirmed with a comment.
    change = RecordChange.objects.filter(status="pending", subject__startswith="run_output:").order_by("pk").first()
    j.nav("Compliance")
    j.check("retention")
    page.click("#compliance-tabs >> text=Processing records")
    j.check("records")
    page.click(f"text={change.record.name}")
    j.check("record")
    card = page.locator(f'[data-change="{change.subject}"]')
    card.locator("textarea").fill("Reviewed with the evaluation team: no personal data in this field.")
    card.locator("[data-action=confirm-change]").click()
    page.wait_for_selector(".alert-success")
    j.check("record after confirm")
    assert page.locator(f'#confirmed-fields >> text="{change.subject}"').count() == 1
    change.refresh_from_db()
    assert (change.status, change.decided_by_name) == ("confirmed", "compliance-reviewer")

    # A legal hold on the main rollout, placed and released.
    j.nav("Compliance")
    page.select_option("#id_rollout", MAIN_SLUG)
    page.fill("#id_reason", "Litigation hold LH-7: keep the canary's outputs.")
    page.click("[data-action=place-hold]")
    # Placing a hold has its own confirmation step: nothing is written before it.
    page.wait_for_selector("[data-form=confirm]")
    j.check("place hold")
    assert not LegalHold.objects.filter(rollout__slug=MAIN_SLUG, released_at__isnull=True).exists()
    page.click("[data-action=confirm]")
    page.wait_for_selector(".alert-success")
    j.check("hold placed")
    assert page.is_visible(f'[data-hold="{MAIN_SLUG}"]')
    hold = LegalHold.objects.get(rollout__slug=MAIN_SLUG, released_at__isnull=True)
    page.locator(f'[data-hold="{MAIN_SLUG}"] [data-action=release-hold]').click()
    page.wait_for_selector("[data-form=confirm]")
    j.check("release hold")
    page.fill("#id_reason", "LH-7 settled; counsel released the hold.")
    page.click("[data-action=confirm]")
    page.wait_for_selector(".alert-success")
    j.check("hold released")
    assert page.locator(f'[data-hold="{MAIN_SLUG}"]').count() == 0
    hold.refresh_from_db()
    assert hold.released_at is not None and hold.released_by_name == "compliance-reviewer"

    # The review assigned to their role: completed.
    page.click("#compliance-tabs >> text=Scheduled reviews")
    j.check("reviews")
    page.click(f'a[href="{review.get_absolute_url()}"]')
    page.wait_for_selector("[data-form=complete-review]")
    j.check("review")
    page.fill("#id_notes", "Access reviews done for all seven roles; no stale accounts.")
    page.fill("#id_rbac_changes", "none")
    page.click("[data-action=complete-review]")
    page.wait_for_selector("[data-form=confirm]")
    j.check("complete review")
    review.refresh_from_db()
    assert review.status != "completed"
    page.click("[data-action=confirm]")
    page.wait_for_selector("#outcome")
    j.check("review completed")
    review.refresh_from_db()
    assert (review.status, review.completed_by_name) == ("completed", "compliance-reviewer")

    # Run a job now: queued by the page, run by the worker, its result shown without reloading by hand.
    j.nav("Compliance")
    page.click("#compliance-tabs >> text=Jobs")
    j.check("jobs")
    page.locator('tr[data-job="verify_audit_log"] [data-action=run-now]').click()
    page.wait_for_selector(".alert-success")
    run = JobRun.objects.filter(job="verify_audit_log").order_by("-pk").first()
    assert run.trigger == "manual" and run.requested_by_name == "compliance-reviewer"
    row = page.locator(f'#run-table tr[data-run="{run.pk}"]')
    assert row.get_attribute("data-status") == "queued"  # no worker yet: the task waits in Redis
    page.evaluate("() => { window.__sameDocument = true; }")
    real_worker()
    page.wait_for_selector(f'#run-table tr[data-run="{run.pk}"][data-status="succeeded"]', timeout=60_000)
    assert page.evaluate("() => window.__sameDocument === true")  # refreshed in place, not reloaded
    assert "Audit ledger intact" in row.inner_text()
    assert "Audit ledger intact" in page.inner_text('#job-table tr[data-job="verify_audit_log"]')
    j.check("job result")
