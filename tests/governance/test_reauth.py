"""Re-authentication before a decision (rollout/auth.py): sign-off, approve/reject, apply, the kill switch and a
legal hold's release need an authentication younger than REAUTH_MAX_AGE; the decision's ledger entry says how and
when the actor last authenticated; each re-authentication is a ledger entry."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from django.test import TestCase
from django.utils import timezone

from governance import retention
from governance.models import AuditEvent, LegalHold, TransitionApproval
from governance.selectors import plan_hash, transition_view
from rollout.roles import Role
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


@pytest.fixture(autouse=True)
def _five_minutes(settings):
    settings.REAUTH_MAX_AGE = 300
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 300


def login(client, username: str) -> None:
    response = client.post("/login/", {"username": username, "password": "pw"})
    assert response.status_code == 302, response


def age_last_authentication(client, seconds: float) -> None:
    """Move the session's authentications ``seconds`` into the past (as if that long had gone by)."""
    session = client.session
    records = session["account_authentication_methods"]
    for record in records:
        record["at"] -= seconds
    session["account_authentication_methods"] = records
    session.save()


def decide(client, transition, role: str):
    url = transition.get_absolute_url()
    version = transition_view(transition).version
    return client.post(f"{url}decide/", {"role": role, "decision": "approve", "comment": "", "version": version})


def test_a_fresh_login_decides_and_its_entry_records_the_password(client, canary_request):
    login(client, "sre-lead")
    before = timezone.now()
    response = decide(client, canary_request, "sre-lead")
    assert (response.status_code, response["Location"]) == (302, canary_request.get_absolute_url())
    entry = AuditEvent.objects.get(action="transition.approve", actor_name="sre-lead")
    auth = entry.after["auth"]
    assert set(auth) == {"method", "at"} and auth["method"] == "password" and ISO_UTC.match(auth["at"])
    at = dt.datetime.fromisoformat(auth["at"].replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=60) < at <= timezone.now()


def test_a_stale_login_is_refused_until_it_re_authenticates(client, canary_request):
    login(client, "sre-lead")
    age_last_authentication(client, 301)
    response = decide(client, canary_request, "sre-lead")
    url = canary_request.get_absolute_url()
    assert (response.status_code, response["Location"]) == (
        302,
        f"/accounts/reauthenticate/?next={url.replace('/', '%2F')}",
    )
    assert not TransitionApproval.objects.filter(role="sre-lead").exists()
    assert not AuditEvent.objects.filter(action="transition.approve", actor_name="sre-lead").exists()

    page = client.get(response["Location"])
    assert page.status_code == 200 and "Confirm it is you" in page.content.decode()
    wrong = client.post("/accounts/reauthenticate/", {"password": "nope", "next": url})
    assert wrong.status_code == 200
    assert not AuditEvent.objects.filter(action="auth.reauthenticated").exists()
    response = client.post("/accounts/reauthenticate/", {"password": "pw", "next": url})
    assert (response.status_code, response["Location"]) == (302, url)
    reauth = AuditEvent.objects.get(action="auth.reauthenticated")
    assert (reauth.actor_name, reauth.object_type, reauth.object_repr, reauth.after, reauth.reason) == (
        "sre-lead",
        "auth.user",
        "sre-lead",
        {"method": "password", "max_age_seconds": 300},
        "Re-authenticated (password)",
    )

    response = decide(client, canary_request, "sre-lead")
    assert response["Location"] == url
    entry = AuditEvent.objects.get(action="transition.approve", actor_name="sre-lead")
    assert entry.after["auth"]["method"] == "password"
    assert entry.sequence > reauth.sequence


def test_the_window_is_reauth_max_age(client, canary_request, settings):
    settings.REAUTH_MAX_AGE = 60
    login(client, "sre-lead")
    age_last_authentication(client, 50)
    assert decide(client, canary_request, "sre-lead")["Location"] == canary_request.get_absolute_url()
    age_last_authentication(client, 20)  # 70 s old now
    assert decide(client, canary_request, "product-lead")["Location"].startswith("/accounts/reauthenticate/")


def test_a_totp_code_re_authenticates_too(client, canary_request, users):
    login(client, "sre-lead")
    page = client.get("/accounts/2fa/totp/activate/").content.decode()
    secret = re.search(r'id="authenticator_secret" type="text" value="([A-Z2-7]+)"', page).group(1)
    with TestCase.captureOnCommitCallbacks(execute=True):
        client.post("/accounts/2fa/totp/activate/", {"code": pyotp.TOTP(secret).now()})
    age_last_authentication(client, 400)
    url = canary_request.get_absolute_url()
    response = client.post(f"/accounts/2fa/reauthenticate/?next={url}", {"code": pyotp.TOTP(secret).now()})
    assert (response.status_code, response["Location"]) == (302, url)
    assert AuditEvent.objects.get(action="auth.reauthenticated").after == {"method": "totp", "max_age_seconds": 300}
    decide(client, canary_request, "sre-lead")
    assert AuditEvent.objects.get(action="transition.approve", actor_name="sre-lead").after["auth"]["method"] == "totp"


