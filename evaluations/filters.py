"""The runs list's filters and search (django-filter), read from the URL.

The runs list grows by a million a year, so every filter keeps an index serving the page: the phase is
matched by its id (not a join on its kind) so ``(rollout, finished_at, id)`` still orders the rows; the text
search is a **prefix of the run id**, served by the run id's ``varchar_pattern_ops`` index (the ``_like`` index
PostgreSQL gets for a unique ``CharField``), never a substring scan over the table.
"""

from __future__ import annotations

import datetime as dt

import django_filters
from django import forms
from django.db.models import Subquery

from rollout.forms import BoundedDateField
from rollout.models import Phase, PhaseKind

from .models import Arm, EvaluationRun


class BoundedDateFilter(django_filters.DateFilter):
    field_class = BoundedDateField


class RunFilterBase(forms.Form):
    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "“Until” is before “from”.")
        return data


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


class RunFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="search", label="Run id starts with", max_length=200, help_text="A prefix of the run id."
    )
    phase = django_filters.ChoiceFilter(choices=PhaseKind.choices, method="by_phase", empty_label="Any phase")
    arm = django_filters.ChoiceFilter(choices=Arm.choices, empty_label="Both arms")
    since = BoundedDateFilter(
        method="finished_from", label="Finished from", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = BoundedDateFilter(
        method="finished_until", label="Finished until", widget=forms.DateInput(attrs={"type": "date"})
    )

    class Meta:
        model = EvaluationRun
        fields = ("q", "phase", "arm", "since", "until")
        form = RunFilterBase

    def search(self, queryset, name, value):
        value = value.strip()
        return queryset.filter(run_id__startswith=value) if value else queryset

    def by_phase(self, queryset, name, value):
        phase = Phase.objects.filter(rollout_id=self.rollout_id, kind=value).values("pk")[:1]
        return queryset.filter(phase_id=Subquery(phase))

    def finished_from(self, queryset, name, value):
        return queryset.filter(finished_at__gte=_day_start(value))

    def finished_until(self, queryset, name, value):  # inclusive: the whole day
        return queryset.filter(finished_at__lt=_day_start(value + dt.timedelta(days=1)))

    def __init__(self, *args, rollout_id: int, **kwargs):
        self.rollout_id = rollout_id
        super().__init__(*args, **kwargs)

    @property
    def applied(self) -> dict:
        """The filters that parsed (a bad one is dropped and reported, not a 500)."""
        if not self.is_bound:
            return {}
        self.form.is_valid()
        data = getattr(self.form, "cleaned_data", {})
        return {k: v for k, v in data.items() if v not in (None, "") and k not in self.form.errors}
