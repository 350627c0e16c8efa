"""How every page shows a time and a duration.

A time is shown in the reader's time zone (``rollout.middleware.TimeZoneMiddleware`` activates it: their
preference, else their browser's, else ``TIME_ZONE``) as ``<time datetime="…" title="… UTC">…</time>``: the
exact instant for machines, UTC on hover for people comparing with logs and the ledger. A duration reads as
people say it: "0.4 s", "45 s", "12 min", "3 h 20 min", "31 h", "2 d 4 h".
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

DEFAULT_FORMAT = "Y-m-d H:i"
UTC_FORMAT = "Y-m-d H:i:s"


@functools.cache
def available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def valid_zone(name: object) -> zoneinfo.ZoneInfo | None:
    """The zone an IANA name stands for, or None for anything else (never raises)."""
    if not isinstance(name, str) or not name or len(name) > 64 or name not in available_zones():
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


# The formats pages use most, as ``str.format`` patterns giving exactly what ``django.utils.dateformat`` gives
# ("Y": the year in four digits with leading zeros; "m", "d", "H", "i", "s": two): a page shows dozens of times,
# and Django's formatter costs tens of microseconds a call. Other formats take Django's.
_DATETIME_FORMATS = {
    "Y-m-d H:i": "{0.year:04d}-{0.month:02d}-{0.day:02d} {0.hour:02d}:{0.minute:02d}",
    "Y-m-d H:i:s": "{0.year:04d}-{0.month:02d}-{0.day:02d} {0.hour:02d}:{0.minute:02d}:{0.second:02d}",
    "Y-m-d": "{0.year:04d}-{0.month:02d}-{0.day:02d}",
}
_DATE_FORMATS = {"Y-m-d": _DATETIME_FORMATS["Y-m-d"]}


def format_time(value: dt.date, fmt: str) -> str:
    """``django.utils.dateformat.format(value, fmt)``, quicker for the common formats."""
    pattern = (_DATETIME_FORMATS if isinstance(value, dt.datetime) else _DATE_FORMATS).get(fmt)
    return pattern.format(value) if pattern else date_format(value, fmt)


def render_time(value: object, fmt: str = DEFAULT_FORMAT) -> SafeString | str:
    """``value`` (a datetime or a date) as a ``<time>`` element in the current zone; other values as text."""
    if value is None or value == "":
        return ""
    if isinstance(value, dt.datetime):
        if timezone.is_naive(value):
            value = timezone.make_aware(value, dt.UTC)
        local = timezone.localtime(value)
        utc = value.astimezone(dt.UTC)
        return format_html(
            '<time datetime="{}" title="{} UTC">{}</time>',
            utc.isoformat(timespec="seconds").replace("+00:00", "Z"),
            format_time(utc, UTC_FORMAT),
            format_time(local, fmt),
        )
    if isinstance(value, dt.date):
        return format_html('<time datetime="{}">{}</time>', value.isoformat(), format_time(value, fmt))
    return str(value)


def plain_time(value: dt.datetime, fmt: str = UTC_FORMAT) -> str:
    """A datetime as text (where markup cannot go: a diff cell, a sentence built in Python), in the current
    zone with its abbreviation: "2026-12-03 09:32:05 CET", "2026-12-03 08:32:05 UTC" for UTC readers."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt.UTC)
    local = timezone.localtime(value)
    return f"{format_time(local, fmt)} {local.tzname() or 'UTC'}"


def _seconds(value: object) -> float | None:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def human_duration(value: object) -> str:
    """A timedelta (or a number of seconds) as people say it; "" for anything else."""
    seconds = _seconds(value)
    if seconds is None or seconds != seconds:  # NaN
        return ""
    sign = "-" if seconds < 0 else ""
    if abs(seconds) < 10 and abs(seconds) != int(abs(seconds)):
        return f"{sign}{abs(seconds):.1f} s"
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if total < 60:
        text = f"{secs} s"
    elif total < 3600:
        text = f"{minutes} min"
    elif total < 48 * 3600:
        hours += 24 * days
        text = f"{hours} h" + (f" {minutes} min" if hours < 10 and minutes else "")
    else:
        text = f"{days} d" + (f" {hours} h" if hours else "")
    return sign + text