def test_every_decision_waits_for_a_fresh_authentication(client, users, approved_canary, rollout):
    hold = retention.legal_hold_place(rollout=rollout, reason="Matter 12", actor=users[Role.COMPLIANCE_REVIEWER])
    cases = [
        (
            Role.SRE_LEAD,
            f"{rollout.get_absolute_url()}sign-off/",
            {"role": "sre-lead", "decision": "reject", "comment": "Hold", "version": plan_hash(rollout)},
        ),
        (Role.ROLLOUT_ADMIN, f"{approved_canary.get_absolute_url()}apply/", {"note": "", "version": "x"}),
        (Role.SRE_LEAD, f"{rollout.get_absolute_url()}kill-switch/", {"on": "1", "reason": "Regression"}),
        (Role.COMPLIANCE_REVIEWER, f"/compliance/retention/holds/{hold.pk}/release/", {"reason": "Matter closed"}),
    ]
    for role, url, body in cases:
        client.post("/logout/")
        login(client, role.value)
        age_last_authentication(client, 301)
        count = AuditEvent.objects.count()
        response = client.post(url, body)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/reauthenticate/?next="), url
        assert AuditEvent.objects.count() == count, url
    assert LegalHold.objects.get(pk=hold.pk).is_active


def test_kill_switch_and_hold_release_entries_carry_the_auth(client, users, rollout):
    from tests.factories import advance_to

    advance_to(rollout, "canary", users[Role.ROLLOUT_ADMIN])
    hold = retention.legal_hold_place(rollout=rollout, reason="Matter 12", actor=users[Role.COMPLIANCE_REVIEWER])
    login(client, "sre-lead")
    client.post(f"{rollout.get_absolute_url()}kill-switch/", {"on": "1", "reason": "Regression", "confirmed": "yes"})
    switched = AuditEvent.objects.filter(actor_name="sre-lead", object_type="rollout.flagexposure")
    assert switched.exists() and all(e.after["auth"]["method"] == "password" for e in switched)
    client.post("/logout/")
    login(client, "compliance-reviewer")
    client.post(f"/compliance/retention/holds/{hold.pk}/release/", {"reason": "Matter closed"})
    released = AuditEvent.objects.get(action="legal_hold.release")
    assert released.after["auth"]["method"] == "password"


def test_a_user_of_the_provider_is_sent_to_the_provider_with_max_age(client, canary_request, users):
    from allauth.socialaccount.models import SocialAccount

    lead = make_user("oidc-lead", "sre-lead")
    lead.set_unusable_password()
    lead.save()
    SocialAccount.objects.create(user=lead, provider="corp", uid="sub-123")
    client.force_login(lead)
    age_last_authentication(client, 301)
    response = decide(client, canary_request, "sre-lead")
    assert response["Location"].startswith("/accounts/oidc/corp/login/?process=login&next=")
    assert "auth_params=max_age%3D0%26prompt%3Dlogin" in response["Location"]


# --- With the identity provider (tests/oidc: a real oidc-provider on loopback) ---------------------------------------


@pytest.mark.postgres
def test_the_providers_mfa_counts_and_a_decision_round_trips_to_the_provider(
    client, canary_request, settings, oidc_provider
):
    from tests.oidc.dashboard import configure, idp_user, walk

    configure(settings, oidc_provider)
    settings.MFA_ENFORCED = True
    oidc_provider.set_users(idp_user("ada", "idp-sre-leads", amr=("pwd", "mfa")))
    w = walk(client, oidc_provider)
    assert w.login("ada").status_code == 302
    assert client.session["oidc_amr"] == ["pwd", "mfa"]
    assert client.get("/").status_code == 200  # no enrolment: the provider checked a second factor

    age_last_authentication(client, 301)
    url = canary_request.get_absolute_url()
    response = decide(client, canary_request, "sre-lead")
    login_url = response["Location"]
    assert login_url.startswith(f"/accounts/oidc/{settings.OIDC_PROVIDER_ID}/login/?process=login&next=")
    assert not TransitionApproval.objects.filter(role="sre-lead").exists()
    # The provider is asked to authenticate anew (max_age=0, prompt=login), then the browser comes back.
    authorize = client.post(login_url)["Location"]
    assert "max_age=0" in authorize and "prompt=login" in authorize
    back = w.callback(w.sign_in(authorize, "ada"))
    assert (back.status_code, back["Location"]) == (302, url)
    reauth = AuditEvent.objects.get(action="auth.reauthenticated")
    assert (reauth.actor_name, reauth.after) == ("ada", {"method": "oidc", "max_age_seconds": 300})
    decide(client, canary_request, "sre-lead")
    entry = AuditEvent.objects.get(action="transition.approve", actor_name="ada")
    assert entry.after["auth"]["method"] == "oidc"


@pytest.mark.postgres
def test_without_mfa_in_amr_a_lead_of_the_provider_enrols_locally(client, users, settings, oidc_provider):
    from tests.oidc.dashboard import configure, idp_user, walk

    configure(settings, oidc_provider)
    settings.MFA_ENFORCED = True
    oidc_provider.set_users(idp_user("bo", "idp-sre-leads", amr=("pwd",)))
    walk(client, oidc_provider).login("bo")
    assert client.get("/")["Location"] == "/accounts/2fa/totp/activate/"
