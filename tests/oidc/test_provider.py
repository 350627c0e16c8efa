"""The test identity provider itself (tests/oidc/provider.mjs): what the dashboard's OIDC tests rely on, checked over
plain HTTP as an RP would speak to it. Code flow with PKCE, discovery, the login and consent pages, the groups claim
the test changes between logins, ``amr``, the spoiling switches, prompt=login and RP-initiated logout."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import pytest
import requests

REDIRECT = "http://127.0.0.1:9/callback/"
AFTER_LOGOUT = "http://127.0.0.1:9/after-logout/"


@pytest.fixture(scope="module")
def op(oidc_provider):
    oidc_provider.set_users(
        {
            "login": "ada",
            "password": "ada-pw",
            "sub": "sub-ada",
            "name": "Ada",
            "email": "ada@example.com",
            "groups": ["idp-sre-leads", "idp-everyone"],
            "amr": ["pwd", "mfa"],
        },
        {"login": "bob", "password": "bob-pw", "sub": "sub-bob", "name": "Bob", "email": "bob@example.com"},
    )
    oidc_provider.spoil_id_tokens(None)
    oidc_provider.client = oidc_provider.register_client(
        redirect_uris=[REDIRECT], post_logout_redirect_uris=[AFTER_LOGOUT]
    )
    return oidc_provider


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def follow(session: requests.Session, response: requests.Response) -> requests.Response | str:
    """Follow the provider's redirects; the redirect to the RP (not running here) is returned as a URL."""
    while response.is_redirect:
        location = urljoin(response.url, response.headers["location"])
        if location.startswith("http://127.0.0.1:9/"):
            return location
        response = session.get(location, allow_redirects=False, timeout=30)
    return response


