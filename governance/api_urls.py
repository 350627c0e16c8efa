from django.urls import path

from . import api

urlpatterns = [
    path("rollouts/<slug:slug>/", api.RolloutDetailView.as_view(), name="rollout"),
]
