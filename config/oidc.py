"""The OpenID Connect settings (issue 13), built from the environment by config/settings.py and by the tests that
point the dashboard at the test identity provider. Nothing here imports Django's app registry.
"""

from __future__ import annotations

import copy
import json
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

# In the redirect URI: https://<host>/accounts/oidc/<PROVIDER_ID>/login/callback/
PROVIDER_ID = "sso"
DEFAULT_SCOPES = ("openid", "profile", "email", "groups")


def parse_role_map(text: str) -> dict[str, tuple[str, ...]]:
    """``OIDC_ROLE_MAP``: ``claim=role`` pairs separated by commas or new lines (``okta-sre-leads=sre-lead,
    okta-product=product-lead``; a claim value may map to several roles, one pair each), or a JSON object
    ``{"claim value": "role"}`` / ``{"claim value": ["role", ...]}`` for claim values with commas (LDAP DNs).
    The names of the roles are checked against the dashboard's roles by ``manage.py check``."""
    text = (text or "").strip()
    if not text:
        return {}
    mapping: dict[str, list[str]] = {}
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ImproperlyConfigured(f"OIDC_ROLE_MAP is not valid JSON: {error}") from error
        if not isinstance(raw, dict):
            raise ImproperlyConfigured("OIDC_ROLE_MAP as JSON must be an object")
        for value, roles in raw.items():
            for role in [roles] if isinstance(roles, str) else roles:
                mapping.setdefault(str(value), []).append(str(role).strip())
    else:
        for item in text.replace("\n", ",").split(","):
            item = item.strip()
            if not item:
                continue
            value, sep, role = item.rpartition("=")
            if not sep or not value.strip() or not role.strip():
                raise ImproperlyConfigured(f"OIDC_ROLE_MAP: {item!r} is not claim=role")
            mapping.setdefault(value.strip(), []).append(role.strip())
    return {value: tuple(dict.fromkeys(roles)) for value, roles in mapping.items()}


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def socialaccount_providers(*, issuer: str, client_id: str, secret: str, name: str, scopes=DEFAULT_SCOPES) -> dict:
    """``SOCIALACCOUNT_PROVIDERS``: allauth's openid_connect provider with one app, or none without an issuer."""
    apps = []
    if issuer:
        apps.append(
            {
                "provider_id": PROVIDER_ID,
                "name": name,
                "client_id": client_id,
                "secret": secret,
                "settings": {
                    # allauth appends /.well-known/openid-configuration: discovery, as the issue asks.
                    "server_url": issuer,
                    "oauth_pkce_enabled": True,
                    # RFC 6749's method every provider supports.
                    "token_auth_method": "client_secret_basic",
                    "fetch_userinfo": True,
                    "scope": list(scopes),
                },
            }
        )
    # The dashboard's subclass: a nonce per sign-in (governance/oidc.py).
    return {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "provider_class": "governance.oidc.OIDCProvider",
            "APPS": apps,
        }
    }


def settings_for(
    *,
    issuer: str,
    client_id: str,
    secret: str,
    name: str,
    role_map: dict[str, tuple[str, ...]] | None = None,
    groups_claim: str = "groups",
    scopes=DEFAULT_SCOPES,
) -> dict:
    """Every setting the OIDC login reads, for one provider (``issuer`` empty: none)."""
    issuer = (issuer or "").rstrip("/")
    if issuer and not (client_id and secret):
        raise ImproperlyConfigured("OIDC_ISSUER is set: OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are needed too")
    values = {
        "OIDC_ISSUER": issuer,
        "OIDC_CLIENT_ID": client_id,
        "OIDC_CLIENT_SECRET": secret,
        "OIDC_PROVIDER_NAME": name,
        "OIDC_PROVIDER_ID": PROVIDER_ID,
        "OIDC_ROLE_MAP": role_map or {},
        "OIDC_GROUPS_CLAIM": groups_claim,
        "OIDC_SCOPES": list(scopes),
        "SOCIALACCOUNT_PROVIDERS": socialaccount_providers(
            issuer=issuer, client_id=client_id, secret=secret, name=name, scopes=scopes
        ),
    }
    return values


def csp_with_provider(policy: dict, issuer: str) -> dict:
    """The CSP with the provider's origin in ``form-action``: the login and logout buttons post to the dashboard,
    which redirects to the provider, and form-action governs the redirect too (Chromium enforces it)."""
    policy = copy.deepcopy(policy)
    if issuer:
        directives = policy["DIRECTIVES"]
        directives["form-action"] = [*directives.get("form-action", []), origin(issuer)]
    return policy
