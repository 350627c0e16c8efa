"""Logging in, with django-allauth: the local login form at ``/login/``, closed sign-up, the adapters.

Accounts come from the rollout admins (the Django admin) or from the company's identity provider, never from a
sign-up form: local sign-up is closed (:class:`AccountAdapter`). Local password login stays at ``/login/`` (URL name
``login``) with the fields it always had (``username``, ``password``), through allauth's login flow so that its
stages (the second factor) and its record of how the user authenticated (re-authentication) apply to it.
``LOCAL_LOGIN_ENABLED=false`` turns it off (production behind an identity provider): the page then offers the
provider, and the form stays only as the break-glass door of a superuser (anyone else is refused). The admin's login
page is the same view, so no login skips allauth's stages.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.forms import LoginForm as AllauthLoginForm
from allauth.account.views import LoginView as AllauthLoginView
from allauth.core import context as allauth_context
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.stages import AuthenticateStage
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse

# allauth's notices on log in and log out: the dashboard never showed them.
_SILENCED_MESSAGES = {"account/messages/logged_in.txt", "account/messages/logged_out.txt"}


class AccountAdapter(DefaultAccountAdapter):
    """No self-registration: accounts are made by an admin or provisioned from the identity provider."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False

    def get_login_stages(self) -> list[str]:
        """allauth's stages, with its second-factor step skipped when the identity provider checked one."""
        return [
            "rollout.auth.MfaAuthenticateStage" if stage == "allauth.mfa.stages.AuthenticateStage" else stage
            for stage in super().get_login_stages()
        ]

    def is_reauthentication_required(self, *, app: str, **kwargs: Any) -> bool:
        """Setting up or changing a second factor right after logging in needs no second password prompt: any
        authentication within ``REAUTH_MAX_AGE`` counts (allauth otherwise counts only re-authentications)."""
        request = allauth_context.request
        if app == "allauth.mfa" and request is not None and fresh_authentication(request):
            return False
        return super().is_reauthentication_required(app=app, **kwargs)

    def add_message(self, request, level, message_template=None, message_context=None, extra_tags="", message=None):
        if message_template in _SILENCED_MESSAGES:
            return
        super().add_message(
            request,
            level,
            message_template=message_template,
            message_context=message_context,
            extra_tags=extra_tags,
            message=message,
        )


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """The identity provider's users get an account at their first login (local sign-up stays closed)."""

    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        return True


class LoginForm(AllauthLoginForm):
    """allauth's login form with the field names of Django's: ``username`` and ``password``."""

    local_login_refused = False
    staff_refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields = dict(self.fields)
        username = fields.pop("login")
        username.widget.attrs.pop("placeholder", None)
        username.widget.attrs["autofocus"] = True
        self.fields = {"username": username, **fields}
        self.fields["password"].widget.attrs.pop("placeholder", None)
        for field in self.fields.values():
            field.widget.attrs["class"] = "form-control"

    def clean_username(self) -> str:
        return self.cleaned_data["username"].strip()

    def clean(self) -> dict[str, Any]:
        if "username" in self.cleaned_data:
            self.cleaned_data["login"] = self.cleaned_data["username"]
        cleaned = super().clean()
        if self.user is not None and not settings.LOCAL_LOGIN_ENABLED and not self.user.is_superuser:
            # Switched off: the form is the break-glass door, for superusers only.
            self.user = None
            self.local_login_refused = True
            raise forms.ValidationError(
                "Local login is switched off: sign in with the identity provider.", code="local_login_disabled"
            )
        return cleaned


class LoginView(AllauthLoginView):
    """``/login/``: the local form (when ``LOCAL_LOGIN_ENABLED``) and the identity provider's button."""

    form_class = LoginForm
    template_name = "registration/login.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["next"] = context.get("redirect_field_value") or ""
        context["local_login_enabled"] = settings.LOCAL_LOGIN_ENABLED
        # "Sign in with <name>" when an identity provider is configured (OIDC_ISSUER; governance/oidc.py).
        context["oidc_provider"] = (
            {
                "name": settings.OIDC_PROVIDER_NAME,
                "url": reverse("openid_connect_login", kwargs={"provider_id": settings.OIDC_PROVIDER_ID}),
            }
            if settings.OIDC_ISSUER
            else None
        )
        return context


