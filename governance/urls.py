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

urlpatterns += [
    path("compliance/retention/", views.retention, name="retention"),
    path("compliance/retention/holds/<int:pk>/release/", views.hold_release, name="hold_release"),
    path("compliance/jobs/", views.jobs_page, name="jobs"),
    path("compliance/jobs/<ident:job>/run/", views.job_run_now, name="job_run"),
    path("compliance/records/", views.records_list, name="records"),
    path("compliance/records/new/", views.record_create, name="record_create"),
    path("compliance/records/<slug:key>/", views.record_detail, name="record"),
    path("compliance/records/<slug:key>/edit/", views.record_edit, name="record_edit"),
    path("compliance/records/<slug:key>/changes/<int:pk>/decide/", views.change_decide, name="change_decide"),
    path("compliance/reviews/", views.reviews_list, name="reviews"),
    path("compliance/reviews/<int:pk>/", views.review_detail, name="review"),
    path("compliance/reviews/<int:pk>/reassign/", views.review_reassign, name="review_reassign"),
    path("rollouts/<slug:slug>/delta-reports/", views.delta_reports, name="delta_reports"),
    path("rollouts/<slug:slug>/delta-reports/<ident:day>/", views.delta_report_detail, name="delta_report"),
]
