"""A server-side confirmation step before an action that cannot be taken back.

The form posts as usual; the view validates it and, unless the post says ``confirmed=yes``, answers a page
that names what is about to happen, shows what was entered, and posts the same fields again with
``confirmed=yes`` (the button's value). Nothing is written before that second post. It works without JavaScript, and a
scripted client has to send ``confirmed=yes`` deliberately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

CONFIRM_FIELD = "confirmed"
CONFIRM_VALUE = "yes"


BACK_VALUE = "back"


def is_confirmed(request: HttpRequest) -> bool:
    return request.method == "POST" and request.POST.get(CONFIRM_FIELD) == CONFIRM_VALUE


def went_back(request: HttpRequest) -> bool:
    """The confirmation page's "edit" button: show the form again, filled with what was entered."""
    return request.method == "POST" and request.POST.get(CONFIRM_FIELD) == BACK_VALUE


@dataclass(frozen=True)
class Entered:
    label: str
    value: str
    markdown: bool = False


def _display(field: forms.Field, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(field, forms.ChoiceField) and not isinstance(field, forms.ModelChoiceField):
        labels = {str(k): str(v) for k, v in field.choices}
        return labels.get(str(value), str(value))
    if value is None:
        return ""
    return str(value)


def entered(form: forms.Form, *, markdown: tuple[str, ...] = ()) -> list[Entered]:
    """What a valid form holds, field label and display value, for the confirmation page to show."""
    rows = []
    for name, field in form.fields.items():
        if isinstance(field.widget, forms.HiddenInput):
            continue
        value = form.cleaned_data.get(name)
        if value in (None, "") and not isinstance(value, bool):
            continue
        label = str(field.label or name.replace("_", " ").capitalize())
        rows.append(Entered(label, _display(field, value), markdown=name in markdown))
    return rows


def reposted(request: HttpRequest) -> list[tuple[str, str]]:
    """The fields of the first post, to send again (every value of a multi-valued field)."""
    return [
        (key, value)
        for key, values in request.POST.lists()
        if key not in ("csrfmiddlewaretoken", CONFIRM_FIELD)
        for value in values
    ]


def confirm_step(
    request: HttpRequest,
    *,
    title: str,
    explanation: str,
    submit: str,
    cancel: str,
    rows: list[Entered] | None = None,
    rollout: Any = None,
    danger: bool = True,
    action: str = "",
    back: str = "",
) -> HttpResponse:
    """The confirmation page: the second post goes to ``action`` (default: the same URL) with ``confirmed=yes``."""
    return render(
        request,
        "confirm_step.html",
        {
            "title": title,
            "explanation": explanation,
            "submit": submit,
            "cancel": cancel,
            "rows": rows or [],
            "fields": reposted(request),
            "rollout": rollout,
            "danger": danger,
            "action": action,
            "back": back,
            "confirm_field": CONFIRM_FIELD,
            "confirm_value": CONFIRM_VALUE,
        },
    )
