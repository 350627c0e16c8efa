"""Input parsing for the governance pages. Forms validate shape; services validate rules."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.apps import apps
from django.utils.dateparse import parse_date, parse_datetime

from rollout.inputs import datetime_problem
from rollout.models import Rollout
from rollout.roles import Role, user_roles

from .ledger import KNOWN_ACTIONS
from .models import Decision, LeadRole, LegalHold, ProcessingRecord, ReviewKind, TransitionTarget
from .records import EDITABLE_FIELDS
from .reviews import ASSIGNABLE_ROLES
from .selectors import AuditFilter, HistoryOf, history_of

UTC_HELP = "UTC, e.g. 2025-06-01 or 2025-06-01T14:30Z"


def parse_utc(value: str) -> dt.datetime:
    """A date or date-time in UTC; a date means midnight, a time without offset means UTC.

    Raises ``ValueError`` with a message fit for the user.
    """
    text = value.strip()
    try:
        moment = parse_datetime(text.replace(" ", "T", 1)) if ("T" in text or " " in text) else None
        day = None if moment else parse_date(text)
    except ValueError:
        moment = day = None
    if moment is None and day is None:
        raise ValueError(f"“{value}” is not a date or date-time ({UTC_HELP}).")
    if moment is None:
        moment = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    why = datetime_problem(moment)
    if why:
        raise ValueError(f"“{value}”: {why}")
    return moment.astimezone(dt.UTC)


class UTCDateTimeField(forms.Field):
    """A UTC date or date-time typed as text (browsers' date-time inputs carry no time zone)."""

    widget = forms.TextInput(attrs={"placeholder": "2025-06-01T00:00Z", "maxlength": 40})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", UTC_HELP)
        super().__init__(**kwargs)

    def to_python(self, value):
        text = (value or "").strip()
        if not text:
            return None
        if len(text) > 40:
            raise forms.ValidationError("That is not a date or date-time.", code="invalid")
        try:
            return parse_utc(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from exc


class VersionField(forms.CharField):
    """The version a decision form showed (plan hash or request state), sent back so a stale one is refused."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("widget", forms.HiddenInput)
        kwargs.setdefault(
            "error_messages", {"required": "The form did not say which version it showed; reload the page."}
        )
        super().__init__(**kwargs)


class DecisionForm(forms.Form):
    version = VersionField()
    role = forms.ChoiceField(choices=LeadRole.choices)
    decision = forms.ChoiceField(choices=Decision.choices)
    comment = forms.CharField(max_length=5000, required=False, widget=forms.Textarea(attrs={"rows": 3}))


class TransitionRequestForm(forms.Form):
    justification = forms.CharField(
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Why now: what the evidence shows. The approving roles read this.",
    )


class ApplyForm(forms.Form):
    version = VersionField()
    note = forms.CharField(
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Note (optional)",
        help_text="Recorded with the apply in the audit ledger.",
    )


class ApproversForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Recorded in the audit ledger. Decisions already given on an affected open request are voided.",
    )

    def __init__(self, *args, config: dict[str, tuple[str, ...]], **kwargs):
        super().__init__(*args, **kwargs)
        for target, label in TransitionTarget.choices:
            self.fields[f"roles_{target}"] = forms.MultipleChoiceField(
                choices=LeadRole.choices,
                initial=list(config[target]),
                required=False,
                widget=forms.CheckboxSelectMultiple,
                label=f"Into {label}",
            )
        self.order_fields([*(f"roles_{t}" for t in TransitionTarget.values), "reason"])

    def roles_by_target(self) -> dict[str, list[str]]:
        return {t: self.cleaned_data[f"roles_{t}"] for t in TransitionTarget.values}


class AuditFilterForm(forms.Form):
    since = UTCDateTimeField(label="From (UTC, inclusive)")
    until = UTCDateTimeField(label="Until (UTC, exclusive)")
    rollout = forms.ModelChoiceField(
        queryset=Rollout.objects.order_by("name"),
        to_field_name="slug",
        required=False,
        empty_label="All rollouts",
        error_messages={"invalid_choice": "Unknown rollout: no rollout has that slug."},
    )
    actor = forms.CharField(max_length=150, required=False, help_text="User name, token or task, exactly.")
    action = forms.CharField(max_length=60, required=False)
    object_type = forms.CharField(max_length=100, required=False, help_text="e.g. rollout.phase")
    object_id = forms.CharField(max_length=64, required=False, label="Object ID")
    # An object's history with its parts (a transition request and its approvals): the "History" links set it.
    history_of = forms.CharField(max_length=170, required=False, widget=forms.HiddenInput, label="History of")

    history: HistoryOf | None = None

    def clean_history_of(self) -> str:
        value = self.cleaned_data.get("history_of", "").strip()
        if not value:
            return ""
        object_type, _, object_id = value.partition(":")
        try:
            known = bool(object_id) and "." in object_type and apps.get_model(object_type) is not None
        except (LookupError, ValueError):
            known = False
        if not known or len(object_id) > 64:
            raise forms.ValidationError(f"History of: give an object as type:id (e.g. rollout.phase:3), not {value!r}.")
        self.history = history_of(object_type, object_id)
        return value

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            raise forms.ValidationError("“From” must be before “Until”: the range is [from, until).")
        if data.get("object_id") and not data.get("object_type"):
            self.add_error("object_type", "Give the object type with the object ID.")
        return data

    def filters(self) -> AuditFilter:
        d = self.cleaned_data
        return AuditFilter(
            since=d.get("since"),
            until=d.get("until"),
            rollout=d.get("rollout"),
            actor=d.get("actor", "").strip(),
            action=d.get("action", "").strip(),
            object_type=d.get("object_type", "").strip(),
            object_id=d.get("object_id", "").strip(),
            history_of=d.get("history_of", "") if self.history else "",
            history_objects=self.history.objects if self.history else (),
        )

    @property
    def known_actions(self) -> tuple[str, ...]:
        return KNOWN_ACTIONS


# --- Compliance -------------------------------------------------------------------------------------------------------


class LegalHoldForm(forms.Form):
    rollout = forms.ModelChoiceField(
        queryset=Rollout.objects.none(),
        to_field_name="slug",
        empty_label="Choose a rollout",
        error_messages={"invalid_choice": "Choose a rollout without an active hold."},
    )
    reason = forms.CharField(
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The matter, request or investigation the hold serves. Recorded in the audit ledger.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        active = LegalHold.objects.filter(released_at__isnull=True).values("rollout_id")
        self.fields["rollout"].queryset = Rollout.objects.exclude(pk__in=active).order_by("name")


class HoldReleaseForm(forms.Form):
    reason = forms.CharField(
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why the hold ends. Expired outputs of the rollout are purged on the next retention run.",
    )


class RunJobForm(forms.Form):
    dry_run = forms.BooleanField(
        required=False, label="Dry run: count what would be deleted, delete nothing", initial=True
    )
    reason = forms.CharField(
        max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2}), label="Note (optional)"
    )


class ProcessingRecordForm(forms.ModelForm):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Recorded with the change in the audit ledger.",
    )
    reviewed = forms.BooleanField(
        required=False, label="I reviewed the whole record: stamp “last reviewed” with my name and now"
    )

    class Meta:
        model = ProcessingRecord
        fields = ["key", *EDITABLE_FIELDS]
        widgets = {
            name: forms.Textarea(attrs={"rows": 2})
            for name in (
                "controller",
                "purpose",
                "data_subject_categories",
                "personal_data_categories",
                "recipients",
                "transfers",
                "security_measures",
            )
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            del self.fields["key"]  # the records job finds its records by key

    def values(self) -> dict:
        return {name: self.cleaned_data[name] for name in self.Meta.fields if name in self.fields}


class ChangeDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("confirm", "Confirm"), ("reject", "Reject")])
    comment = forms.CharField(max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))


YES_NO = [("", "—"), ("yes", "Yes"), ("no", "No")]


class ReviewCompleteForm(forms.Form):
    notes = forms.CharField(max_length=10000, widget=forms.Textarea(attrs={"rows": 4}))
    tool_scoring_adjustments = forms.CharField(
        max_length=10000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Tool-scoring weight adjustments",
        help_text="What changed in the tool-scoring weights, from the reflection data (leave empty for none).",
    )
    compensations_as_designed = forms.ChoiceField(
        choices=YES_NO, required=False, label="Did guardrail compensations execute as designed?"
    )
    rbac_changes = forms.CharField(
        max_length=10000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="RBAC changes",
        help_text="The RBAC policy changes decided, or “none”.",
    )

    def __init__(self, *args, kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        keep = {
            ReviewKind.WEEKLY_EVALUATION: "tool_scoring_adjustments",
            ReviewKind.MONTHLY_GUARDRAIL_DRILL: "compensations_as_designed",
            ReviewKind.QUARTERLY_SECURITY_PRIVACY: "rbac_changes",
        }[kind]
        for name in ("tool_scoring_adjustments", "compensations_as_designed", "rbac_changes"):
            if name != keep:
                del self.fields[name]

    def service_kwargs(self) -> dict:
        data = dict(self.cleaned_data)
        if "compensations_as_designed" in data:
            data["compensations_as_designed"] = {"yes": True, "no": False}.get(data["compensations_as_designed"])
        return data


class ReviewReassignForm(forms.Form):
    role = forms.ChoiceField(choices=[])
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Roles the reassigning user holds are not offered (segregation of duties); the service refuses them too.
        held = user_roles(user) if user is not None else frozenset()
        self.fields["role"].choices = [
            (r.value, r.label) for r in Role if r.value in ASSIGNABLE_ROLES and r.value not in held
        ]