class AdminLoginForm(LoginForm):
    """The admin's login refuses an account that is not staff (as Django's admin does), without logging it in."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.user is not None and not (self.user.is_active and self.user.is_staff):
            self.user = None
            self.staff_refused = True
            raise forms.ValidationError(
                "Please enter the correct username and password for a staff account.", code="invalid_login"
            )
        return cleaned


class AdminLoginView(LoginView):
    """``admin.site.login``: the dashboard's login (axes, the second factor, the lockout page), back to the admin."""

    form_class = AdminLoginForm

    def get_default_success_url(self) -> str:
        return reverse("admin:index")


@login_not_required
def admin_login(request: HttpRequest, extra_context: dict | None = None):
    return AdminLoginView.as_view()(request)


# --- The second factor ---------------------------------------------------------------------------------------------
# Values of the ID token's ``amr`` (RFC 8176) that say the provider checked a second factor itself.
PROVIDER_MFA_AMR = frozenset({"mfa", "otp", "hwk"})
# Where the OpenID Connect login keeps the ID token's ``amr`` list (written at each provider login).
OIDC_AMR_SESSION_KEY = "oidc_amr"
_MFA_OK_SESSION_KEY = "rgd_mfa_ok"
# Pages a user who must enrol a second factor may still reach: the enrolment itself, re-authentication, leaving.
_ENROLMENT_URL_NAMES = frozenset(
    {
        "mfa_index",
        "mfa_activate_totp",
        "mfa_view_recovery_codes",
        "mfa_generate_recovery_codes",
        "mfa_download_recovery_codes",
        "mfa_reauthenticate",
        "account_reauthenticate",
        "logout",
        "account_logout",
        "login",
        "account_login",
    }
)
# Requests that are not a person's page: token-authenticated machine clients.
_NOT_PAGES = ("/api/", "/ofrep/", "/metrics", "/static/")


def provider_asserted_mfa(request: HttpRequest) -> bool:
    """The identity provider checked a second factor at this session's login (``amr`` has mfa, otp or hwk)."""
    amr = request.session.get(OIDC_AMR_SESSION_KEY) or []
    return isinstance(amr, list) and bool(PROVIDER_MFA_AMR.intersection(str(a) for a in amr))


def mfa_required(user: Any) -> bool:
    """Superusers, and members of a group named in ``MFA_REQUIRED_ROLES``, need a second factor."""
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name__in=settings.MFA_REQUIRED_ROLES).exists()


def has_second_factor(user: Any) -> bool:
    from allauth.mfa.models import Authenticator
    from allauth.mfa.utils import is_mfa_enabled

    return is_mfa_enabled(user, [Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN])


def mfa_satisfied(request: HttpRequest) -> bool:
    """The user needs no second factor, has one (allauth asks for it at every login), or the provider checked one."""
    user = request.user
    return not mfa_required(user) or provider_asserted_mfa(request) or has_second_factor(user)


