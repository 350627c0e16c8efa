"""The second factor (rollout/auth.py, allauth.mfa): TOTP enrolment with recovery codes, who must have one, the
enforcement that leaves such a user only the enrolment, the provider's factor (amr), the ledger entries, the reset."""

from __future__ import annotations

import re

import pyotp
import pytest
from allauth.mfa.models import Authenticator
from django.test import TestCase

from governance import services as governance_services
from governance.models import AuditEvent
from rollout.auth import mfa_required, provider_asserted_mfa
from rollout.errors import DomainError
from rollout.roles import Role
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def login(client, username: str, password: str = "pw", **extra):
    return client.post("/login/", {"username": username, "password": password, **extra})


def enrol(client) -> str:
    """Set up TOTP through the pages, as a person would; returns the secret."""
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = re.search(r'id="authenticator_secret" type="text" value="([A-Z2-7]+)"', page.content.decode()).group(1)
    # allauth announces the new factor once the transaction commits (the test's never does): run those callbacks.
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post("/accounts/2fa/totp/activate/", {"code": pyotp.TOTP(secret).now()})
    assert (response.status_code, response["Location"]) == (302, "/accounts/2fa/recovery-codes/")
    return secret


def test_who_needs_a_second_factor(users, settings):
    assert settings.MFA_REQUIRED_ROLES == [
        "rollout-admin",
        "product-lead",
        "support-lead",
        "compliance-lead",
        "sre-lead",
    ]
    needs = {name for name, user in users.items() if mfa_required(user)}
    assert needs == {"rollout-admin", "product-lead", "support-lead", "compliance-lead", "sre-lead"}
    assert mfa_required(make_user("root", is_superuser=True))
    settings.MFA_REQUIRED_ROLES = ["auditor"]
    assert {name for name, user in users.items() if mfa_required(user)} == {"auditor"}


def test_not_enforced_by_default_outside_production(client, users, settings):
    assert settings.MFA_ENFORCED is False
    login(client, Role.SRE_LEAD.value)
    assert client.get("/").status_code == 200


def test_enforced_a_lead_without_a_factor_reaches_only_the_enrolment(client, users, settings):
    settings.MFA_ENFORCED = True
    response = login(client, Role.SRE_LEAD.value)
    assert (response.status_code, response["Location"]) == (302, "/")
    for url in ("/", "/audit/", "/tenants/", "/rollouts/new/"):
        response = client.get(url)
        assert (response.status_code, response["Location"]) == (302, "/accounts/2fa/totp/activate/"), url
    assert client.get("/accounts/2fa/totp/activate/").status_code == 200
    assert client.get("/accounts/2fa/").status_code == 200
    enrol(client)
    recovery = client.get("/accounts/2fa/recovery-codes/")
    codes = re.findall(r"<li>([0-9a-f]{8})</li>", recovery.content.decode())
    assert len(codes) == 10
    assert client.get("/").status_code == 200


def test_enforced_an_auditor_is_not_sent_to_enrolment(client, users, settings):
    settings.MFA_ENFORCED = True
    login(client, Role.AUDITOR.value)
    assert client.get("/").status_code == 200


def test_enrolment_and_its_login_challenge_and_recovery_codes(client, users, settings):
    settings.MFA_ENFORCED = True
    login(client, Role.PRODUCT_LEAD.value)
    secret = enrol(client)
    user = users[Role.PRODUCT_LEAD.value]
    assert sorted(Authenticator.objects.filter(user=user).values_list("type", flat=True)) == ["recovery_codes", "totp"]
    codes = Authenticator.objects.get(user=user, type="recovery_codes").wrap().get_unused_codes()
    client.post("/logout/")

    # The password alone no longer logs in: the second step asks for a code.
    response = login(client, Role.PRODUCT_LEAD.value)
    assert (response.status_code, response["Location"]) == (302, "/accounts/2fa/authenticate/")
    assert "_auth_user_id" not in client.session
    wrong = client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert wrong.status_code == 200 and "_auth_user_id" not in client.session
    response = client.post("/accounts/2fa/authenticate/", {"code": pyotp.TOTP(secret).now()})
    assert (response.status_code, response["Location"]) == (302, "/")
    assert client.get("/").status_code == 200
    methods = [r["method"] for r in client.session["account_authentication_methods"]]
    assert methods == ["password", "mfa"]
    client.post("/logout/")

    # A recovery code works once.
    login(client, Role.PRODUCT_LEAD.value)
    response = client.post("/accounts/2fa/authenticate/", {"code": codes[0]})
    assert (response.status_code, response["Location"]) == (302, "/")
    client.post("/logout/")
    login(client, Role.PRODUCT_LEAD.value)
    again = client.post("/accounts/2fa/authenticate/", {"code": codes[0]})
    assert again.status_code == 200 and "_auth_user_id" not in client.session

    entries = list(
        AuditEvent.objects.filter(action__startswith="auth.mfa").order_by("sequence").values_list("action", "after")
    )
    assert entries == [
        ("auth.mfa_enrolled", {"type": "totp"}),
        ("auth.mfa_enrolled", {"type": "recovery_codes"}),
        ("auth.mfa_recovery_code_used", {"unused_codes": 9}),
    ]
    enrolled = AuditEvent.objects.filter(action="auth.mfa_enrolled").first()
    assert (enrolled.actor_name, enrolled.object_type, enrolled.object_repr) == (
        "product-lead",
        "auth.user",
        "product-lead",
    )


