from django.urls import path

from . import views

app_name = "evaluations"

urlpatterns = [
    path("evaluations/", views.index, name="index"),
    path("rollouts/<slug:slug>/deltas/", views.deltas, name="deltas"),
    path("rollouts/<slug:slug>/runs/", views.runs, name="runs"),
    path("rollouts/<slug:slug>/runs/<ident:run_id>/", views.run_detail, name="run"),
    path("rollouts/<slug:slug>/success-criteria/", views.criteria_edit, name="criteria"),
]
