from django.urls import path

from . import views

app_name = "governance"

urlpatterns = [
    path("rollouts/<slug:slug>/sign-off/", views.sign_off, name="sign_off"),
    path("rollouts/<slug:slug>/approvers/", views.approvers_edit, name="approvers"),
    path("rollouts/<slug:slug>/transitions/", views.transition_list, name="transitions"),
    path("rollouts/<slug:slug>/transitions/new/", views.transition_create, name="transition_create"),
    path("rollouts/<slug:slug>/transitions/<int:pk>/", views.transition_detail, name="transition"),
    path("rollouts/<slug:slug>/transitions/<int:pk>/decide/", views.transition_decide, name="transition_decide"),
    path("rollouts/<slug:slug>/transitions/<int:pk>/apply/", views.transition_apply, name="transition_apply"),
    path("rollouts/<slug:slug>/transitions/<int:pk>/withdraw/", views.transition_withdraw, name="transition_withdraw"),
    path("audit/", views.audit_list, name="audit"),
    path("audit/export/", views.audit_export, name="audit_export"),
]
