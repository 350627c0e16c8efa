"""Input parsing for the rollout pages. Forms validate shape; services validate rules."""

from __future__ import annotations

from django import forms
from django.forms import formset_factory

from .inputs import date_problem
from .models import (
    PHASE_SEQUENCE,
    CommunicationKind,
    FeedbackSeverity,
    Rollout,
    Severity,
    Tenant,
)
from .services import PLAN_FIELDS


class BoundedDateField(forms.DateField):
    """A date inside the supported range (``rollout.inputs``): the calendar arithmetic on it cannot overflow."""

    def validate(self, value):
        super().validate(value)
        why = value and date_problem(value)
        if why:
            raise forms.ValidationError(why, code="range")


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded in the history and the audit ledger.",
    )


class KillSwitchForm(ReasonForm):
    on = forms.TypedChoiceField(
        choices=[("1", "Turn the fallback ON (serve the legacy pipeline)"), ("0", "Turn the fallback OFF")],
        coerce=lambda v: v == "1",
        widget=forms.RadioSelect,
        label="Kill switch",
    )


class RolloutCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    expected_impacts = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    start_date = BoundedDateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The deployment calendar is laid out from this date (default: today).",
    )


class TickForm(forms.Form):
    evidence_url = forms.URLField(max_length=500, label="Evidence link", assume_scheme="https")


class FeedbackForm(forms.Form):
    severity = forms.ChoiceField(choices=FeedbackSeverity.choices)
    text = forms.CharField(max_length=10000, widget=forms.Textarea(attrs={"rows": 4}))
    link = forms.URLField(max_length=500, required=False, assume_scheme="https")


class CommunicationForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[(k, label) for k, label in CommunicationKind.choices if k != CommunicationKind.RETROSPECTIVE]
    )
    title = forms.CharField(max_length=300)
    body = forms.CharField(
        max_length=100_000, widget=forms.Textarea(attrs={"rows": 16}), help_text="Markdown; rendered safely."
    )
    publish = forms.BooleanField(required=False, help_text="Leave unticked to keep it as a draft.")


class CommunicationEditForm(forms.Form):
    title = forms.CharField(max_length=300)
    body = forms.CharField(max_length=100_000, widget=forms.Textarea(attrs={"rows": 16}))


class PlanForm(forms.ModelForm):
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    class Meta:
        model = Rollout
        fields = list(PLAN_FIELDS)
        widgets = {"expected_impacts": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, phases=(), **kwargs):
        super().__init__(*args, **kwargs)
        for phase in phases:
            self.fields[f"start_{phase.kind}"] = BoundedDateField(
                required=False,
                initial=phase.planned_start,
                label=f"Planned start: {phase.get_kind_display()}",
                widget=forms.DateInput(attrs={"type": "date"}),
            )

    def planned_starts(self) -> dict:
        return {kind: self.cleaned_data.get(f"start_{kind}") for kind in PHASE_SEQUENCE}

    def plan_fields(self) -> dict:
        return {name: self.cleaned_data[name] for name in PLAN_FIELDS}


class EscalationRowForm(forms.Form):
    severity = forms.ChoiceField(choices=Severity.choices)
    contact = forms.CharField(max_length=200)
    role = forms.CharField(max_length=100)
    channel = forms.CharField(max_length=200)


EscalationFormSet = formset_factory(EscalationRowForm, extra=2, can_delete=True, min_num=1, validate_min=True)


class CohortMembersForm(forms.Form):
    tenants = forms.ModelMultipleChoiceField(
        queryset=Tenant.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple
    )
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


def _zone_choices() -> list[tuple[str, str]]:
    from .timefmt import available_zones

    return [("", "My browser's zone"), *((z, z.replace("_", " ")) for z in sorted(available_zones()))]


class TimeZonePreferenceForm(forms.Form):
    time_zone = forms.ChoiceField(
        choices=_zone_choices,
        required=False,
        label="Time zone",
        help_text="Pages show times in this zone, with UTC on hover. Filters labelled UTC stay in UTC.",
    )
