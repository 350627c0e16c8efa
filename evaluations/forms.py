"""Input parsing for the evaluation pages. Forms validate shape; services validate rules."""

from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from .models import METRICS, Comparator


class CriterionRowForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Gate on it")
    comparator = forms.ChoiceField(choices=Comparator.choices)
    threshold = forms.FloatField()

    def __init__(self, *args, metric: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.metric = metric
        self.spec = METRICS[metric]
        threshold = self.fields["threshold"]
        threshold.validators = [*threshold.validators, MinValueValidator(0.0)]
        if self.spec.unit == "ratio":
            threshold.validators.append(MaxValueValidator(1.0))
            threshold.widget.attrs.update(min="0", max="1", step="0.001")
        else:
            threshold.widget.attrs.update(min="0", step="any")


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Recorded in the history; the plan's sign-offs are superseded.",
    )