def test_a_lead_who_must_have_a_factor_cannot_remove_it(client, users, settings):
    settings.MFA_ENFORCED = True
    login(client, Role.SRE_LEAD.value)
    enrol(client)
    page = client.get("/accounts/2fa/totp/deactivate/")
    assert page.status_code == 200
    client.post("/accounts/2fa/totp/deactivate/")
    assert Authenticator.objects.filter(user=users[Role.SRE_LEAD.value], type="totp").exists()


@pytest.mark.parametrize(
    ("amr", "asserted"),
    [(["pwd", "mfa"], True), (["otp"], True), (["hwk", "pwd"], True), (["pwd"], False), ([], False), (None, False)],
)
def test_the_providers_factor_counts_when_amr_says_so(client, users, settings, amr, asserted):
    settings.MFA_ENFORCED = True
    client.force_login(users[Role.SRE_LEAD.value])
    session = client.session
    if amr is not None:
        session["oidc_amr"] = amr
    session.save()
    response = client.get("/")
    assert response.status_code == (200 if asserted else 302)
    request = response.wsgi_request
    assert provider_asserted_mfa(request) is asserted


def test_an_admin_resets_a_lost_factor_with_a_ledger_entry(client, users, settings):
    settings.MFA_ENFORCED = True
    login(client, Role.SRE_LEAD.value)
    enrol(client)
    root = make_user("root", is_superuser=True, is_staff=True)
    lead = users[Role.SRE_LEAD.value]
    with pytest.raises(DomainError, match="Only a superuser"):
        governance_services.mfa_reset(user=lead, actor=users[Role.ROLLOUT_ADMIN.value], reason="Lost phone")
    with pytest.raises(DomainError, match="needs a reason"):
        governance_services.mfa_reset(user=lead, actor=root, reason=" ")
    assert governance_services.mfa_reset(user=lead, actor=root, reason="Lost phone, ticket 4711") == [
        "recovery_codes",
        "totp",
    ]
    assert not Authenticator.objects.filter(user=lead).exists()
    entry = AuditEvent.objects.get(action="auth.mfa_reset")
    assert (entry.actor_name, entry.object_repr, entry.before, entry.after, entry.reason) == (
        "root",
        "sre-lead",
        {"types": ["recovery_codes", "totp"]},
        {"types": []},
        "Lost phone, ticket 4711",
    )
    # Back to enrolment at the next login.
    client.post("/logout/")
    login(client, Role.SRE_LEAD.value)
    assert client.get("/")["Location"] == "/accounts/2fa/totp/activate/"


def test_production_enforces_by_default_and_the_setting_turns_it_off():
    import os
    import subprocess
    import sys

    def enforced(**extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MFA_"))}
        env.update(DJANGO_ENV="production", SECRET_KEY="x" * 50, ALLOWED_HOSTS="rollouts.example.com", **extra)
        code = "import config.settings as s; print(s.MFA_ENFORCED, s.REAUTH_MAX_AGE, s.LOCAL_LOGIN_ENABLED)"
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout

    assert enforced() == "True 300 True\n"
    assert enforced(MFA_ENFORCED="false", REAUTH_MAX_AGE="120", LOCAL_LOGIN_ENABLED="false") == "False 120 False\n"


def test_the_login_step_of_the_second_factor_is_skipped_when_the_provider_checked_one(rf, users):
    from allauth.account.models import Login
    from allauth.mfa.models import Authenticator as A
    from django.contrib.sessions.backends.db import SessionStore

    from rollout.auth import MfaAuthenticateStage

    lead = users[Role.SRE_LEAD.value]
    A.objects.create(user=lead, type=A.Type.TOTP, data={"secret": pyotp.random_base32()})
    request = rf.get("/")
    request.session = SessionStore()
    stage = MfaAuthenticateStage(controller=None, request=request, login=Login(user=lead))
    assert stage._should_handle(request) is True
    request.session["oidc_amr"] = ["pwd", "mfa"]
    assert stage._should_handle(request) is False


def test_the_admin_action_asks_for_a_reason_and_resets(client, users):
    lead = users[Role.SRE_LEAD.value]
    Authenticator.objects.create(user=lead, type=Authenticator.Type.TOTP, data={"secret": pyotp.random_base32()})
    root = make_user("root", is_superuser=True, is_staff=True)
    client.force_login(root)
    url = "/admin/auth/user/"
    page = client.post(url, {"action": "reset_second_factor", "_selected_action": [lead.pk]})
    assert page.status_code == 200 and "Reset the second factor" in page.content.decode()
    assert Authenticator.objects.filter(user=lead).exists()
    response = client.post(
        url, {"action": "reset_second_factor", "_selected_action": [lead.pk], "reason": "Lost phone, ticket 4712"}
    )
    assert response.status_code == 302
    assert not Authenticator.objects.filter(user=lead).exists()
    entry = AuditEvent.objects.get(action="auth.mfa_reset")
    assert (entry.actor_name, entry.object_repr, entry.reason, entry.before) == (
        "root",
        "sre-lead",
        "Lost phone, ticket 4712",
        {"types": ["totp"]},
    )
