"""The runs list's table (django-tables2 over a keyset page, ``rollout.tables``).

Runs sort by finish time (the default, newest first), run id and conversations: each served by an index that
leads with the rollout, ``(rollout, finished_at, id)``, ``(rollout, run_id)`` and ``(rollout, conversations,
id)``, so a page is an index range scan at any size.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import django_tables2 as tables
from django.template.defaultfilters import date as date_filter
from django.template.defaultfilters import floatformat
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html

from rollout.converters import IDENT_PATTERN
from rollout.tables import PrerenderedRowsTable, Sorting, TimeColumn, shown_number
from rollout.timefmt import render_time

from .templatetags.evaluation_tags import metric_value

RUN_SORTING = Sorting(
    columns={"run": ("run_id",), "finished": ("finished_at", "id"), "conversations": ("conversations", "id")},
    default="-finished",
    labels=("Newest", "Newer", "Older", "Oldest"),
)


_IDENT = re.compile(IDENT_PATTERN)
LATE_BADGE = (
    ' <span class="badge text-bg-warning late-arrival" title="Arrived after the phase period it finished '
    'in had ended: shown, not counted by triggers or gates">late arrival</span>'
)


class RunTable(PrerenderedRowsTable):
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

    class Meta(PrerenderedRowsTable.Meta):
        attrs = {"class": "table table-sm table-sm-text table-hover align-middle", "id": "runs"}

    def __init__(self, *args, rollout_slug: str, **kwargs):
        self.rollout_slug = rollout_slug
        # Every run's link differs only in its id: reversed once (an id the URL pattern refuses still goes
        # through reverse(), which raises as before).
        self._run_url_prefix = reverse("evaluations:run", args=[rollout_slug, "x"])[: -len("x/")]
        super().__init__(*args, **kwargs)

    def _run_url(self, run_id: str) -> str:
        if _IDENT.fullmatch(run_id):
            return f"{self._run_url_prefix}{run_id}/"
        return reverse("evaluations:run", args=[self.rollout_slug, run_id])

    def render_run(self, value, record):
        link = format_html('<a href="{}"><code>{}</code></a>', self._run_url(value), value)
        if not getattr(record, "late", False):
            return link
        return format_html("{}" + LATE_BADGE, link)

    def cells(self, record) -> Sequence[str]:
        """Each column's cell as django-tables2 renders it (``tests/evaluations/test_run_table.py`` compares)."""
        run_id = record.run_id
        if run_id in ("", None):
            run = "—"
        else:
            run = f'<a href="{escape(self._run_url(run_id))}"><code>{escape(run_id)}</code></a>'
            if record.late:
                run += LATE_BADGE
        phase = record.phase.get_kind_display()
        arm = record.get_arm_display()
        cohort = record.cohort.name if record.cohort_id is not None else None
        if record.outputs_purged_at:
            purged = date_filter(timezone.localtime(record.outputs_purged_at), "Y-m-d")
            outputs = f'<span class="badge text-bg-secondary" title="purged {escape(purged)} UTC">purged</span>'
        else:
            outputs = shown_number(record.output_count)
        return (
            run,
            escape(phase) if phase not in ("", None) else "—",
            escape(arm) if arm not in ("", None) else "—",
            escape(cohort) if cohort not in ("", None) else "—",
            render_time(record.finished_at, self.columns["finished"].column.fmt),
            shown_number(record.conversations),
            f"{shown_number(record.guardrail_compensations)} "
            f'<span class="text-muted">({floatformat(record.compensation_ratio, "-4")})</span>',
            metric_value(record.task_success_rate, "ratio") if record.task_success_rate is not None else "—",
            metric_value(record.latency_p95_ms, "ms") if record.latency_p95_ms is not None else "—",
            outputs,
        )

    def render_task_success(self, value):
        return metric_value(value, "ratio")

    def render_p95(self, value):
        return metric_value(value, "ms")
