"""Template helpers for governance pages: ledger diffs and links to an object's history."""

from __future__ import annotations

import datetime as dt
import json
import math
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from governance.selectors import HISTORY_PARTS
from rollout import timefmt
from rollout.tables import shown_number
from rollout.templatetags.rollout_tags import readable_time, readable_times

register = template.Library()


@register.simple_tag
def audit_url(obj=None, **filters) -> str:
    """The audit page filtered to ``obj`` (any model instance), or to the given filters."""
    query = dict(filters)
    if obj is not None and obj._meta.label_lower in HISTORY_PARTS:
        # Its history holds its parts' entries too (a request's approvals).
        query.update(history_of=f"{obj._meta.label_lower}:{obj.pk}")
    elif obj is not None:
        query.update(object_type=obj._meta.label_lower, object_id=str(obj.pk))
    return reverse("governance:audit") + ("?" + urlencode(query) if query else "")


# Shared with the rollout pages (incident evidence): one way to show a stored date-time.
register.filter("readable_time", readable_time)


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return readable_time(value)
    if isinstance(value, dict | list):
        return json.dumps(readable_times(value), ensure_ascii=False, sort_keys=True)
    return str(value)


@register.filter
def audit_diff(event) -> dict[str, Any]:
    """Field, before, after for an entry: the changed fields of an update, every field of a create or delete.

    ``both`` says whether there is a before and an after to set side by side.
    """
    before = event.before if isinstance(event.before, dict) else {}
    after = event.after if isinstance(event.after, dict) else {}
    rows = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        rows.append(
            {
                "field": name,
                "before": _show(old) if name in before else "",
                "after": _show(new) if name in after else "",
                "changed": name in before and name in after and old != new,
            }
        )
    return {"rows": rows, "both": bool(before) and bool(after)}


def _truncated(value: Any, length: int) -> str:
    """``|truncatechars:length``, without building a Truncator (and translating its ellipsis) for the text that
    fits: Django returns that text NFC-normalised and unchanged."""
    text = str(value)
    if len(text) <= length:
        return unicodedata.normalize("NFC", text)
    return Truncator(text).chars(length)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _audit_entry(e, audit_base: str) -> str:
    """One ledger entry's ``<tbody>``: its row and, when it has one, its before/after diff."""
    sequence = shown_number(e.sequence)
    query = urlencode({"object_type": e.object_type, "object_id": e.object_id})
    object_id = f" #{escape(e.object_id)}" if e.object_id else ""
    rollout = e.rollout_obj
    rollout_cell = (
        f'<a href="{escape(rollout.get_absolute_url())}">{escape(rollout.slug)}</a>'
        if rollout
        else '<span class="text-muted">—</span>'
    )
    request = (
        f' <span class="text-muted small" title="request id {escape(e.request_id)}">· req '
        f"{escape(_truncated(e.request_id, 10))}</span>"
        if e.request_id
        else ""
    )
    html = [
        f'<tbody class="audit-entry" data-sequence="{sequence}"><tr>'
        f'<td class="text-nowrap"><span title="hash {escape(e.hash)} · prev {escape(e.prev_hash)}">{sequence}'
        f'</span></td><td class="text-nowrap">{timefmt.render_time(e.at, "Y-m-d H:i:s")}</td>'
        f'<td><span class="badge text-bg-light">{escape(e.actor_kind)}</span> {escape(e.actor_name)}</td>'
        f"<td><code>{escape(e.action)}</code></td>"
        f'<td><a href="{escape(audit_base + "?" + query)}" title="History of this object">{escape(e.object_type)}'
        f'{object_id}</a> <span class="text-muted">{escape(_truncated(e.object_repr, 80))}</span></td>'
        f"<td>{rollout_cell}</td>"
        f'<td class="reason">{escape(_truncated(e.reason, 200))}{request}</td></tr>'
    ]
    d = audit_diff(e)
    rows, both = d["rows"], d["both"]
    if rows:
        summary = _count(len(rows), "field") + (" changed" if both else "")
        html.append(
            '<tr class="diff-row"><td></td><td colspan="6" class="pt-0">'
            f'<details{" open" if both or len(rows) <= 3 else ""}><summary class="small text-muted">{summary}'
            '</summary><table class="table table-sm table-borderless mb-1 audit-diff">'
            f'<colgroup><col class="field">{"<col><col>" if both else "<col>"}</colgroup>'
        )
        if both:
            html.append(
                '<thead><tr><th scope="col"></th><th scope="col">before</th><th scope="col">after</th></tr></thead>'
            )
        html.append("<tbody>")
        for row in rows:
            field = escape(row["field"])
            changed = ' class="changed"' if row["changed"] else ""
            html.append(f'<tr{changed}><th scope="row" title="{field}">{field}</th>')
            if both:
                html.append(
                    f"<td><del>{escape(_truncated(row['before'], 300))}</del></td>"
                    f"<td><ins>{escape(_truncated(row['after'], 300))}</ins></td></tr>"
                )
            else:
                html.append(f"<td>{escape(_truncated(row['before'] or row['after'], 300))}</td></tr>")
        html.append("</tbody></table></details></td></tr>")
    html.append("</tbody>")
    return "".join(html)


@register.simple_tag
def audit_entries(events: Iterable) -> SafeString:
    """The audit list's entries, drawn in one pass: a template loop cost a variable lookup and a filter call per
    cell, most of the page's time. The markup is the template's that ``tests/governance/test_tables.py`` keeps as
    the reference."""
    audit_base = reverse("governance:audit")
    return mark_safe("\n".join(_audit_entry(e, audit_base) for e in events))  # noqa: S308 - every value escaped


@register.filter
def short_hash(value: str) -> str:
    return (value or "")[:12]


@register.simple_tag(takes_context=True)
def ledger_alert(context) -> dict[str, Any] | None:
    """The broken-ledger alert for the banner: one indexed query per request, for logged-in users only."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if request is None or user is None or not user.is_authenticated:
        return None
    if not hasattr(request, "_ledger_alert"):
        from governance.selectors import ledger_alert as latest

        request._ledger_alert = latest()
    return request._ledger_alert


# Decimals per metric unit (ratios and dollars need four, milliseconds one).
UNIT_DIGITS = {"ms": 1, "ratio": 4, "USD": 4}


def _digits(arg) -> int:
    if isinstance(arg, int):
        return arg
    return UNIT_DIGITS.get(str(arg), int(arg) if str(arg).isdigit() else 4)


@register.filter
def signed(value, arg=4) -> str:
    """A number with its sign (+0.0123), to the unit's decimals (``|signed:"ms"``) or a count; em dash for none."""
    if value is None:
        return "—"
    return f"{value:+.{_digits(arg)}f}"


@register.filter
def num(value, arg=4) -> str:
    if value is None:
        return "—"
    return f"{value:.{_digits(arg)}f}"


def in_hours(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """How long until ``moment``: "in 31 h" (rounded up), "in 12 min" under an hour."""
    seconds = (moment - (now or timezone.now())).total_seconds()
    if seconds <= 0:
        return "now"
    if seconds < 3600:
        return f"in {math.ceil(seconds / 60)} min"
    return f"in {math.ceil(seconds / 3600)} h"


@register.filter
def passes_text(moment: dt.datetime | None) -> str:
    """When a gate that waits for time passes: "passes 2026-12-03 08:32 UTC, in 31 h" (in the reader's zone)."""
    if moment is None:
        return ""
    return f"passes {timefmt.plain_time(moment, 'Y-m-d H:i')}, {in_hours(moment)}"
