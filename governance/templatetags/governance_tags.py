"""Template helpers for governance pages: ledger diffs and links to an object's history."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import timezone

from governance.selectors import HISTORY_PARTS
from rollout import timefmt
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
