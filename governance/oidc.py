"""Signing in with the company's identity provider (issue 13): OpenID Connect through django-allauth.

allauth's ``openid_connect`` provider does the protocol (authorization code with PKCE, discovery from the issuer's
``/.well-known/openid-configuration``, the token exchange, the ID token's issuer, audience and expiry); what is
here is what the dashboard adds:

* :class:`VerifyingOIDCAdapter` always verifies the ID token's signature against the provider's JWKS (allauth skips
  it when the token came straight from the token endpoint over TLS, which OIDC Core allows; a tampered token is
  refused here either way), checks the ``nonce`` :class:`OIDCProvider` sent with the sign-in, and refuses a
  callback whose PKCE verifier is missing before the code is exchanged.
  ``/accounts/oidc/<provider id>/login/`` and ``.../login/callback/`` are served by allauth's views with it.
* :class:`SocialAccountAdapter`: users are matched by the provider's ``sub`` (the SocialAccount uid), never by
  e-mail: a new ``sub`` is a new user even when a local account has the same address. Each failed callback (a bad
  ID token, an unknown or replayed ``state``, no PKCE verifier, a refused code exchange) gets a clear message and a
  ledger entry (``auth.login_failed``).
* :func:`roles_sync_from_claims`: on every OIDC login the user's role groups are set from the groups claim through
  ``OIDC_ROLE_MAP``: added and removed, one ledger entry per change naming the claim value that caused it.
* The session keeps what the ID token said of the authentication: ``oidc_amr`` (its ``amr`` list: the MFA rule
  reads it), ``oidc_auth_time`` (epoch seconds), and the raw token for RP-initiated logout (``id_token_hint``).
* :class:`NoRoleMiddleware`: a user whose claims map to no role is signed in but sees only the page saying so.
* :func:`logout`: ends the dashboard's session, and after an OIDC login sends the browser to the provider's
  ``end_session_endpoint`` when it offers one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from allauth.account.internal.decorators import login_not_required
from allauth.account.signals import authentication_step_completed
from allauth.account.signals import user_logged_in as allauth_user_logged_in
from allauth.socialaccount.internal import jwtkit
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.oauth2.views import OAuth2CallbackView, OAuth2LoginView
from allauth.socialaccount.providers.openid_connect.provider import OpenIDConnectProvider
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.conf import settings
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.models import Group
from django.core import checks
from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.crypto import constant_time_compare
from django.views.decorators.http import require_POST, require_safe

from rollout.auth import SocialAccountAdapter as BaseSocialAccountAdapter
from rollout.context import Actor, user_actor
from rollout.roles import Role

from . import denials, ledger

log = logging.getLogger(__name__)

PROVIDER = "openid_connect"
# The session keys (the MFA rule reads SESSION_AMR: the provider's factor counts when it says "mfa", "otp", "hwk").
SESSION_AMR = "oidc_amr"
SESSION_AUTH_TIME = "oidc_auth_time"
SESSION_ID_TOKEN = "oidc_id_token"  # noqa: S105 (a session key, not a secret)
SESSION_PROVIDER = "oidc_provider_id"
SESSION_NO_ROLE = "oidc_no_role"
SESSION_KEYS = (SESSION_AMR, SESSION_AUTH_TIME, SESSION_ID_TOKEN, SESSION_PROVIDER, SESSION_NO_ROLE)


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def provider_name() -> str:
    return settings.OIDC_PROVIDER_NAME


# --- the protocol: allauth's adapter, with the signature always verified and PKCE insisted on ---------------------


class OIDCRefused(OAuth2Error):
    """A callback the dashboard refuses; ``code`` names the reason (the message and the ledger entry say it)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(detail or code)
        self.code = code
        self.detail = detail or code