def authorize(op, session, challenge, **extra) -> requests.Response | str:
    query = {
        "client_id": op.client["client_id"],
        "response_type": "code",
        "scope": "openid profile email groups",
        "redirect_uri": REDIRECT,
        "state": "state-1",
        "nonce": "nonce-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return follow(session, session.get(f"{op.issuer}/auth?{urlencode(query)}", allow_redirects=False, timeout=30))


def uid_of(page: requests.Response) -> str:
    return urlsplit(page.url).path.rsplit("/", 1)[1]


def sign_in(op, session, page, login, password) -> requests.Response | str:
    response = session.post(
        f"{op.issuer}/interaction/{uid_of(page)}/login",
        data={"login": login, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    return follow(session, response)


def consent(op, session, page) -> str:
    return follow(
        session, session.post(f"{op.issuer}/interaction/{uid_of(page)}/confirm", allow_redirects=False, timeout=30)
    )


def token(op, callback_url: str, verifier: str | None) -> requests.Response:
    code = parse_qs(urlsplit(callback_url).query)["code"][0]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        data["code_verifier"] = verifier
    return requests.post(
        f"{op.issuer}/token", data=data, auth=(op.client["client_id"], op.client["client_secret"]), timeout=30
    )


def verified_claims(op, id_token: str) -> dict:
    jwks = requests.get(op.discovery()["jwks_uri"], timeout=30).json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    return jwt.decode(id_token, key, algorithms=["RS256"], audience=op.client["client_id"], issuer=op.issuer)


def full_login(op, login="ada", password="ada-pw") -> tuple[requests.Session, dict]:
    session = requests.Session()
    verifier, challenge = pkce()
    page = authorize(op, session, challenge)
    after_login = sign_in(op, session, page, login, password)
    callback = after_login if isinstance(after_login, str) else consent(op, session, after_login)
    answer = token(op, callback, verifier)
    assert answer.status_code == 200, answer.text
    return session, answer.json()


def test_discovery_offers_what_the_dashboard_needs(op):
    config = op.discovery()
    assert config["issuer"] == op.issuer
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["end_session_endpoint"] == f"{op.issuer}/session/end"
    assert {"openid", "profile", "email", "groups"} <= set(config["scopes_supported"])
    assert {"groups", "amr", "auth_time"} <= set(config["claims_supported"])
    assert "client_secret_basic" in config["token_endpoint_auth_methods_supported"]
    assert urlsplit(config["jwks_uri"]).hostname == "127.0.0.1"


def test_code_flow_with_pkce_login_consent_and_claims(op):
    session = requests.Session()
    verifier, challenge = pkce()
    page = authorize(op, session, challenge)
    assert page.status_code == 200 and "Sign in to the test identity provider" in page.text

    wrong = sign_in(op, session, page, "ada", "not-her-password")
    assert wrong.status_code == 200 and "Wrong username or password." in wrong.text

    consent_page = sign_in(op, session, page, "ada", "ada-pw")
    assert "Allow Rollout Governance Dashboard?" in consent_page.text
    callback = consent(op, session, consent_page)
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == ["state-1"] and query["iss"] == [op.issuer]

    answer = token(op, callback, verifier)
    assert answer.status_code == 200, answer.text
    claims = verified_claims(op, answer.json()["id_token"])
    assert claims["sub"] == "sub-ada"
    assert claims["groups"] == ["idp-sre-leads", "idp-everyone"]
    assert claims["amr"] == ["pwd", "mfa"]
    assert claims["nonce"] == "nonce-1"
    assert isinstance(claims["auth_time"], int)

    # Signed in and consented: the next authorization goes straight back to the RP.
    _, challenge2 = pkce()
    again = authorize(op, session, challenge2)
    assert isinstance(again, str) and again.startswith(REDIRECT)
    # ... unless the RP asks for a fresh login.
    fresh = authorize(op, session, challenge2, prompt="login")
    assert not isinstance(fresh, str) and "Sign in to the test identity provider" in fresh.text
    aged = authorize(op, session, challenge2, max_age="0")
    assert not isinstance(aged, str) and "Sign in to the test identity provider" in aged.text


def test_pkce_is_required(op):
    session = requests.Session()
    response = session.get(
        f"{op.issuer}/auth?"
        + urlencode(
            {
                "client_id": op.client["client_id"],
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": REDIRECT,
                "state": "s",
            }
        ),
        allow_redirects=False,
        timeout=30,
    )
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["error_description"] == ["Authorization Server policy requires PKCE to be used for this request"]

    # A code obtained with a challenge is not exchanged without its verifier.
    _, challenge = pkce()
    page = authorize(op, session, challenge)
    after = sign_in(op, session, page, "bob", "bob-pw")
    callback = after if isinstance(after, str) else consent(op, session, after)
    answer = token(op, callback, None)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_groups_change_between_logins(op):
    _, first = full_login(op, "bob", "bob-pw")
    assert verified_claims(op, first["id_token"])["groups"] == []
    try:
        op.set_users(
            {"login": "bob", "password": "bob-pw", "sub": "sub-bob", "groups": ["idp-product"], "amr": ["pwd"]},
            {"login": "ada", "password": "ada-pw", "sub": "sub-ada", "groups": ["idp-sre-leads"]},
        )
        _, second = full_login(op, "bob", "bob-pw")
        claims = verified_claims(op, second["id_token"])
        assert claims["groups"] == ["idp-product"] and claims["amr"] == ["pwd"]
    finally:
        op.set_users(
            {
                "login": "ada",
                "password": "ada-pw",
                "sub": "sub-ada",
                "name": "Ada",
                "email": "ada@example.com",
                "groups": ["idp-sre-leads", "idp-everyone"],
                "amr": ["pwd", "mfa"],
            },
            {"login": "bob", "password": "bob-pw", "sub": "sub-bob", "name": "Bob", "email": "bob@example.com"},
        )


@pytest.mark.parametrize("how", ["tampered", "expired", "wrong_aud"])
def test_spoiled_id_tokens_fail_verification(op, how):
    op.spoil_id_tokens(how)
    try:
        _, answer = full_login(op)
    finally:
        op.spoil_id_tokens(None)
    expected = {
        "tampered": jwt.InvalidSignatureError,
        "expired": jwt.ExpiredSignatureError,
        "wrong_aud": jwt.InvalidAudienceError,
    }[how]
    with pytest.raises(expected):
        verified_claims(op, answer["id_token"])
    header = json.loads(base64.urlsafe_b64decode(answer["id_token"].split(".")[0] + "=="))
    assert header["kid"] == "rgd-test-key-1"


def test_rp_initiated_logout(op):
    session, answer = full_login(op)
    op.clear_events()
    query = {
        "id_token_hint": answer["id_token"],
        "post_logout_redirect_uri": AFTER_LOGOUT,
        "client_id": op.client["client_id"],
    }
    page = follow(session, session.get(f"{op.issuer}/session/end?{urlencode(query)}", allow_redirects=False))
    assert "Sign out of the test identity provider?" in page.text
    xsrf = page.text.split('name="xsrf" value="')[1].split('"')[0]
    done = follow(
        session,
        session.post(f"{op.issuer}/session/end/confirm", data={"xsrf": xsrf, "logout": "yes"}, allow_redirects=False),
    )
    assert done == AFTER_LOGOUT
    assert [e["type"] for e in op.events()] == ["end_session"]
    # Signed out at the provider: the next authorization asks for the password again.
    _, challenge = pkce()
    again = authorize(op, session, challenge)
    assert not isinstance(again, str) and "Sign in to the test identity provider" in again.text
