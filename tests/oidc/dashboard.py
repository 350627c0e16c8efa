"""Pointing the dashboard at the test identity provider, for one test (pytest-django's ``settings`` fixture restores
everything afterwards: the rest of the suite runs with the OIDC variables unset), and walking the sign-in over
plain HTTP: Django's test client for the dashboard, a ``requests`` session for the provider's pages (the token
exchange is the dashboard's own HTTP call to the provider)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from config.oidc import PROVIDER_ID, csp_with_provider, settings_for

PROVIDER_NAME = "Test IdP"
CALLBACK_PATH = f"/accounts/oidc/{PROVIDER_ID}/login/callback/"
LOGIN_PATH = f"/accounts/oidc/{PROVIDER_ID}/login/"
ROLE_MAP = {
    "idp-sre-leads": ("sre-lead",),
    "idp-product": ("product-lead",),
    "idp-auditors": ("auditor",),
    "idp-admins": ("rollout-admin",),
}


def idp_user(login: str, *groups: str, amr=("pwd",), **extra) -> dict:
    return {
        "login": login,
        "password": f"{login}-password",
        "sub": f"sub-{login}",
        "name": login.title(),
        "email": f"{login}@example.com",
        "groups": list(groups),
        "amr": list(amr),
        **extra,
    }


def configure(settings, op, base_url: str = "http://testserver", *, role_map=None) -> dict:
    """Register the dashboard at the provider (its callback and post-logout URIs under ``base_url``) and set the
    OIDC settings as config/settings.py would from the environment. Returns the registered client."""
    client = op.register_client(
        redirect_uris=[f"{base_url}{CALLBACK_PATH}"], post_logout_redirect_uris=[f"{base_url}/login/"]
    )
    values = settings_for(
        issuer=op.issuer,
        client_id=client["client_id"],
        secret=client["client_secret"],
        name=PROVIDER_NAME,
        role_map=ROLE_MAP if role_map is None else role_map,
    )
    for name, value in values.items():
        setattr(settings, name, value)
    settings.CONTENT_SECURITY_POLICY = csp_with_provider(settings.CONTENT_SECURITY_POLICY, op.issuer)
    op.spoil_id_tokens(None)
    return client


@dataclass
class Walk:
    """One sign-in walked over HTTP: the dashboard's client, the browser-side session at the provider."""

    client: object  # django.test.Client
    op: object
    idp: requests.Session

    def start(self) -> str:
        """POST the login button: the dashboard redirects to the provider's authorization endpoint."""
        response = self.client.post(LOGIN_PATH)
        assert response.status_code == 302, response.content[:500]
        location = response["Location"]
        assert location.startswith(f"{self.op.issuer}/auth?"), location
        return location

    def at_provider(self, url: str) -> requests.Response | str:
        """Follow the provider's redirects; the one back to the dashboard is returned as a URL."""
        response = self.idp.get(url, allow_redirects=False, timeout=30)
        while response.is_redirect:
            url = urljoin(response.url, response.headers["location"])
            if url.startswith("http://testserver/"):
                return url
            response = self.idp.get(url, allow_redirects=False, timeout=30)
        return response

    def sign_in(self, authorize_url: str, login: str, password: str | None = None) -> str:
        """Log in at the provider (and consent when asked): the callback URL the provider sends the browser to."""
        page = self.at_provider(authorize_url)
        if isinstance(page, str):
            return page  # still signed in at the provider, consent given before
        uid = urlsplit(page.url).path.rsplit("/", 1)[1]
        response = self.idp.post(
            f"{self.op.issuer}/interaction/{uid}/login",
            data={"login": login, "password": password or f"{login}-password"},
            allow_redirects=False,
            timeout=30,
        )
        nxt = self._follow(response)
        if isinstance(nxt, str):
            return nxt
        assert "Allow" in nxt.text, nxt.text[:500]
        uid = urlsplit(nxt.url).path.rsplit("/", 1)[1]
        done = self._follow(
            self.idp.post(f"{self.op.issuer}/interaction/{uid}/confirm", allow_redirects=False, timeout=30)
        )
        assert isinstance(done, str), getattr(done, "text", "")[:500]
        return done

    def _follow(self, response):
        while response.is_redirect:
            url = urljoin(response.url, response.headers["location"])
            if url.startswith("http://testserver/"):
                return url
            response = self.idp.get(url, allow_redirects=False, timeout=30)
        return response

    def callback(self, url: str):
        """The browser arriving back at the dashboard with the provider's answer."""
        parts = urlsplit(url)
        return self.client.get(f"{parts.path}?{parts.query}")

    def login(self, login: str, password: str | None = None):
        """The whole sign-in: returns the dashboard's answer to the callback."""
        return self.callback(self.sign_in(self.start(), login, password))


def walk(client, op) -> Walk:
    return Walk(client=client, op=op, idp=requests.Session())