class VerifyingOIDCAdapter(OpenIDConnectOAuth2Adapter):
    def get_access_token_data(self, request: HttpRequest, app, client, pkce_code_verifier=None):
        if not pkce_code_verifier:
            # The authorization request carried a code challenge (PKCE is on): without its verifier the code is
            # not worth exchanging, and a provider that did not insist on PKCE would accept it.
            raise OIDCRefused("pkce_missing", "the PKCE code verifier of this sign-in is missing")
        try:
            data = super().get_access_token_data(request, app, client, pkce_code_verifier=pkce_code_verifier)
        except OAuth2Error as error:
            raise OIDCRefused("code_exchange_refused", str(error)[:500]) from error
        request._rgd_oidc_id_token = data.get("id_token") or ""
        return data

    sign_in_state: dict | None = None

    def _decode_id_token(self, app: SocialApp, id_token: str) -> dict:
        claims = self._verified_claims(app, id_token)
        expected = (self.sign_in_state or {}).get("oidc_nonce")
        if expected and not constant_time_compare(str(claims.get("nonce", "")), expected):
            raise OIDCRefused("id_token_wrong_nonce", "the ID token's nonce is not this sign-in's")
        return claims

    def _verified_claims(self, app: SocialApp, id_token: str) -> dict:
        try:
            return jwtkit.verify_and_decode(
                credential=id_token,
                keys_url=self.openid_config["jwks_uri"],
                issuer=self.openid_config["issuer"],
                audience=app.client_id,
                lookup_kid=jwtkit.lookup_kid_jwk,
                verify_signature=True,
            )
        except OAuth2Error as error:
            cause = error.__cause__
            code = _ID_TOKEN_ERRORS.get(type(cause), "id_token_invalid")
            raise OIDCRefused(code, f"{error}: {cause}" if cause else str(error)) from error


_ID_TOKEN_ERRORS: dict[type, str] = {
    jwt.ExpiredSignatureError: "id_token_expired",
    jwt.InvalidAudienceError: "id_token_wrong_audience",
    jwt.InvalidIssuerError: "id_token_wrong_issuer",
    jwt.InvalidSignatureError: "id_token_bad_signature",
    jwt.DecodeError: "id_token_bad_signature",
    jwt.ImmatureSignatureError: "id_token_not_yet_valid",
}

# What the user reads on the error page, per reason.
REFUSALS: dict[str, str] = {
    "id_token_expired": "The identity provider's ID token had expired. Sign in again.",
    "id_token_wrong_audience": "The ID token was issued for another application (wrong audience): refused.",
    "id_token_wrong_issuer": "The ID token comes from another issuer than the configured identity provider.",
    "id_token_bad_signature": "The ID token's signature does not verify: it was altered or not signed by the "
    "identity provider.",
    "id_token_wrong_nonce": "The ID token was issued for another sign-in (its nonce does not match): refused.",
    "id_token_not_yet_valid": "The ID token is not valid yet: check the clocks of the dashboard and the provider.",
    "id_token_invalid": "The identity provider's ID token is not valid.",
    "state_unknown": "This sign-in response is unknown or was already used (its state does not match a sign-in "
    "started here). Start again from the login page.",
    "pkce_missing": "This sign-in cannot be completed: its PKCE verifier is missing. Start again from the login page.",
    "code_exchange_refused": "The identity provider refused to exchange the authorization code.",
    "provider_error": "The identity provider answered with an error.",
    "provider_unreachable": "The identity provider could not be reached.",
    "cancelled": "The sign-in was cancelled at the identity provider.",
}


class OIDCProvider(OpenIDConnectProvider):
    """allauth's openid_connect provider with a ``nonce`` (OIDC Core 3.1.2.1): a fresh one per sign-in, kept in the
    sign-in's state and required back in the ID token (``VerifyingOIDCAdapter``), so an ID token minted for another
    sign-in is refused. (``SOCIALACCOUNT_PROVIDERS["openid_connect"]["provider_class"]``.)"""

    # allauth includes "<package>.urls" for each provider: the package is still allauth's openid_connect.
    package = "allauth.socialaccount.providers.openid_connect"

    def redirect(self, request: HttpRequest, process, next_url=None, data=None, **kwargs):
        nonce = secrets.token_urlsafe(32)
        auth_params = kwargs.pop("auth_params", None)
        if auth_params is None:
            auth_params = self.get_auth_params()
        return super().redirect(
            request, process, next_url, data, auth_params={**auth_params, "nonce": nonce}, oidc_nonce=nonce, **kwargs
        )


class OIDCCallbackView(OAuth2CallbackView):
    """allauth's callback, handing the sign-in's state (its nonce) to the adapter that checks the ID token."""

    def _get_state(self, request: HttpRequest, provider):
        state, response = super()._get_state(request, provider)
        self.adapter.sign_in_state = state or {}
        return state, response


