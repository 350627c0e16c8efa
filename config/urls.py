from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from evaluations import api_urls as evaluations_api
from governance import api_urls as governance_api
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
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # allauth's own names for the same two pages.
    path("login/", LoginView.as_view(), name="account_login"),
    path("logout/", auth_views.LogoutView.as_view(), name="account_logout"),
    path("accounts/", include("config.auth_urls")),
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
