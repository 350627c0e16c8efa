"""The filters and text search of the rollout core's list pages (django-filter), read from the URL.

These lists stay small (rollouts, tenants, a rollout's communications): the text search is a case-insensitive
substring match. A value that does not parse is dropped and shown as the field's error, never a 500.
"""

from __future__ import annotations

import django_filters
from django.db.models import Q

from .models import CohortKind, Communication, CommunicationKind, Rollout, RolloutStatus, Tenant


def search_field(label: str, help_text: str) -> django_filters.CharFilter:
    return django_filters.CharFilter(method="search", label=label, max_length=100, help_text=help_text)


class SearchFilterSet(django_filters.FilterSet):
    """A FilterSet with ``?q=``: ``search_fields`` are ORed, each ``__icontains`` (or the lookup given)."""

    search_fields: tuple[str, ...] = ()

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        q = Q()
        for field in self.search_fields:
            lookup = field if "__" in field else f"{field}__icontains"
            q |= Q(**{lookup: value})
        return queryset.filter(q)


class RolloutFilter(SearchFilterSet):
    q = search_field("Search", "Name or slug contains.")
    status = django_filters.ChoiceFilter(choices=RolloutStatus.choices, empty_label="Any status")
    search_fields = ("name", "slug")

    class Meta:
        model = Rollout
        fields = ("q", "status")


class TenantFilter(SearchFilterSet):
    q = search_field("Search", "Name, slug or account manager contains.")
    tier = django_filters.ChoiceFilter(choices=CohortKind.choices, empty_label="Any tier")
    transcript_ingestion_confirmed = django_filters.BooleanFilter(label="Transcript ingestion confirmed")
    search_fields = ("name", "slug", "account_manager")

    class Meta:
        model = Tenant
        fields = ("q", "tier", "transcript_ingestion_confirmed")


class CommunicationFilter(SearchFilterSet):
    q = search_field("Search", "Title contains.")
    kind = django_filters.ChoiceFilter(choices=CommunicationKind.choices, empty_label="Any kind")
    state = django_filters.ChoiceFilter(
        choices=[("published", "Published"), ("draft", "Draft")], method="by_state", empty_label="Published or draft"
    )
    search_fields = ("title",)

    class Meta:
        model = Communication
        fields = ("q", "kind", "state")

    def by_state(self, queryset, name, value):
        return queryset.filter(published_at__isnull=value == "draft")