@login_not_required
def oidc_login(request: HttpRequest, provider_id: str) -> HttpResponse:
    try:
        return OAuth2LoginView.adapter_view(VerifyingOIDCAdapter(request, provider_id))(request)
    except SocialApp.DoesNotExist as error:
        raise Http404 from error


@login_not_required
def oidc_callback(request: HttpRequest, provider_id: str) -> HttpResponse:
    try:
        return OIDCCallbackView.adapter_view(VerifyingOIDCAdapter(request, provider_id))(request)
    except SocialApp.DoesNotExist as error:
        raise Http404 from error


@checks.register(checks.Tags.security)
def check_role_map(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """``manage.py check`` (and every process start) refuses an ``OIDC_ROLE_MAP`` naming a role that does not
    exist: a typo would otherwise silently give nobody the role."""
    unknown = sorted({role for roles in settings.OIDC_ROLE_MAP.values() for role in roles} - set(Role.values))
    if not unknown:
        return []
    return [
        checks.Error(
            f"OIDC_ROLE_MAP names roles the dashboard does not have: {', '.join(unknown)}",
            hint=f"The roles are: {', '.join(Role.values)}",
            id="governance.E001",
        )
    ]


# --- the roles: groups claim -> role groups, every login ---------------------------------------------------------


def claim_values(claims: dict[str, Any], claim: str | None = None) -> list[str]:
    """The groups claim as a list of strings (a provider may send one string)."""
    value = claims.get(claim or settings.OIDC_GROUPS_CLAIM)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, dict):
        return [str(v) for v in value]
    return [str(value)]


def mapped_roles(values: Iterable[str], role_map: dict[str, tuple[str, ...]] | None = None) -> dict[str, list[str]]:
    """``{role: [claim values that grant it]}`` for the claim values the map knows."""
    role_map = settings.OIDC_ROLE_MAP if role_map is None else role_map
    granted: dict[str, list[str]] = {}
    for value in values:
        for role in role_map.get(value, ()):
            granted.setdefault(role, []).append(value)
    return granted


def roles_sync_from_claims(*, user, claims: dict[str, Any], provider: str) -> list[dict[str, Any]]:
    """Set the user's role groups to what the claims map to; groups that are not roles are left alone.

    Each role added or removed is a ledger entry (``auth.role_grant`` / ``auth.role_revoke``) naming the claim value
    that caused it (for a removal: the claim values that would have granted it and are no longer sent). Returns the
    changes."""
    claim = settings.OIDC_GROUPS_CLAIM
    values = claim_values(claims, claim)
    wanted = mapped_roles(values)
    sources_of: dict[str, list[str]] = {}
    for value, roles in settings.OIDC_ROLE_MAP.items():
        for role in roles:
            sources_of.setdefault(role, []).append(value)
    actor = Actor(kind="system", name=f"OIDC {provider}"[:150])
    changes: list[dict[str, Any]] = []
    with transaction.atomic():
        type(user).objects.select_for_update().filter(pk=user.pk).first()
        role_names = set(Role.values)
        groups = {g.name: g for g in Group.objects.filter(name__in=role_names)}
        held = set(user.groups.filter(name__in=role_names).values_list("name", flat=True))
        to_add = sorted(set(wanted) - held, key=Role.values.index)
        to_remove = sorted(held - set(wanted), key=Role.values.index)
        missing = [r for r in to_add if r not in groups]
        if missing:
            log.error("OIDC_ROLE_MAP names role groups that do not exist: %s", missing)
            to_add = [r for r in to_add if r in groups]
        if to_add:
            user.groups.add(*(groups[r] for r in to_add))
        if to_remove:
            user.groups.remove(*(groups[r] for r in to_remove))
        for role in to_add:
            change = {"role": role, "change": "grant", "claim": claim, "values": wanted[role]}
            changes.append(change)
            ledger.append(
                actor=actor,
                action="auth.role_grant",
                object_type="auth.user",
                object_id=user.pk,
                object_repr=user.get_username(),
                before={"roles": sorted(held, key=Role.values.index)},
                after={"role": role, "claim": claim, "claim_values": wanted[role], "provider": provider},
                reason=f"Role {role} from the identity provider's claim {claim}={', '.join(wanted[role])}",
            )
        for role in to_remove:
            gone = sources_of.get(role, [])
            changes.append({"role": role, "change": "revoke", "claim": claim, "values": gone})
            ledger.append(
                actor=actor,
                action="auth.role_revoke",
                object_type="auth.user",
                object_id=user.pk,
                object_repr=user.get_username(),
                before={"roles": sorted(held, key=Role.values.index)},
                after={"role": role, "claim": claim, "claim_values_absent": gone, "provider": provider},
                reason=(
                    f"Role {role} removed: the identity provider's claim {claim} no longer contains "
                    f"{' or '.join(gone) if gone else 'a value mapped to it'}"
                ),
            )
    return changes


