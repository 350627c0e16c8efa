"""RFC 9457 problem details for the API: the DRF exception handler and the middleware for errors before DRF.

Every error of ``/api/`` is ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail``, ``instance``, a stable ``code`` and
``errors``: a list of ``{"pointer", "message"}`` (JSON Pointers into the body;
empty when no field is at fault).
"""

from __future__ import annotations

import io
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from rest_framework import exceptions as drf
from rest_framework.response import Response

from rollout.errors import DomainError
from rollout.signals import access_denied

from .schemas import error_pointers
from .throttling import address_refusal_wait

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Answers that refuse the caller: each is a denied action in the audit ledger (aggregated per window).
DENIED_STATUSES = frozenset({401, 403, 429})
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
    if request is not None and isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        # A client without a valid token spends its address's budget; past it, 429 rather than 401.
        wait = address_refusal_wait(request, context.get("view"))
        if wait is not None:
            exc = drf.Throttled(wait, detail=f"Too many requests without a valid token; retry in {math.ceil(wait)} s.")
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
        if isinstance(exc, drf.Throttled):
            # Whole seconds, rounded up: a client that waits this long is let through.
            headers["Retry-After"] = str(max(1, math.ceil(exc.wait or 1)))
    else:
        return None
    if request is not None and body["status"] in DENIED_STATUSES and not isinstance(exc, DomainError):
        # Refusals raised by services are collected by the audit middleware; these are the API's own.
        access_denied.send(
            sender=None,
            request=getattr(request, "_request", request),
            reason="api",
            status=body["status"],
            code=body["code"],
        )
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
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE):
            # Django's own error pages (a 404 from the resolver, a 400 or 500 raised before the view): as problems.
            return _html_error_as_problem(request, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        if database_unavailable(exception):
            return unavailable_response(request, exception)
        request_id = getattr(request, "request_id", "")
        log.exception("API error on %s %s (request id %s)", request.method, request.path, request_id)
        return server_error_problem(request)

    def _limit_body(self, request: HttpRequest) -> HttpResponse | None:
        """Read the body here, at most ``API_MAX_BODY_BYTES`` + 1 bytes, so that one setting governs the API.

        Django's own ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MiB, for the HTML forms) never sees an API body:
        the bytes read here become ``request.body``. A worker holds at most the limit per request.
        """
        limit = settings.API_MAX_BODY_BYTES
        too_large = dict(
            code="body-too-large",
            title="The body is too large",
            detail=f"Bodies are limited to {limit} bytes; send fewer runs per request.",
            instance=request.path,
        )
        length = request.META.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked:
            if not request.META.get("wsgi.input_terminated"):
                # Without a server that de-chunks and ends the stream, the body cannot be read safely.
                return problem_response(
                    411,
                    code="length-required",
                    title="Content-Length required",
                    detail="This server cannot read chunked bodies; send a Content-Length.",
                    instance=request.path,
                )
            stream = request.META["wsgi.input"]
        else:
            if not length:
                return None
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                return problem_response(
                    400, code="bad-content-length", title="Bad Content-Length", detail=length, instance=request.path
                )
            if declared > limit:
                return problem_response(413, **too_large)
            if declared == 0:
                return None
            stream = request  # Django's LimitedStream: never past Content-Length
        data = _read_at_most(stream, limit + 1)
        if len(data) > limit:
            return problem_response(413, **too_large)
        # Hand the bytes on as an ordinary, sized body (DRF reads CONTENT_LENGTH to decide there is one).
        request.META["CONTENT_LENGTH"] = str(len(data))
        request._body = data
        request._stream = io.BytesIO(data)
        request._read_started = False
        return None


def server_error_problem(request: HttpRequest) -> HttpResponse:
    """The generic 500 of the API: no internals, only the request id the log line carries."""
    request_id = getattr(request, "request_id", "")
    return problem_response(
        500,
        code="server-error",
        title="Internal error",
        detail="Something went wrong on our side; nothing was stored. The error is logged"
        + (f" under request id {request_id}." if request_id else "."),
        instance=request.path,
    )


_HTML_ERRORS = {
    400: ("bad-request", "Bad request", "The request could not be read."),
    404: ("not-found", "Not found", "No such API resource."),
    405: ("method-not-allowed", "Method not allowed", "This resource does not accept that method."),
}


def _html_error_as_problem(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if response.status_code >= 500:
        answer = server_error_problem(request)
    else:
        code, title, detail = _HTML_ERRORS.get(
            response.status_code, ("error", "The request could not be carried out", "The request was refused.")
        )
        answer = problem_response(response.status_code, code=code, title=title, detail=detail, instance=request.path)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            answer[header] = response[header]
    return answer


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
        return server_error_problem(request)
    from rollout.views import server_error as page_server_error

    return page_server_error(request)


def _read_at_most(stream: Any, size: int, chunk: int = 64 * 1024) -> bytes:
    """Up to ``size`` bytes, read in chunks so a short read (a slow client) does not end the body early."""
    buffer = bytearray()
    while len(buffer) < size:
        piece = stream.read(min(chunk, size - len(buffer)))
        if not piece:
            break
        buffer += piece
    return bytes(buffer)


def api_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(404, code="not-found", title="Not found", detail="Not found.", instance=request.path)
