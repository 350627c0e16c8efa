"""Governance's list tables (django-tables2 over keyset pages, ``rollout.tables``).

The audit ledger sorts only on columns its indexes lead with: the sequence (the default, newest first; it is
also time order), ``(actor_name, sequence)``, ``(action, sequence)`` and ``(object_type, object_id, sequence)``.
"""

from __future__ import annotations

import django_tables2 as tables
from django.utils import timezone

from rollout.tables import KeysetTable, Sorting, TimeColumn

AUDIT_SORTING = Sorting(
    columns={
        "sequence": ("sequence",),
        "actor": ("actor_name", "sequence"),
        "action": ("action", "sequence"),
        "object": ("object_type", "object_id", "sequence"),
    },
    default="-sequence",
    labels=("Newest", "Newer", "Older", "Oldest"),
)


class AuditTable(KeysetTable):
    """Headers only: each entry's rows (with its before/after diff) are drawn by ``governance/audit_list.html``."""

    sequence = tables.Column(verbose_name="#", orderable=True)
    when = tables.Column(accessor="at", verbose_name="When")
    actor = tables.Column(accessor="actor_name", verbose_name="Actor", orderable=True)
    action = tables.Column(verbose_name="Action", orderable=True)
    object = tables.Column(accessor="object_type", verbose_name="Object", orderable=True)
    rollout = tables.Column(accessor="rollout_id", verbose_name="Rollout")
    reason = tables.Column(verbose_name="Reason")

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table table-sm table-sm-text align-top", "id": "audit-entries"}


TRANSITION_SORTING = Sorting(
    columns={
        "number": ("id",),
        "move": ("target", "id"),
        "status": ("status", "id"),
        "requested": ("requested_at", "id"),
    },
    default="-requested",
)


class TransitionTable(KeysetTable):
    number = tables.TemplateColumn(
        '<a href="{{ record.get_absolute_url }}">#{{ record.pk }}</a>', verbose_name="#", orderable=True
    )
    move = tables.TemplateColumn(
        # A re-entry goes back into the phase it left: "Canary → Canary" would not say so.
        "{% if record.is_reentry %}Re-entry into{% else %}{{ record.get_from_phase_display }} →{% endif %} "
        "<strong>{{ record.get_target_display }}</strong>",
        verbose_name="Move",
        orderable=True,
    )
    status = tables.TemplateColumn(
        "{% load rollout_tags %}{% badge record.status record.get_status_display %}",
        verbose_name="Status",
        orderable=True,
    )
    approvals = tables.TemplateColumn(
        '{{ record.approvals_in }} approved{% if record.rejections %}, <span class="text-danger">'
        "{{ record.rejections }} rejected</span>{% endif %}",
        verbose_name="Approvals",
    )
    requester = tables.Column(accessor="requester_name", verbose_name="Requested by")
    requested = TimeColumn(accessor="requested_at", verbose_name="Requested", orderable=True)
    closed = TimeColumn(accessor="closed_at", verbose_name="Closed", default="—")

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table table-sm table-hover align-middle", "id": "transition-requests"}
        row_attrs = {"data-request": lambda record: record.pk, "data-kind": lambda record: record.kind}


RECORD_SORTING = Sorting(
    columns={"name": ("name", "id"), "key": ("key",), "retention": ("retention_period_days", "id")},
    default="name",
)


class RecordTable(KeysetTable):
    name = tables.TemplateColumn(
        '<a href="{{ record.get_absolute_url }}">{{ record.name }}</a>'
        '<div class="small text-muted"><code>{{ record.key }}</code></div>',
        verbose_name="Record",
        orderable=True,
    )
    key = tables.Column(verbose_name="Key", orderable=True, visible=False)
    purpose = tables.TemplateColumn(
        "{{ record.purpose|truncatechars:140 }}", verbose_name="Purpose", attrs={"td": {"class": "small"}}
    )
    retention = tables.TemplateColumn(
        "{{ record.retention_period_days }} days{% if record.retention_mismatch %} "
        '<span class="badge text-bg-danger" data-flag="retention-mismatch" title="The retention policy is '
        '{{ retention_days }} days">policy says {{ retention_days }}</span>{% endif %}',
        verbose_name="Retention",
        orderable=True,
        attrs={"td": {"class": "text-nowrap"}},
    )
    pending = tables.TemplateColumn(
        '{% if record.pending %}<span class="badge text-bg-warning" data-pending="{{ record.pending }}">'
        '{{ record.pending }} pending</span>{% else %}<span class="text-muted">none</span>{% endif %}',
        verbose_name="Pending changes",
    )
    reviewed = tables.TemplateColumn(
        "{% load rollout_tags %}{% if record.last_reviewed_at %}{{ record.last_reviewed_at|when:'Y-m-d' }} by "
        '{{ record.last_reviewed_by_name }}{% else %}<span class="text-muted">never</span>{% endif %}',
        verbose_name="Last reviewed",
        attrs={"td": {"class": "small text-nowrap"}},
    )

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table align-middle", "id": "record-table"}
        row_attrs = {"data-record": lambda record: record.key}


REVIEW_SORTING = Sorting(
    columns={
        "review": ("kind", "id"),
        "period": ("period_start", "id"),
        "assigned": ("assigned_role", "id"),
        "due": ("due_at", "id"),
        "status": ("status", "id"),
    },
    default="-period",
)


def _overdue(record) -> bool:
    return record.status == "open" and record.due_at <= timezone.now()


class ReviewTable(KeysetTable):
    review = tables.TemplateColumn(
        '<a href="{{ record.get_absolute_url }}">{{ record.get_kind_display }}</a>',
        verbose_name="Review",
        orderable=True,
    )
    period = tables.TemplateColumn(
        '{% load rollout_tags %}{{ record.label }} <span class="small text-muted">'
        "{{ record.period_start|when:'Y-m-d' }} \u2013 {{ record.period_end|when:'Y-m-d' }}</span>",
        verbose_name="Period (UTC)",
        orderable=True,
        attrs={"td": {"class": "text-nowrap"}},
    )
    assigned = tables.Column(accessor="get_assigned_role_display", verbose_name="Assigned to", orderable=True)
    due = TimeColumn(accessor="due_at", verbose_name="Due", orderable=True)
    status = tables.TemplateColumn(
        '{% load rollout_tags %}{% if record.status == "open" and record.due_at <= now %}'
        '{% badge "overdue" "overdue" %}{% else %}{% badge record.status record.get_status_display %}{% endif %}',
        verbose_name="Status",
        orderable=True,
    )
    completed = tables.TemplateColumn(
        "{% load rollout_tags %}{% if record.completed_at %}{{ record.completed_at|when:'Y-m-d' }} by "
        "{{ record.completed_by_name }}{% endif %}",
        verbose_name="Completed",
        attrs={"td": {"class": "small"}},
    )

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table align-middle", "id": "review-table"}
        row_attrs = {
            "data-review": lambda record: record.pk,
            "data-overdue": lambda record: "true" if _overdue(record) else None,
            "class": lambda record: "table-danger" if _overdue(record) else None,
        }