class MfaEnrolmentMiddleware:
    """With ``MFA_ENFORCED``: a user who needs a second factor and has none is sent to its enrolment, and reaches
    nothing else (but re-authentication and logging out) until enrolled.

    Once satisfied the session remembers it, so the check costs no query on later requests. Goes after the
    login-required middleware (the user is known) and before anything acts for the user.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        if not settings.MFA_ENFORCED or not request.user.is_authenticated:
            return None
        if request.session.get(_MFA_OK_SESSION_KEY) == str(request.user.pk):
            return None
        match = request.resolver_match
        if request.path_info.startswith(_NOT_PAGES) or (match and match.url_name in _ENROLMENT_URL_NAMES):
            return None
        if mfa_satisfied(request):
            request.session[_MFA_OK_SESSION_KEY] = str(request.user.pk)
            return None
        messages.warning(
            request,
            "Your role needs a second factor. Set up an authenticator app below before you continue.",
            fail_silently=True,
        )
        return redirect("mfa_activate_totp")


class MfaAuthenticateStage(AuthenticateStage):
    """The login's second-factor step, unless the provider's ID token said it checked one (``amr``)."""

    def _should_handle(self, request: HttpRequest) -> bool:
        return not provider_asserted_mfa(request) and super()._should_handle(request)


class MfaAdapter(DefaultMFAAdapter):
    def get_totp_issuer(self) -> str:
        return settings.MFA_TOTP_ISSUER

    def can_delete_authenticator(self, authenticator: Any) -> bool:
        """A user who must have a second factor keeps it (an admin resets it: ``governance.services.mfa_reset``)."""
        request = allauth_context.request
        user = authenticator.user
        if settings.MFA_ENFORCED and mfa_required(user) and not (request and provider_asserted_mfa(request)):
            return False
        return super().can_delete_authenticator(authenticator)


# --- Re-authentication before a decision -----------------------------------------------------------------------------
# The ledger's names for allauth's authentication records.
_METHODS = {"password": "password", "socialaccount": "oidc"}


def authentication_records(request: HttpRequest) -> list[dict[str, Any]]:
    """allauth's log of this session's authentications (login and re-authentications), oldest first."""
    from allauth.account.internal.flows.login import get_authentication_records

    return list(get_authentication_records(request, request.user))


def last_authentication(request: HttpRequest) -> dict[str, Any] | None:
    """How and when the user last authenticated in this session: ``{"method", "at", "reauthenticated"}``.

    ``method``: ``password``, ``totp``, ``recovery_codes`` (a second-factor step) or ``oidc`` (the provider);
    ``at``: ISO 8601 UTC.
    """
    records = authentication_records(request)
    if not records:
        return None
    record = records[-1]
    method = record.get("method", "")
    name = record.get("type", "mfa") if method == "mfa" else _METHODS.get(method, method)
    at = dt.datetime.fromtimestamp(float(record.get("at", 0)), tz=dt.UTC)
    return {
        "method": str(name),
        "at": at.isoformat().replace("+00:00", "Z"),
        "reauthenticated": bool(record.get("reauthenticated")),
    }


def authenticated_within(request: HttpRequest, seconds: int) -> bool:
    records = authentication_records(request)
    return bool(records) and time.time() - float(records[-1].get("at", 0)) < seconds


def fresh_authentication(request: HttpRequest) -> bool:
    """The user authenticated (logged in or re-authenticated) less than ``REAUTH_MAX_AGE`` seconds ago."""
    return authenticated_within(request, settings.REAUTH_MAX_AGE)


def reauthentication_url(request: HttpRequest, back: str) -> str | None:
    """Where the user proves it is them again: the password, else the second factor, else the identity provider
    (a round trip with ``max_age=0``, so the provider asks again)."""
    user = request.user
    query = urlencode({"next": back})
    if user.has_usable_password():
        return f"{reverse('account_reauthenticate')}?{query}"
    if has_second_factor(user):
        return f"{reverse('mfa_reauthenticate')}?{query}"
    account = user.socialaccount_set.filter(provider__isnull=False).order_by("pk").first()
    if account is not None:
        # The OpenID Connect helper's hook: allauth has no social re-authentication, so log in again at the
        # provider, which must authenticate anew (max_age=0); the new login is this session's latest record.
        params = urlencode({"process": "login", "next": back, "auth_params": "max_age=0&prompt=login"})
        return f"{reverse('openid_connect_login', kwargs={'provider_id': account.provider})}?{params}"
    return None


def require_fresh_authentication(request: HttpRequest, *, back: str) -> HttpResponse | None:
    """``None`` when the user may decide now; else the redirect to re-authentication (and back to ``back``).

    Decision views call this first on every POST, and pass :func:`decision_auth` to their service.
    """
    if fresh_authentication(request):
        return None
    url = reauthentication_url(request, back)
    if url is None:
        raise PermissionDenied("This account has no way to re-authenticate.")
    minutes = max(1, settings.REAUTH_MAX_AGE // 60)
    messages.info(
        request,
        f"A decision needs a fresh authentication (within {minutes} minute{'s' if minutes != 1 else ''}): "
        "confirm it is you, then take the decision again.",
        fail_silently=True,
    )
    return HttpResponseRedirect(url)


def decision_auth(request: HttpRequest) -> dict[str, Any] | None:
    """For the decision's ledger entry: the last authentication, without the internal flag."""
    last = last_authentication(request)
    return {"method": last["method"], "at": last["at"]} if last else None
