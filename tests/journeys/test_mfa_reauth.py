"""Issue 13 in headless Chromium: a lead's second factor and the re-authentication before a decision. With the
second factor enforced, the SRE lead's first login lands on its enrolment (no other page until done): the QR code
and secret, a TOTP code computed here with pyotp, the recovery codes. The next login asks for a code after the
password. Later, the login older than REAUTH_MAX_AGE, the SRE lead's approval of the demo's limited-beta request is
refused and sent to "Confirm it is you"; after the password, the approval is accepted. The ledger holds exactly
those steps, and the approval's entry says how and when the lead last authenticated."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from django.contrib.sessions.backends.db import SessionStore

from governance.models import AuditEvent, TransitionApproval, TransitionRequest
from rollout.demo import MAIN_SLUG
from rollout.models import PhaseKind

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

COMMENT = "Canary latency and guardrails are inside the SLA; on-call briefed for beta."


@pytest.fixture
def enforced(settings):
    settings.MFA_ENFORCED = True
    settings.REAUTH_MAX_AGE = 300
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 300


def next_code(secret: str, used: set[str]) -> str:
    """A TOTP code not used yet (allauth refuses a code twice): wait for the app's next one if need be."""
    totp = pyotp.TOTP(secret)
    code = totp.now()
    while code in used:
        time.sleep(1)
        code = totp.now()
    used.add(code)
    return code


def age_login(page, seconds: float) -> None:
    """As if ``seconds`` had passed since the browser's session last authenticated."""
    [cookie] = [c for c in page.context.cookies() if c["name"] == "sessionid"]
    session = SessionStore(session_key=cookie["value"])
    records = session["account_authentication_methods"]
    for record in records:
        record["at"] -= seconds
    session["account_authentication_methods"] = records
    session.save()


def test_a_lead_enrols_a_second_factor_and_re_authenticates_before_approving(start, enforced):
    request = TransitionRequest.objects.get(rollout__slug=MAIN_SLUG, target=PhaseKind.LIMITED_BETA)
    j = start("mfa-reauth")
    page = j.page
    used: set[str] = set()

    # First login: straight to the enrolment, and nothing else until it is done.
    j.login("sre-lead")
    assert page.url == j.url("/accounts/2fa/totp/activate/")
    j.check("enrolment")
    assert "Your role needs a second factor" in page.inner_text(".alert")
    assert page.locator("img[alt='QR code of the authenticator secret']").count() == 1
    page.goto(j.url("/audit/"))
    assert page.url == j.url("/accounts/2fa/totp/activate/")
    secret = page.input_value("#authenticator_secret")
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    page.fill("#id_code", next_code(secret, used))
    page.click("button:has-text('Activate')")
    page.wait_for_url("**/accounts/2fa/recovery-codes/")
    j.check("recovery codes")
    assert page.locator("#recovery-codes li").count() == 10
    page.click("text=Continue to the dashboard")
    page.wait_for_selector("#my-decisions")
    j.check("home after enrolment")
    j.logout()

    # The next login asks for a code after the password.
    page.goto(j.url("/login/"))
    page.fill("#id_username", "sre-lead")
    page.fill("#id_password", "demo")
    page.click("button[type=submit]")
    page.wait_for_url("**/accounts/2fa/authenticate/")
    j.check("second factor at login")
    page.fill("#id_code", next_code(secret, used))
    page.click("button:has-text('Log in')")
    page.wait_for_selector("#my-decisions")
    assert "sre-lead" in page.inner_text("[data-testid=whoami]")

    # Six minutes later: the approval is refused until the lead confirms it is them.
    age_login(page, 360)
    j.goto(request.get_absolute_url(), "request (stale login)")
    page.fill("#decision-comment", COMMENT)
    page.click("[data-action=decision-approve]")
    page.wait_for_url("**/accounts/reauthenticate/**")
    j.check("confirm it is you")
    assert "A decision needs a fresh authentication (within 5 minutes)" in page.inner_text(".alert")
    assert not TransitionApproval.objects.filter(request=request, role="sre-lead").exists()
    page.fill("#id_password", "demo")
    page.click("button:has-text('Confirm')")
    page.wait_for_url(j.url(request.get_absolute_url()))
    page.fill("#decision-comment", COMMENT)
    page.click("[data-action=decision-approve]")
    page.wait_for_selector(".alert-success")
    j.check("approved after re-authentication")
    assert page.get_attribute("#approvals tr[data-role=sre-lead]", "data-decision") == "approve"

    entries = [
        (e.action, e.after)
        for e in AuditEvent.objects.filter(actor_name="sre-lead", action__startswith="auth.").order_by("sequence")
    ]
    login = ("auth.login", {"method": "password", "ip": "127.0.0.1"})
    assert entries == [
        login,
        ("auth.mfa_enrolled", {"type": "totp"}),
        ("auth.mfa_enrolled", {"type": "recovery_codes"}),
        ("auth.logout", {"method": "password", "provider_logout": False}),
        login,
        ("auth.reauthenticated", {"method": "password", "max_age_seconds": 300}),
    ]
    # (The demo's canary request has an older approval by the SRE lead: this one is the latest.)
    approval = AuditEvent.objects.filter(action="transition.approve", actor_name="sre-lead").latest("sequence")
    assert approval.reason == COMMENT
    assert approval.after["auth"]["method"] == "password"
    assert approval.sequence > AuditEvent.objects.get(action="auth.reauthenticated").sequence
