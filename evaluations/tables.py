"""The runs list's table (django-tables2 over a keyset page, ``rollout.tables``).

Runs sort by finish time (the default, newest first), run id and conversations: each served by an index that
leads with the rollout, ``(rollout, finished_at, id)``, ``(rollout, run_id)`` and ``(rollout, conversations,
id)``, so a page is an index range scan at any size.
"""

from __future__ import annotations

import django_tables2 as tables
from django.urls import reverse
from django.utils.html import format_html

from rollout.tables import KeysetTable, Sorting, TimeColumn

from .templatetags.evaluation_tags import metric_value

RUN_SORTING = Sorting(
    columns={"run": ("run_id",), "finished": ("finished_at", "id"), "conversations": ("conversations", "id")},
    default="-finished",
    labels=("Newest", "Newer", "Older", "Oldest"),
)


class RunTable(KeysetTable):
    run = tables.Column(accessor="run_id", verbose_name="Run", orderable=True)
    phase = tables.Column(accessor="phase__get_kind_display", verbose_name="Phase")
    arm = tables.Column(verbose_name="Arm")
    cohort = tables.Column(accessor="cohort__name", verbose_name="Cohort", default="—")
    finished = TimeColumn(accessor="finished_at", verbose_name="Finished", orderable=True)
    conversations = tables.Column(
        verbose_name="Conversations", orderable=True, attrs={"th": {"class": "text-end"}, "td": {"class": "text-end"}}
    )
    compensations = tables.TemplateColumn(
        '{{ record.guardrail_compensations }} <span class="text-muted">'
        '({{ record.compensation_ratio|floatformat:"-4" }})</span>',
        verbose_name="Compensations",
        attrs={"th": {"class": "text-end"}, "td": {"class": "text-end"}},
    )
    task_success = tables.Column(
        accessor="task_success_rate",
        verbose_name="Task success",
        default="—",
        attrs={"th": {"class": "text-end"}, "td": {"class": "text-end"}},
    )
    p95 = tables.Column(
        accessor="latency_p95_ms",
        verbose_name="p95 ms",
        default="—",
        attrs={"th": {"class": "text-end"}, "td": {"class": "text-end"}},
    )
    outputs = tables.TemplateColumn(
        '{% load rollout_tags %}{% if record.outputs_purged_at %}<span class="badge text-bg-secondary" '
        "title=\"purged {{ record.outputs_purged_at|date:'Y-m-d' }} UTC\">purged</span>"
        "{% else %}{{ record.output_count }}{% endif %}",
        verbose_name="Outputs",
        attrs={"th": {"class": "text-end"}, "td": {"class": "text-end"}},
    )

    class Meta(KeysetTable.Meta):
        attrs = {"class": "table table-sm table-sm-text table-hover align-middle", "id": "runs"}

    def __init__(self, *args, rollout_slug: str, **kwargs):
        self.rollout_slug = rollout_slug
        super().__init__(*args, **kwargs)

    def render_run(self, value, record):
        url = reverse("evaluations:run", args=[self.rollout_slug, value])
        link = format_html('<a href="{}"><code>{}</code></a>', url, value)
        if not getattr(record, "late", False):
            return link
        return format_html(
            '{} <span class="badge text-bg-warning late-arrival" title="Arrived after the phase period it finished '
            'in had ended: shown, not counted by triggers or gates">late arrival</span>',
            link,
        )

    def render_task_success(self, value):
        return metric_value(value, "ratio")

    def render_p95(self, value):
        return metric_value(value, "ms")
