"""URLs of the OpenFeature Remote Evaluation Protocol (``/ofrep/v1/``, namespace ``ofrep``)."""

from django.urls import path

from . import ofrep

app_name = "ofrep"

urlpatterns = [
    path("evaluate/flags", ofrep.EvaluateFlagsView.as_view(), name="evaluate-flags"),
    path("evaluate/flags/<ident:key>", ofrep.EvaluateFlagView.as_view(), name="evaluate-flag"),
]
