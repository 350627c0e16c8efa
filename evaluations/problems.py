"""RFC 9457 problem details for the API: the DRF exception handler and the middleware for errors before DRF.

Every error of ``/api/`` is ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail``, ``instance``, a stable ``code`` and
``errors``: a list of ``{"pointer", "message"}`` (JSON Pointers into the body;
empty when no field is at fault).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views import defaults
from rest_framework import exceptions as drf
from rest_framework.response import Response

from rollout.errors import DomainError

from .schemas import error_pointers

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
API_PREFIX = "/api/"

# DRF's exception classes, as the problem codes and titles the API promises.
_DRF_PROBLEMS: list[tuple[type[drf.APIException], str, str]] = [
    (drf.ParseError, "malformed-json", "The body is not valid JSON"),
    (drf.NotAuthenticated, "not-authenticated", "An API token is required"),
    (drf.AuthenticationFailed, "invalid-token", "The API token is missing, unknown, expired or revoked"),
    (drf.PermissionDenied, "insufficient-scope", "The API token does not have the scope this needs"),
    (drf.UnsupportedMediaType, "unsupported-media-type", "The body must be JSON (Content-Type: application/json)"),
    (drf.MethodNotAllowed, "method-not-allowed", "Method not allowed"),
    (drf.NotAcceptable, "not-acceptable", "The API answers in JSON only"),
    (drf.NotFound, "not-found", "Not found"),
    (drf.Throttled, "throttled", "Too many requests"),
    (drf.ValidationError, "validation-error", "The payload is not valid"),
]


def problem(
    status: int, *, code: str, title: str, detail: str, instance: str = "", errors: list[dict] | None = None
) -> dict[str, Any]:
    return {
        "type": f"urn:rollout-dashboard:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        "errors": errors or [],
    }


def problem_response(status: int, **kwargs: Any) -> JsonResponse:
    """A problem answered outside DRF (middleware, 404 and 500 handlers)."""
    return JsonResponse(problem(status, **kwargs), status=status, content_type=PROBLEM_CONTENT_TYPE)


def _field_errors(exc: DomainError) -> list[dict]:
    errors = getattr(exc, "errors", None)
    if errors:
        return errors
    return [{"pointer": f"/{exc.field}", "message": exc.message}] if exc.field else []


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's ``EXCEPTION_HANDLER``: named domain errors and DRF's own, as problem+json."""
    request = context.get("request")
    instance = request.path if request is not None else ""
    headers: dict[str, str] = {}
    if isinstance(exc, DomainError):
        body = problem(
            exc.status, code=exc.code, title=exc.title, detail=exc.message, instance=instance, errors=_field_errors(exc)
        )
    elif isinstance(exc, Http404):
        body = problem(404, code="not-found", title="Not found", detail=str(exc) or "Not found.", instance=instance)
    elif isinstance(exc, DjangoPermissionDenied):
        body = problem(403, code="forbidden", title="Forbidden", detail=str(exc) or "Forbidden.", instance=instance)
    elif isinstance(exc, drf.APIException):
        code, title = "error", "The request could not be carried out"
        for cls, known_code, known_title in _DRF_PROBLEMS:
            if isinstance(exc, cls):
                code, title = known_code, known_title
                break
        status = exc.status_code
        if isinstance(exc, drf.ValidationError):
            status = 422
            errors = error_pointers(exc.detail)
            detail = f"{len(errors)} invalid field(s); nothing was stored."
        else:
            errors = []
            detail = str(exc.detail)
        if isinstance(exc, drf.AuthenticationFailed | drf.NotAuthenticated):
            # The token's own failure (expired, revoked) is more useful than the generic code.
            codes = exc.get_codes()
            code = codes if isinstance(codes, str) and codes not in {"authentication_failed"} else code
            code = code.replace("_", "-")
        body = problem(status, code=code, title=title, detail=detail, instance=instance, errors=errors)
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
    else:
        return None
    return Response(body, status=body["status"], headers=headers, content_type=PROBLEM_CONTENT_TYPE)


class ApiProblemMiddleware:
    """For ``/api/``: refuse bodies over ``API_MAX_BODY_BYTES`` before anything reads them (413, also for
    chunked bodies without Content-Length), and answer 404s and unexpected errors as problem+json, never HTML."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        refused = self._limit_body(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        if response.status_code == 404 and response.get("Content-Type", "").startswith("text/html"):
            return problem_response(
                404, code="not-found", title="Not found", detail="No such API resource.", instance=request.path
            )
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        if database_unavailable(exception):
            return unavailable_response(request, exception)
        log.exception("API error on %s %s", request.method, request.path)
        return problem_response(
            500,
            code="server-error",
            title="Internal error",
            detail="Something went wrong on our side; nothing was stored. The error is logged.",
            instance=request.path,
        )

    def _limit_body(self, request: HttpRequest) -> HttpResponse | None:
        limit = settings.API_MAX_BODY_BYTES
        too_large = dict(
            code="body-too-large",
            title="The body is too large",
            detail=f"Bodies are limited to {limit} bytes; send fewer runs per request.",
            instance=request.path,
        )
        length = request.META.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length and not chunked:
            try:
                declared = int(length)
            except ValueError:
                return problem_response(
                    400, code="bad-content-length", title="Bad Content-Length", detail=length, instance=request.path
                )
            return problem_response(413, **too_large) if declared > limit else None
        if not chunked:
            return None
        if not request.META.get("wsgi.input_terminated"):
            # Without a server that de-chunks and ends the stream, the body cannot be read safely.
            return problem_response(
                411,
                code="length-required",
                title="Content-Length required",
                detail="This server cannot read chunked bodies; send a Content-Length.",
                instance=request.path,
            )
        data = request.META["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            return problem_response(413, **too_large)
        # Hand the bytes on as an ordinary, sized body (DRF reads CONTENT_LENGTH to decide there is one).
        request.META["CONTENT_LENGTH"] = str(len(data))
        request._stream = io.BytesIO(data)
        request._read_started = False
        return None


def database_unavailable(exc: BaseException | None) -> bool:
    """The database could not be reached or dropped the connection (not a bad query, not a constraint)."""
    return isinstance(exc, OperationalError | InterfaceError)


def unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 with Retry-After: the API as problem+json, pages as a plain page that needs no database."""
    log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
    retry_after = str(settings.DATABASE_RETRY_AFTER_SECONDS)
    if request.path.startswith(API_PREFIX):
        response = problem_response(
            503,
            code="database-unavailable",
            title="The database is unavailable",
            detail="The database could not be reached; retry after the delay in Retry-After. A retried ingest is "
            "counted as a duplicate if the first attempt was stored.",
            instance=request.path,
        )
    else:
        response = HttpResponse(render_to_string("503.html"), status=503)
    response["Retry-After"] = retry_after
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: a lost database connection is a 503 (also when a middleware hit it), the rest a 500."""
    exc = sys.exc_info()[1]
    if database_unavailable(exc):
        return unavailable_response(request, exc)
    if request.path.startswith(API_PREFIX):
        return problem_response(
            500,
            code="server-error",
            title="Internal error",
            detail="Something went wrong on our side; nothing was stored. The error is logged.",
            instance=request.path,
        )
    return defaults.server_error(request)


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(404, code="not-found", title="Not found", detail="Not found.", instance=request.path)
