"""Session lifetimes and the no-store rule for authenticated responses."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers

# Keys in the session (underscore: never a form field).
LOGIN_AT = "_session_login_at"
SEEN_AT = "_session_seen_at"
# The last-seen time is written at most this often, so a page view does not always write the session.
SEEN_RESOLUTION_SECONDS = 60


@receiver(user_logged_in, dispatch_uid="rollout-session-login-at")
def _stamp_login(sender: object, request: HttpRequest | None, **kwargs: object) -> None:
    if request is not None and hasattr(request, "session"):
        now = int(time.time())
        request.session[LOGIN_AT] = now
        request.session[SEEN_AT] = now


class SessionLifetimeMiddleware:
    """Logs a user out after ``SESSION_IDLE_TIMEOUT_SECONDS`` without a request and, whatever the
    activity, ``SESSION_ABSOLUTE_LIFETIME_SECONDS`` after the login. Goes after AuthenticationMiddleware;
    the login-required middleware then sends the request to the login page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = int(time.time())
            session = request.session
            login_at = session.setdefault(LOGIN_AT, now)
            seen_at = session.get(SEEN_AT, now)
            if (
                now - seen_at >= settings.SESSION_IDLE_TIMEOUT_SECONDS
                or now - login_at >= settings.SESSION_ABSOLUTE_LIFETIME_SECONDS
            ):
                logout(request)  # flushes the session and makes request.user anonymous
            elif now - seen_at >= SEEN_RESOLUTION_SECONDS or SEEN_AT not in session:
                session[SEEN_AT] = now
        return self.get_response(request)


class NoStoreWhenAuthenticatedMiddleware:
    """``Cache-Control: no-store`` (with Django's never-cache set) on every response to a logged-in user
    or to an API token, so no browser or proxy cache keeps governance data."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated) or "HTTP_AUTHORIZATION" in request.META:
            add_never_cache_headers(response)
        return response


class TrustedProxyMiddleware:
    """Behind ``TRUSTED_PROXY_COUNT`` reverse proxies, the client is the address the nearest of them saw.

    Lockouts (axes), API throttles and denial sources all read ``REMOTE_ADDR``; behind a TLS proxy
    that is the proxy itself, so one person's failed logins would lock everyone out. Each trusted
    proxy appends the address it received from to ``X-Forwarded-For``: the entry that many places
    from the right is the client, and entries to its left were written by the client and are ignored.
    With a count of 0 (the default) the header is never read.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.count = settings.TRUSTED_PROXY_COUNT

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.count:
            hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
            if len(hops) >= self.count:
                request.META["REMOTE_ADDR"] = hops[-self.count]
        return self.get_response(request)


class TimeZoneMiddleware:
    """Shows the request's times in the reader's zone (``rollout.preferences.zone_name_for``): their saved
    preference, else their browser's (the ``rgd_tz`` cookie), else ``TIME_ZONE``. A name that is not an IANA
    zone is ignored. Forms and filters that say "UTC" stay in UTC; only what is displayed moves."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.utils import timezone

        from .preferences import zone_name_for
        from .timefmt import valid_zone

        name, source = zone_name_for(request)
        request.time_zone_name, request.time_zone_source = name or settings.TIME_ZONE, source
        zone = valid_zone(name) if name else None
        if zone is not None:
            timezone.activate(zone)
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
