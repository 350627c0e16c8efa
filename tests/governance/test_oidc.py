"""Issue 13: signing in with the company's identity provider, against a real OpenID provider on loopback
(tests/oidc/provider.mjs: oidc-provider), the dashboard walked with Django's test client and the provider's pages
with ``requests`` (the browser journey is tests/journeys/test_oidc_login.py).

The OIDC settings are set per test (``configure``: pytest-django's ``settings`` restores them); the rest of the
suite runs with them unset."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from config.oidc import parse_role_map
from governance import oidc
from governance.models import AuditEvent
from tests.conftest import make_user
from tests.oidc.dashboard import LOGIN_PATH, PROVIDER_NAME, configure, idp_user, walk

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture
def op(oidc_provider, settings, role_groups):
    configure(settings, oidc_provider)
    oidc_provider.clear_events()
    return oidc_provider


def entries(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def roles_of(user) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


def oidc_user(sub: str):
    return SocialAccount.objects.select_related("user").get(uid=sub).user


# --- the login page ---------------------------------------------------------------------------------------------


def test_without_a_provider_the_login_page_is_the_local_form(client, db):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b"Sign in with" not in response.content
    assert b'name="username"' in response.content
    assert client.post(LOGIN_PATH).status_code == 404  # no provider configured: nothing to start


def test_with_a_provider_the_login_page_offers_it(client, op):
    content = client.get("/login/").content.decode()
    assert f"Sign in with {PROVIDER_NAME}</button>" in content
    assert f'action="{LOGIN_PATH}"' in content
    assert 'name="username"' in content  # local login stays (LOCAL_LOGIN_ENABLED defaults to true)


def test_with_local_login_off_the_provider_is_the_way_in(client, op, settings):
    settings.LOCAL_LOGIN_ENABLED = False
    content = client.get("/login/").content.decode()
    assert f"Sign in with {PROVIDER_NAME}</button>" in content
    assert "Break-glass login (superusers only)" in content
    assert "or with a local account" not in content


def test_the_page_asked_for_is_where_the_sign_in_ends(client, op):
    op.set_users(idp_user("lea", "idp-auditors"))
    page = client.get("/login/?next=/audit/").content.decode()
    assert '<input type="hidden" name="next" value="/audit/">' in page
    w = walk(client, op)
    response = client.post(LOGIN_PATH, {"next": "/audit/"})
    assert response.status_code == 302
    answer = w.callback(w.sign_in(response["Location"], "lea"))
    assert answer.status_code == 302 and answer["Location"] == "/audit/"


def test_the_login_button_starts_the_code_flow_with_pkce_from_discovery(client, op):
    location = walk(client, op).start()
    query = parse_qs(urlsplit(location).query)
    assert urlsplit(location).path == "/auth"  # the authorization_endpoint of the discovery document
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert sorted(query["scope"][0].split()) == ["email", "groups", "openid", "profile"]
    assert query["redirect_uri"] == ["http://testserver/accounts/oidc/sso/login/callback/"]
    assert query["client_id"] == [op.clients[-1]["client_id"]]
    # A fresh nonce per sign-in, kept in the sign-in's state (checked against the ID token's).
    [state] = client.session["socialaccount_states"].values()
    assert query["nonce"] == [state[0]["oidc_nonce"]] and len(query["nonce"][0]) == 43
    assert query["state"] == list(client.session["socialaccount_states"])


# --- signing in, roles from the groups claim --------------------------------------------------------------------


def test_first_login_makes_the_user_with_the_roles_of_their_groups(client, op):
    op.set_users(idp_user("ada", "idp-sre-leads", "idp-everyone", amr=("pwd", "mfa")))
    response = walk(client, op).login("ada")
    assert response.status_code == 302 and response["Location"] == "/"

    user = oidc_user("sub-ada")
    assert roles_of(user) == ["sre-lead"]
    assert client.get("/").status_code == 200
    session = client.session
    assert session["_auth_user_id"] == str(user.pk)
    assert session[oidc.SESSION_AMR] == ["pwd", "mfa"]
    assert isinstance(session[oidc.SESSION_AUTH_TIME], int)
    assert session[oidc.SESSION_ID_TOKEN].count(".") == 2

    [grant] = entries("auth.role_grant")
    assert grant.object_id == str(user.pk)
    assert grant.after == {
        "role": "sre-lead",
        "claim": "groups",
        "claim_values": ["idp-sre-leads"],
        "provider": PROVIDER_NAME,
    }
    assert "groups=idp-sre-leads" in grant.reason
    assert grant.actor_kind == "system" and grant.actor_name == f"OIDC {PROVIDER_NAME}"
    [login] = entries("auth.login")
    assert login.actor_user_id == user.pk
    assert login.after["method"] == "oidc" and login.after["sub"] == "sub-ada"
    assert login.after["amr"] == ["pwd", "mfa"]


def test_a_group_removed_at_the_provider_is_gone_at_the_next_login(client, op):
    op.set_users(idp_user("ben", "idp-sre-leads", "idp-product"))
    walk(client, op).login("ben")
    user = oidc_user("sub-ben")
    assert roles_of(user) == ["product-lead", "sre-lead"]

    op.set_users(idp_user("ben", "idp-product"))
    assert client.post("/logout/").status_code == 302
    response = walk(client, op).login("ben")
    assert response.status_code == 302
    assert roles_of(user) == ["product-lead"]
    [revoke] = entries("auth.role_revoke")
    assert revoke.after == {
        "role": "sre-lead",
        "claim": "groups",
        "claim_values_absent": ["idp-sre-leads"],
        "provider": PROVIDER_NAME,
    }
    assert "no longer contains idp-sre-leads" in revoke.reason
    assert [e.after["role"] for e in entries("auth.role_grant")] == ["product-lead", "sre-lead"]
    assert len(entries("auth.login")) == 2


def test_groups_that_are_not_roles_are_left_alone(client, op):
    op.set_users(idp_user("cy", "idp-auditors"))
    walk(client, op).login("cy")
    user = oidc_user("sub-cy")
    other = Group.objects.create(name="newsletter")
    user.groups.add(other)
    client.post("/logout/")
    walk(client, op).login("cy")
    assert roles_of(user) == ["auditor", "newsletter"]


def test_users_are_matched_by_sub_never_by_email(client, op):
    local = make_user("dora", email="dora@example.com")
    op.set_users(idp_user("dora", "idp-auditors"))
    walk(client, op).login("dora")
    user = oidc_user("sub-dora")
    assert user.pk != local.pk
    assert not SocialAccount.objects.filter(user=local).exists()
    assert roles_of(local) == []
    # The same sub with another e-mail and name is still the same user.
    op.set_users(idp_user("dora", "idp-auditors", email="dora.new@example.com", name="Dora New"))
    client.post("/logout/")
    walk(client, op).login("dora")
    assert oidc_user("sub-dora").pk == user.pk
    assert get_user_model().objects.filter(socialaccount__uid="sub-dora").count() == 1


def test_a_user_whose_claims_map_to_no_role_sees_only_the_page_saying_so(client, op):
    op.set_users(idp_user("eve", "idp-everyone"))
    walk(client, op).login("eve")
    user = oidc_user("sub-eve")
    assert roles_of(user) == []
    for path in ("/", "/audit/", "/rollouts/any/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"] == "/no-role/", path
    page = client.get("/no-role/")
    assert page.status_code == 403
    assert "none of your groups at Test IdP maps to a role" in page.content.decode()
    nav = page.content.decode().split('<nav class="navbar', 1)[1].split("</nav>", 1)[0]
    assert 'class="nav-link"' not in nav and "Log out" in nav  # no links that would only lead back here
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302  # logged out: to the login page
    assert client.get("/").url.startswith("/login/")


# --- refusals: each with a clear message and a ledger entry, never a 500 -----------------------------------------


def refusal_of(response) -> str:
    content = response.content.decode()
    return content.split('data-refusal="')[1].split('"')[0]


@pytest.mark.parametrize(
    ("how", "code", "message"),
    [
        ("tampered", "id_token_bad_signature", "signature does not verify"),
        ("expired", "id_token_expired", "ID token had expired"),
        ("wrong_aud", "id_token_wrong_audience", "issued for another application (wrong audience)"),
        ("wrong_nonce", "id_token_wrong_nonce", "issued for another sign-in (its nonce does not match)"),
    ],
)
def test_a_bad_id_token_is_refused(client, op, how, code, message):
    op.set_users(idp_user("fay", "idp-sre-leads"))
    op.spoil_id_tokens(how)
    response = walk(client, op).login("fay")
    assert response.status_code == 401
    assert refusal_of(response) == code
    assert message in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert not SocialAccount.objects.exists()
    [entry] = entries("auth.login_failed")
    assert entry.after["method"] == "oidc" and entry.after["error"] == code
    assert entry.actor_kind == "anonymous"
    assert [e["how"] for e in op.events("id_token_spoiled")] == [how]


def test_a_replayed_state_is_refused(client, op):
    op.set_users(idp_user("gus", "idp-auditors"))
    w = walk(client, op)
    callback = w.sign_in(w.start(), "gus")
    assert w.callback(callback).status_code == 302  # signed in
    replay = w.callback(callback)
    assert replay.status_code == 401
    assert refusal_of(replay) == "state_unknown"
    # The same response in another browser (no sign-in of its own started there) is refused as well.
    stranger = Client()
    again = walk(stranger, op).callback(callback)
    assert again.status_code == 401 and refusal_of(again) == "state_unknown"
    assert "_auth_user_id" not in stranger.session
    failed = entries("auth.login_failed")
    assert [e.after["error"] for e in failed] == ["state_unknown"] * len(failed) and failed
    assert len(op.events("token")) == 1  # the replays never reached the token endpoint


def test_a_missing_pkce_verifier_is_refused_before_the_code_is_exchanged(client, op):
    op.set_users(idp_user("hal", "idp-auditors"))
    w = walk(client, op)
    authorize = w.start()
    session = client.session
    states = session["socialaccount_states"]
    for entry in states.values():
        entry[0].pop("pkce_code_verifier")
    session["socialaccount_states"] = states
    session.save()
    response = w.callback(w.sign_in(authorize, "hal"))
    assert response.status_code == 401
    assert refusal_of(response) == "pkce_missing"
    assert "PKCE verifier is missing" in response.content.decode()
    assert "_auth_user_id" not in client.session
    [entry] = entries("auth.login_failed")
    assert entry.after["error"] == "pkce_missing"
    assert op.events("token") == []


# --- logging out ------------------------------------------------------------------------------------------------


def test_logout_after_an_oidc_login_goes_to_the_providers_end_session_endpoint(client, op):
    op.set_users(idp_user("ida", "idp-auditors"))
    walk(client, op).login("ida")
    id_token = client.session[oidc.SESSION_ID_TOKEN]
    response = client.post("/logout/")
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{op.issuer}/session/end"
    query = parse_qs(target.query)
    assert query == {
        "client_id": [op.clients[-1]["client_id"]],
        "post_logout_redirect_uri": ["http://testserver/login/"],
        "id_token_hint": [id_token],
    }
    assert "_auth_user_id" not in client.session
    [entry] = entries("auth.logout")
    assert entry.after == {"method": "oidc", "provider_logout": True}


def test_local_login_and_logout_are_ledger_entries(client, role_groups):
    user = make_user("jo", "auditor")
    response = client.post("/login/", {"username": "jo", "password": "pw"})
    assert response.status_code == 302
    [login] = entries("auth.login")
    assert login.actor_user_id == user.pk and login.after["method"] == "password"
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    [logout] = entries("auth.logout")
    assert logout.after == {"method": "password", "provider_logout": False}


def test_a_password_login_does_not_inherit_an_earlier_oidc_amr(client, op):
    op.set_users(idp_user("kim", "idp-auditors", amr=("pwd", "mfa")))
    walk(client, op).login("kim")
    user = oidc_user("sub-kim")
    user.set_password("kim-local")
    user.save()
    assert client.session[oidc.SESSION_AMR] == ["pwd", "mfa"]
    response = client.post("/login/", {"username": user.username, "password": "kim-local"})
    assert response.status_code == 302
    assert oidc.SESSION_AMR not in client.session


# --- settings ---------------------------------------------------------------------------------------------------


def test_role_map_parsing():
    assert parse_role_map("") == {}
    assert parse_role_map("okta-sre-leads=sre-lead, okta-product=product-lead,okta-product=auditor") == {
        "okta-sre-leads": ("sre-lead",),
        "okta-product": ("product-lead", "auditor"),
    }
    assert parse_role_map("a=b\nc=d\n") == {"a": ("b",), "c": ("d",)}
    assert parse_role_map('{"cn=SRE,ou=groups": "sre-lead", "x": ["auditor", "auditor"]}') == {
        "cn=SRE,ou=groups": ("sre-lead",),
        "x": ("auditor",),
    }
    for bad in ("okta-sre-leads", "=sre-lead", "a=", "{not json", "[1]"):
        with pytest.raises(ImproperlyConfigured):
            parse_role_map(bad)


def test_check_refuses_a_role_map_naming_unknown_roles():
    with override_settings(OIDC_ROLE_MAP={"g": ("sre-lead", "sre-leed")}):
        [error] = oidc.check_role_map()
    assert error.id == "governance.E001"
    assert "sre-leed" in error.msg and "sre-lead," not in error.msg
    with override_settings(OIDC_ROLE_MAP={"g": ("sre-lead",)}):
        assert oidc.check_role_map() == []
