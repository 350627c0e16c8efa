"""Text search and filters of governance's list pages (django-filter), read from the URL.

**The audit ledger** reaches millions of entries, so its search is a **prefix** match (``LIKE 'text%'``, case
sensitive) on three indexed columns, the actor's name, the action and the object's label, each with its own
``varchar_pattern_ops`` index (migration ``0009``): PostgreSQL answers it from those indexes (or walks the
sequence index and stops after one page), never with a substring scan of the ledger. The exact filters
(rollout, actor, action, object, time range) stay in ``AuditFilterForm``, which the export shares; the search
narrows the page only.

Transition requests (per rollout), records and reviews stay small: their search is a case-insensitive
substring match.
"""

from __future__ import annotations

import django_filters
from django.db.models import Q

from rollout.filters import SearchFilterSet, search_field
from rollout.roles import Role

from .models import AuditEvent, ProcessingRecord, RequestStatus, ReviewKind, ScheduledReview, TransitionRequest


class AuditSearch(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="search",
        label="Search",
        max_length=100,
        help_text="Start of an actor, action or object name (case-sensitive). Narrows this page; not the export.",
    )

    class Meta:
        model = AuditEvent
        fields = ("q",)

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(actor_name__startswith=value) | Q(action__startswith=value) | Q(object_repr__startswith=value)
        )


class TransitionFilter(SearchFilterSet):
    q = search_field("Search", "Justification or requester contains.")
    status = django_filters.ChoiceFilter(choices=RequestStatus.choices, empty_label="Any status")
    target = django_filters.ChoiceFilter(
        choices=TransitionRequest._meta.get_field("target").choices, empty_label="Any target"
    )
    search_fields = ("justification", "requester_name")

    class Meta:
        model = TransitionRequest
        fields = ("q", "status", "target")


class RecordFilter(SearchFilterSet):
    q = search_field("Search", "Name, key, purpose or controller contains.")
    search_fields = ("name", "key", "purpose", "controller")

    class Meta:
        model = ProcessingRecord
        fields = ("q",)


class ReviewFilter(SearchFilterSet):
    q = search_field("Search", "Label, notes or who completed it contains.")
    status = django_filters.ChoiceFilter(
        choices=[("open", "Open"), ("overdue", "Overdue"), ("completed", "Completed")],
        method="by_status",
        empty_label="Any status",
    )
    kind = django_filters.ChoiceFilter(choices=ReviewKind.choices, empty_label="Any kind")
    assigned_role = django_filters.ChoiceFilter(choices=Role.choices, empty_label="Any role", label="Assigned to")
    search_fields = ("label", "notes", "completed_by_name")

    class Meta:
        model = ScheduledReview
        fields = ("q", "status", "kind", "assigned_role")

    def by_status(self, queryset, name, value):
        from django.utils import timezone

        if value == "overdue":
            return queryset.filter(status="open", due_at__lte=timezone.now())
        return queryset.filter(status=value)
