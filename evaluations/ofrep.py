"""The OpenFeature Remote Evaluation Protocol (OFREP) under ``/ofrep/v1/``: any OFREP provider reads the flags
the dashboard governs, per tenant (``context.targetingKey`` = the tenant's slug).

- ``POST /ofrep/v1/evaluate/flags/{key}``: one flag (server providers).
- ``POST /ofrep/v1/evaluate/flags``: every flag, with an ``ETag``; ``If-None-Match`` with it answers 304.

The value is ``rollout.selectors.tenant_flags``: the governing rollout's exposure rows, the same rows as
``GET /api/v1/rollouts/<slug>/flags/``. Authentication is the API's bearer token with the ``flags`` scope, and
the API's throttles apply. Errors are OFREP's (``{"key", "errorCode", "errorDetails"}``, plain JSON, never
inside a 200): a malformed body ``PARSE_ERROR`` 400, no targeting key ``TARGETING_KEY_MISSING`` 400, a context
that is not an object or a targeting key that is not a string ``INVALID_CONTEXT`` 400, an unknown flag
``FLAG_NOT_FOUND`` 404; 401, 403, 429 (with ``Retry-After`` in seconds) and 500 carry ``{"errorDetails"}``.
Refusals are recorded in the audit ledger like the API's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions as drf
from rest_framework.request import Request
from rest_framework.response import Response

from rollout.models import MULTI_AGENT_FLAGS, FlagKey, RolloutStatus
from rollout.selectors import TenantFlag, tenant_flags

from .api import ApiView
from .models import ApiScope
from .problems import database_unavailable, problem_exception_handler

log = logging.getLogger(__name__)

# OpenFeature resolution reasons (https://openfeature.dev/specification/types#resolution-reason).
TARGETING_MATCH = "TARGETING_MATCH"  # a rollout in progress: the tenant's cohort in its current phase
STATIC = "STATIC"  # a completed (or cancelled) rollout: the value no longer changes with phases
DISABLED = "DISABLED"  # a rolled-back rollout: the multi-agent flag is off
DEFAULT = "DEFAULT"  # no rollout governs the flag for this tenant (or the tenant is unknown): off

# Larger bodies are refused before parsing: a context is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024


class OfrepError(Exception):
    def __init__(self, status: int, code: str, details: str):
        super().__init__(details)
        self.status, self.code, self.details = status, code, details


def reason_for(flag: TenantFlag) -> str:
    if flag.rollout is None or flag.rollout.status == RolloutStatus.DRAFT:
        return DEFAULT
    if flag.rollout.status in {RolloutStatus.COMPLETED, RolloutStatus.CANCELLED}:
        return STATIC
    if flag.rollout.status == RolloutStatus.ROLLED_BACK and flag.key in MULTI_AGENT_FLAGS and not flag.value:
        return DISABLED
    return TARGETING_MATCH


def evaluation(flag: TenantFlag) -> dict[str, Any]:
    """One OFREP evaluation success: ``key``, ``value``, ``reason``, ``variant`` and flat ``metadata``."""
    metadata: dict[str, Any] = {"tenantKnown": flag.tenant is not None}
    if flag.tenant is not None:
        metadata["tenant"] = flag.tenant.slug
    if flag.rollout is not None:
        metadata.update(
            rollout=flag.rollout.slug, rolloutStatus=flag.rollout.status, phase=flag.phase, cohort=flag.cohort
        )
    return {
        "key": flag.key,
        "value": flag.value,
        "reason": reason_for(flag),
        "variant": "on" if flag.value else "off",
        "metadata": metadata,
    }


def targeting_key(request: Request) -> str:
    """The tenant slug from the body's ``context.targetingKey``; OFREP errors for anything else."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise OfrepError(400, "PARSE_ERROR", f"The body is over {MAX_BODY_BYTES} bytes.")
    try:
        body = request.data
    except drf.ParseError as exc:
        raise OfrepError(400, "PARSE_ERROR", f"The body is not valid JSON: {exc.detail}") from exc
    except drf.UnsupportedMediaType as exc:
        raise OfrepError(400, "PARSE_ERROR", "The body must be JSON (Content-Type: application/json).") from exc
    if not isinstance(body, dict):
        raise OfrepError(400, "PARSE_ERROR", "The body must be a JSON object with a 'context'.")
    context = body.get("context")
    if context is None:
        raise OfrepError(400, "TARGETING_KEY_MISSING", "The body has no context, so no targetingKey (the tenant).")
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "The context must be a JSON object.")
    key = context.get("targetingKey")
    if key is None or key == "":
        raise OfrepError(400, "TARGETING_KEY_MISSING", "The context needs a targetingKey: the tenant's slug.")
    if not isinstance(key, str):
        raise OfrepError(400, "INVALID_CONTEXT", "The targetingKey must be a string: the tenant's slug.")
    return key


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, headers=headers, content_type="application/json")


def ofrep_exception_handler(exc: Exception, context: dict) -> Response | None:
    """The API's handler (address throttle, ledger entry of each refusal, Retry-After), answered in OFREP's shape."""
    response = problem_exception_handler(exc, context)
    if response is None:
        request = context.get("request")
        if database_unavailable(exc):
            log.warning("OFREP: database unavailable: %s", exc)
            return _error(
                503,
                {"errorDetails": "The database could not be reached; retry after the delay in Retry-After."},
                {"Retry-After": str(settings.DATABASE_RETRY_AFTER_SECONDS)},
            )
        request_id = getattr(getattr(request, "_request", request), "request_id", "")
        log.exception("OFREP error (request id %s)", request_id)
        return _error(500, {"errorDetails": f"Something went wrong on our side; request id {request_id}."})
    headers = {h: response[h] for h in ("Retry-After", "WWW-Authenticate") if h in response}
    return _error(response.status_code, {"errorDetails": response.data["detail"]}, headers)


class OfrepView(ApiView):
    required_scope = ApiScope.FLAGS

    def get_exception_handler(self):
        return ofrep_exception_handler


class EvaluateFlagView(OfrepView):
    @extend_schema(exclude=True)
    def post(self, request: Request, key: str) -> Response:
        if key not in FlagKey.values:
            return _error(404, {"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": f"No flag {key!r}."})
        try:
            tenant = targeting_key(request)
        except OfrepError as exc:
            return _error(exc.status, {"key": key, "errorCode": exc.code, "errorDetails": exc.details})
        return Response(evaluation(tenant_flags(tenant)[key]))


def etag_of(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return '"' + hashlib.sha256(canonical).hexdigest()[:32] + '"'


def matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison against a list of entity tags (or ``*``)."""
    tags = [t.strip() for t in if_none_match.split(",") if t.strip()]
    return "*" in tags or etag in {t.removeprefix("W/") for t in tags}


class EvaluateFlagsView(OfrepView):
    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        try:
            tenant = targeting_key(request)
        except OfrepError as exc:
            return _error(exc.status, {"errorCode": exc.code, "errorDetails": exc.details})
        flags = tenant_flags(tenant)
        body = {"flags": [evaluation(flags[key]) for key in FlagKey.values]}
        etag = etag_of(body)
        if matches(request.headers.get("If-None-Match", ""), etag):
            return Response(status=304, headers={"ETag": etag})
        return Response(body, headers={"ETag": etag})
