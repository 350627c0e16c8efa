from django.contrib import admin
from django.urls import include, path

from evaluations import api_urls as evaluations_api
from governance import api_urls as governance_api
from governance import oidc
from governance.metrics import MetricsView
from rollout.auth import LoginView, admin_login

# One API under /api/v1/ (namespace "api"): evaluations serves ingestion and reads,
# governance the rollout detail with its gates.
api_patterns = (evaluations_api.urlpatterns + governance_api.urlpatterns, "api")

# Every login goes through allauth's flow (axes, the second factor, the record re-authentication reads): the admin's
# login page too.
admin.site.login = admin_login

urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    # Ends the session, and after an OIDC login the provider's too (RP-initiated logout).
    path("logout/", oidc.logout, name="logout"),
    # allauth's own names for the same two pages.
    path("login/", LoginView.as_view(), name="account_login"),
    path("logout/", oidc.logout, name="account_logout"),
    # allauth's openid_connect views with the dashboard's adapter (the ID token's signature always verified, PKCE
    # insisted on): before allauth's own patterns for the same paths.
    path("accounts/oidc/<str:provider_id>/login/", oidc.oidc_login, name="openid_connect_login"),
    path("accounts/oidc/<str:provider_id>/login/callback/", oidc.oidc_callback, name="openid_connect_callback"),
    path("accounts/", include("config.auth_urls")),
    path("no-role/", oidc.no_role, name="no_role"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_patterns)),
    path("ofrep/v1/", include("evaluations.ofrep_urls")),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("", include("evaluations.urls")),
    path("", include("rollout.urls")),
    path("", include("governance.urls")),
]

handler403 = "rollout.views.permission_denied"
handler404 = "rollout.views.page_not_found"
# A lost database connection is a 503; everything else goes on to rollout.views.server_error.
handler500 = "evaluations.problems.server_error"