def _id_token_claims(sociallogin) -> dict[str, Any]:
    data = sociallogin.account.extra_data or {}
    return data.get("id_token") or {}


def _claims(sociallogin) -> dict[str, Any]:
    """The ID token's claims, with userinfo's on top (allauth fetches both; userinfo may carry more groups)."""
    data = sociallogin.account.extra_data or {}
    return {**(data.get("id_token") or {}), **(data.get("userinfo") or {})}


# --- the social account adapter ----------------------------------------------------------------------------------


class SocialAccountAdapter(BaseSocialAccountAdapter):
    """Matched by ``sub`` only; roles synced before the login's stages run (the MFA rule sees the roles)."""

    def is_auto_signup_allowed(self, request: HttpRequest, sociallogin) -> bool:
        # allauth would stop at a sign-up form when the e-mail belongs to an existing user: that user is not this
        # one (matching is by sub), so the new account is made anyway.
        return True

    def pre_social_login(self, request: HttpRequest, sociallogin) -> None:
        super().pre_social_login(request, sociallogin)
        if sociallogin.account.provider != settings.OIDC_PROVIDER_ID:
            return
        id_claims = _id_token_claims(sociallogin)
        # Kept on the request: allauth logs a signed-in user out (flushing the session) before the new login, and
        # the session is written once the login's authentication step is recorded (``_remember_in_session``).
        request._rgd_oidc = {
            SESSION_AMR: [str(v) for v in id_claims.get("amr") or []],
            SESSION_AUTH_TIME: id_claims.get("auth_time") or id_claims.get("iat"),
            SESSION_PROVIDER: sociallogin.account.provider,
            SESSION_ID_TOKEN: getattr(request, "_rgd_oidc_id_token", ""),
            SESSION_NO_ROLE: False,
        }
        if sociallogin.is_existing:
            self._sync(request, sociallogin.user, sociallogin)

    def save_user(self, request: HttpRequest, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form=form)
        if sociallogin.account.provider == settings.OIDC_PROVIDER_ID:
            self._sync(request, user, sociallogin)
        return user

    def _sync(self, request: HttpRequest, user, sociallogin) -> None:
        claims = _claims(sociallogin)
        roles_sync_from_claims(user=user, claims=claims, provider=provider_name())
        if hasattr(request, "_rgd_oidc"):
            request._rgd_oidc[SESSION_NO_ROLE] = not user.is_superuser and not mapped_roles(claim_values(claims))

    def on_authentication_error(self, request, provider, error=None, exception=None, extra_context=None) -> None:
        super().on_authentication_error(
            request, provider, error=error, exception=exception, extra_context=extra_context
        )
        code = _refusal_code(error, exception, extra_context or {})
        if extra_context is not None:
            extra_context["refusal"] = {"code": code, "message": REFUSALS.get(code, REFUSALS["provider_error"])}
        detail = getattr(exception, "detail", None) or (str(exception) if exception else "")
        if not detail and request.GET.get("error"):
            detail = f"{request.GET.get('error')}: {request.GET.get('error_description', '')}"
        name = getattr(provider, "name", "") or provider_name()
        denials.record(
            denials.Denial(
                reason=f"oidc-{code}",
                action="auth.login_failed",
                object_type="auth.login",
                object_repr=f"OIDC {name}"[:300],
                after={
                    "method": "oidc",
                    "provider": name,
                    "error": code,
                    "detail": detail[:500],
                    "ip": denials.client_address(request),
                },
                reason_text=f"Sign-in with the identity provider refused: {code}",
            ),
            request=request,
            actor=denials.ANONYMOUS,
        )


def _refusal_code(error, exception, extra_context: dict) -> str:
    if isinstance(exception, OIDCRefused):
        return exception.code
    if isinstance(exception, requests.RequestException):
        return "provider_unreachable"
    if exception is None and "state_id" in extra_context:
        return "state_unknown"
    if str(error) == "cancelled":
        return "cancelled"
    return "provider_error"


