"""Template helpers shared by every app's pages: safe Markdown and state badges."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import markdown as md
import nh3
from django import template
from django.conf import settings
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from rollout import timefmt

register = template.Library()

_BADGE = {
    # rollout and phase states
    "draft": "secondary",
    "pending": "secondary",
    "in_progress": "primary",
    "active": "primary",
    "completed": "success",
    "rolled_back": "danger",
    "cancelled": "dark",
    # incidents and requests
    "open": "warning",
    "closed": "success",
    "approved": "success",
    "rejected": "danger",
    "applied": "success",
    "superseded": "secondary",
    # evaluation verdicts and gates
    "pass": "success",
    "fail": "danger",
    "improved": "success",
    "regressed": "danger",
    "no clear change": "secondary",
    "not enough data": "light",
    # webhook deliveries
    "delivered": "success",
    "failed": "danger",
    # compliance jobs, retention receipts, record changes, reviews
    "queued": "secondary",
    "running": "info",
    "succeeded": "success",
    "skipped": "light",
    "interrupted": "warning",
    "confirmed": "success",
    "overdue": "danger",
    "held": "warning",
    # guardrail mode, severities
    "observe": "info",
    "enforce": "success",
    "low": "secondary",
    "medium": "info",
    "high": "warning",
    "critical": "danger",
}


@register.filter
def badge_class(value) -> str:
    return "text-bg-" + _BADGE.get(str(value), "secondary")


@register.simple_tag
def badge(value, label=None) -> SafeString:
    """A state badge. Built here rather than by an inclusion template (it was ``partials/badge.html``, the same
    markup and escaping, its trailing newline included): pages show dozens, and each inclusion cost a template
    render."""
    return format_html(
        '<span class="badge {}" data-state="{}">{}</span>\n',
        badge_class(value),
        value,
        label or str(value).replace("_", " "),
    )


def _own_origin_images(tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: an image's ``src`` only from the dashboard itself (a path, or DASHBOARD_URL),
    so a communication cannot carry a tracking pixel or make a reader's browser call another host."""
    if tag != "img" or attribute not in {"src", "srcset"}:
        return value
    if attribute == "src":
        if value.startswith("/") and not value.startswith("//") and "\\" not in value:
            return value
        origin = settings.DASHBOARD_URL.rstrip("/")
        if value.startswith(origin + "/"):
            return value
    return None


@register.filter(name="markdown")
def render_markdown(text: str) -> str:
    """Markdown to HTML, then sanitised with nh3 so a body cannot carry script or handlers, nor off-host images."""
    html = md.markdown(text or "", extensions=["extra", "sane_lists"], output_format="html")
    cleaned = nh3.clean(html, link_rel="noopener noreferrer", attribute_filter=_own_origin_images)
    return mark_safe(cleaned)  # noqa: S308 - nh3 sanitised it


@register.simple_tag(takes_context=True)
def page_url(context, page_number) -> str:
    """The current URL with ``page`` replaced, keeping the filters."""
    query = context["request"].GET.copy()
    query["page"] = page_number
    return "?" + query.urlencode()


# An ISO 8601 date-time as JSON data and the ledger store it (``2026-12-01T11:12:06.123456+00:00``).
ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$")


def readable_time(value: Any) -> Any:
    """A date-time (an ISO string from stored JSON, or a datetime) as people read it: ``2026-12-01 11:12:06 UTC``.

    To the second, in the reader's zone (``rollout.timefmt``; UTC by default); anything that is not a
    date-time is returned unchanged, so it can be applied to every value of a table of evidence.
    """
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and ISO_DATETIME.match(value):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return timefmt.plain_time(moment)


def readable_times(value: Any) -> Any:
    """``readable_time`` through nested lists and dicts (JSON data with date-times inside)."""
    if isinstance(value, dict):
        return {k: readable_times(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [readable_times(v) for v in value]
    return readable_time(value)


register.filter("readable_time", readable_time)


@register.filter
def when(value, fmt: str = timefmt.DEFAULT_FORMAT):
    """Every displayed datetime: ``{{ t|when }}`` or ``{{ t|when:"Y-m-d" }}``, in the reader's zone, UTC on hover."""
    return timefmt.render_time(value, fmt)


@register.filter
def duration(value) -> str:
    """A timedelta or seconds as "45 s", "12 min", "3 h 20 min", "31 h", "2 d 4 h"."""
    return timefmt.human_duration(value)
