from django.urls import path

from . import views

app_name = "rollout"

urlpatterns = [
    path("", views.home, name="home"),
    path("tenants/", views.tenant_list, name="tenants"),
    path("preferences/", views.preferences, name="preferences"),
    path("rollouts/new/", views.rollout_create, name="create"),
    path("rollouts/<slug:slug>/", views.rollout_detail, name="detail"),
    path("rollouts/<slug:slug>/status/", views.rollout_status, name="status"),
    path("rollouts/<slug:slug>/status/live/", views.rollout_status_live, name="status_live"),
    path("rollouts/<slug:slug>/plan/", views.plan_edit, name="plan_edit"),
    path("rollouts/<slug:slug>/escalation/", views.escalation_edit, name="escalation_edit"),
    path("rollouts/<slug:slug>/cohorts/<int:pk>/", views.cohort_edit, name="cohort_edit"),
    path("rollouts/<slug:slug>/phases/<ident:kind>/", views.phase_detail, name="phase"),
    path("rollouts/<slug:slug>/checklist/<int:pk>/tick/", views.checklist_tick, name="checklist_tick"),
    path("rollouts/<slug:slug>/checklist/<int:pk>/reopen/", views.checklist_untick, name="checklist_untick"),
    path("rollouts/<slug:slug>/kill-switch/", views.kill_switch, name="kill_switch"),
    path("rollouts/<slug:slug>/rollback/", views.rollback, name="rollback"),
    path("rollouts/<slug:slug>/incidents/<int:pk>/", views.incident_detail, name="incident"),
    path(
        "rollouts/<slug:slug>/incidents/<int:pk>/steps/<int:step_pk>/",
        views.incident_step_tick,
        name="incident_step",
    ),
    path("rollouts/<slug:slug>/incidents/<int:pk>/close/", views.incident_close, name="incident_close"),
    path("rollouts/<slug:slug>/communications/", views.communication_list, name="communications"),
    path("rollouts/<slug:slug>/communications/new/", views.communication_create, name="communication_create"),
    path("rollouts/<slug:slug>/communications/<int:pk>/", views.communication_detail, name="communication"),
    path("rollouts/<slug:slug>/communications/<int:pk>/edit/", views.communication_edit, name="communication_edit"),
    path(
        "rollouts/<slug:slug>/communications/<int:pk>/publish/",
        views.communication_publish,
        name="communication_publish",
    ),
]
