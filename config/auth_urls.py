"""django-allauth's pages under ``/accounts/``: the ones the dashboard uses, not allauth's whole site.

Left out on purpose: sign-up (closed; ``account_signup`` answers allauth's "closed" page), e-mail management,
password change and reset (an admin sets passwords). ``account_login`` and ``account_logout`` are the dashboard's
own ``/login/`` and ``/logout/`` (config/urls.py).
"""

from allauth import app_settings as allauth_settings
from allauth.account import views as account_views
from allauth.socialaccount import views as socialaccount_views
from allauth.urls import build_provider_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("inactive/", account_views.account_inactive, name="account_inactive"),
    path("signup/", account_views.signup, name="account_signup"),
    path("reauthenticate/", account_views.reauthenticate, name="account_reauthenticate"),
]
if allauth_settings.MFA_ENABLED:
    urlpatterns += [path("2fa/", include("allauth.mfa.urls"))]
if allauth_settings.SOCIALACCOUNT_ENABLED:
    urlpatterns += [
        path("3rdparty/login/cancelled/", socialaccount_views.login_cancelled, name="socialaccount_login_cancelled"),
        path("3rdparty/login/error/", socialaccount_views.login_error, name="socialaccount_login_error"),
        path("3rdparty/signup/", socialaccount_views.signup, name="socialaccount_signup"),
        *build_provider_urlpatterns(),
    ]
