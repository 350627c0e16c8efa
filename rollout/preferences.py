"""Personal display preferences: the time zone every page shows times in (``rollout.timefmt``).

The zone in force for a request is, in order: the person's saved preference (``UserPreference``), the zone
their browser reported (``static/js/timezone.js`` sets the ``rgd_tz`` cookie from
``Intl.DateTimeFormat().resolvedOptions().timeZone``), else ``TIME_ZONE`` (UTC). Any name that is not an IANA
zone known to ``zoneinfo`` is ignored, never a 500.

The preference is copied into the session when the person logs in (and when they change it), so no page
pays a query for it; a session older than this feature loads it once.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest

from .errors import DomainError
from .models import UserPreference
from .timefmt import valid_zone

SESSION_KEY = "rgd_time_zone"
COOKIE_NAME = "rgd_tz"


class InvalidTimeZone(DomainError):
    code = "invalid-time-zone"
    status = 422
    title = "Not a time zone"


def preference_set_time_zone(*, user: Any, time_zone: str) -> UserPreference:
    """Save ``user``'s time zone ("" for the browser's). Refuses a name ``zoneinfo`` does not know."""
    time_zone = (time_zone or "").strip()
    if time_zone and valid_zone(time_zone) is None:
        raise InvalidTimeZone(f"“{time_zone[:64]}” is not a time zone this server knows.", field="time_zone")
    with transaction.atomic():
        preference, _ = UserPreference.objects.select_for_update().get_or_create(user=user)
        if preference.time_zone != time_zone:
            preference.time_zone = time_zone
            preference.save(update_fields=["time_zone", "updated_at"])
    return preference


def saved_time_zone(user: Any) -> str:
    return UserPreference.objects.filter(user=user).values_list("time_zone", flat=True).first() or ""


def remember_in_session(request: HttpRequest, time_zone: str) -> None:
    session = getattr(request, "session", None)
    if session is not None:
        session[SESSION_KEY] = time_zone


@receiver(user_logged_in, dispatch_uid="rollout-preferences-login")
def _load_on_login(sender, request, user, **kwargs) -> None:
    if request is not None:
        remember_in_session(request, saved_time_zone(user))


def zone_name_for(request: HttpRequest) -> tuple[str, str]:
    """The zone to show times in for ``request`` and where it came from ("profile", "browser" or "default")."""
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    if session is not None and user is not None and user.is_authenticated:
        saved = session.get(SESSION_KEY)
        if saved is None:  # a session from before the preference existed: load it once
            saved = saved_time_zone(user)
            session[SESSION_KEY] = saved
        if valid_zone(saved):
            return saved, "profile"
    browser = request.COOKIES.get(COOKIE_NAME, "")
    if valid_zone(browser):
        return browser, "browser"
    return "", "default"