@receiver(authentication_step_completed, dispatch_uid="governance.oidc.session")
def _remember_in_session(sender, request, method, user=None, provider=None, **kwargs) -> None:
    """The ID token's amr and auth_time, the raw token and the no-role flag go into the session when the OIDC step
    is recorded (before the login's stages: the MFA stage reads ``oidc_amr``). A password step clears them, so an
    earlier OIDC login's ``amr`` never vouches for a password login in the same session."""
    if method == "socialaccount" and provider == settings.OIDC_PROVIDER_ID and hasattr(request, "_rgd_oidc"):
        request.session.update(request._rgd_oidc)
    elif method == "password":
        for key in SESSION_KEYS:
            request.session.pop(key, None)


# --- successful logins (local and OIDC) as ledger entries --------------------------------------------------------


@receiver(allauth_user_logged_in, dispatch_uid="governance.ledger.login")
def ledger_login(sender, request, user, sociallogin=None, **kwargs) -> None:
    """Every login through allauth's flow (the local form, the identity provider), after its stages."""
    after: dict[str, Any] = {"method": "password", "ip": denials.client_address(request)}
    if sociallogin is not None:
        id_claims = _id_token_claims(sociallogin)
        after |= {
            "method": "oidc",
            "provider": provider_name(),
            "sub": sociallogin.account.uid,
            "amr": request.session.get(SESSION_AMR, []),
            "auth_time": id_claims.get("auth_time"),
        }
    ledger.append(
        actor=user_actor(user),
        action="auth.login",
        object_type="auth.user",
        object_id=user.pk,
        object_repr=user.get_username(),
        after=after,
        reason="Signed in with the identity provider" if sociallogin is not None else "Signed in with a password",
    )


# --- a user whose claims map to no role --------------------------------------------------------------------------


class NoRoleMiddleware:
    """After an OIDC login whose claims map to no role, every page but this one (and logging out) answers with the
    page saying so. The decision is made at login (the session flag), so requests pay no query for it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is not None and session.get(SESSION_NO_ROLE) and request.user.is_authenticated:
            allowed = {reverse("no_role"), reverse("logout")}
            if request.path not in allowed and not request.path.startswith(f"/{settings.STATIC_URL.lstrip('/')}"):
                return redirect("no_role")
        return self.get_response(request)


@require_safe
def no_role(request: HttpRequest) -> HttpResponse:
    if not request.session.get(SESSION_NO_ROLE):
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/no_role.html", {"provider_name": provider_name()}, status=403)


# --- logging out: the dashboard's session, then the provider's (RP-initiated logout) ----------------------------


def end_session_endpoint() -> str | None:
    """The provider's ``end_session_endpoint`` from its discovery document (cached an hour), None without one or
    when the provider cannot be reached (logging out of the dashboard never depends on it)."""
    key = f"oidc-end-session:{settings.OIDC_ISSUER}"
    cached = cache.get(key)
    if cached is not None:
        return cached or None
    url = settings.OIDC_ISSUER.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=5)
        response.raise_for_status()
        endpoint = str(response.json().get("end_session_endpoint") or "")
    except (requests.RequestException, ValueError) as error:
        log.warning("OIDC discovery for logout failed: %s", error)
        return None
    cache.set(key, endpoint, 3600)
    return endpoint or None


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    session = request.session
    was_oidc = bool(session.get(SESSION_PROVIDER)) and enabled()
    id_token = session.get(SESSION_ID_TOKEN, "")
    target = None
    if was_oidc:
        endpoint = end_session_endpoint()
        if endpoint:
            query = {
                "client_id": settings.OIDC_CLIENT_ID,
                "post_logout_redirect_uri": request.build_absolute_uri(resolve_url(settings.LOGOUT_REDIRECT_URL)),
            }
            if id_token:
                query["id_token_hint"] = id_token
            target = f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"
    if request.user.is_authenticated:
        ledger.append(
            actor=user_actor(request.user),
            action="auth.logout",
            object_type="auth.user",
            object_id=request.user.pk,
            object_repr=request.user.get_username(),
            after={"method": "oidc" if was_oidc else "password", "provider_logout": bool(target)},
            reason="Signed out" + (" (and at the identity provider)" if target else ""),
        )
    auth_logout(request)
    return HttpResponseRedirect(target or resolve_url(settings.LOGOUT_REDIRECT_URL))
