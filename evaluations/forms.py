"""Input parsing for the evaluation pages. Forms validate shape; services validate rules."""

from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from rollout.forms import BoundedDateField
from rollout.models import PhaseKind

from .models import METRICS, Arm, Comparator


class RunFilterForm(forms.Form):
    phase = forms.ChoiceField(choices=[("", "Any phase"), *PhaseKind.choices], required=False)
    arm = forms.ChoiceField(choices=[("", "Both arms"), *Arm.choices], required=False)
    since = BoundedDateField(required=False, label="Finished from", widget=forms.DateInput(attrs={"type": "date"}))
    until = BoundedDateField(required=False, label="Finished until", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "“Until” is before “from”.")
        return data

    def filters(self) -> dict:
        """The filters that parsed; a bad one is dropped (and reported), not a 500."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        return {k: data[k] for k in ("phase", "arm", "since", "until") if data.get(k) and k not in self.errors}


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
