"""Brute-force protection of the logins: the axes backend, and the page a locked-out login sees."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class RequestLockoutBackend(AxesStandaloneBackend):
    """axes' lockout check, skipped when ``authenticate()`` is called without a request.

    Every login over HTTP (``/login/``, ``/admin/login/``) passes its request and
    is checked. A call without one (a shell, a management command, the test
    client's ``login()``) has no client address to lock out; axes would refuse
    it outright, and the next backend checks the password as usual.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: the lockout page, 429 with ``Retry-After`` (the whole cool-off)."""
    cooloff = get_cool_off(request) or dt.timedelta(0)
    seconds = max(1, math.ceil(cooloff.total_seconds()))
    response = render(
        request,
        "registration/locked_out.html",
        {
            "failure_limit": get_failure_limit(request, credentials),
            "cooloff_minutes": math.ceil(seconds / 60),
        },
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )
    response["Retry-After"] = str(seconds)
    return response
