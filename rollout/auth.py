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

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.forms import LoginForm as AllauthLoginForm
from allauth.account.views import LoginView as AllauthLoginView
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest
from django.urls import reverse

# allauth's notices on log in and log out: the dashboard never showed them.
_SILENCED_MESSAGES = {"account/messages/logged_in.txt", "account/messages/logged_out.txt"}


class AccountAdapter(DefaultAccountAdapter):
    """No self-registration: accounts are made by an admin or provisioned from the identity provider."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False

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
