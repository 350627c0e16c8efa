"""URLs of the API (``/api/v1/``), its OpenAPI schema and its docs (self-hosted Swagger UI and Redoc)."""

from django.contrib.auth.decorators import login_not_required, login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated

from . import api, api_imports
from .authentication import BearerTokenAuthentication

# The schema is read by people (through the docs pages, logged in) and by tools (with any token).
schema_view = login_not_required(
    SpectacularAPIView.as_view(
        authentication_classes=[BearerTokenAuthentication, SessionAuthentication],
        permission_classes=[IsAuthenticated],
    )
)
# The docs are pages for people: login required. (DRF marks every APIView login_not_required for the
# login-required middleware, so the decorator does it.)
docs_options = {
    "url_name": "api:schema",
    "authentication_classes": [SessionAuthentication],
    "permission_classes": [AllowAny],
}

urlpatterns = [
    path("schema/", schema_view, name="schema"),
    path(
        "docs/",
        login_required(SpectacularSwaggerView.as_view(template_name="api/swagger_ui.html", **docs_options)),
        name="docs",
    ),
    path(
        "redoc/",
        login_required(SpectacularRedocView.as_view(template_name="api/redoc.html", **docs_options)),
        name="redoc",
    ),
    path("evaluation-runs/", api.EvaluationRunIngestView.as_view(), name="evaluation-runs"),
    path("evaluation-runs/<ident:run_id>/", api.EvaluationRunDetailView.as_view(), name="evaluation-run"),
    path("monitoring-samples/", api.MonitoringSampleIngestView.as_view(), name="monitoring-samples"),
    path("rollouts/", api.RolloutListView.as_view(), name="rollouts"),
    path("rollouts/<slug:slug>/flags/", api.RolloutFlagsView.as_view(), name="rollout-flags"),
    path("rollouts/<slug:slug>/deltas/", api.RolloutDeltasView.as_view(), name="rollout-deltas"),
    path("imports/inspect/", api_imports.InspectImportView.as_view(), name="import-inspect"),
    path("imports/promptfoo/", api_imports.PromptfooImportView.as_view(), name="import-promptfoo"),
]
