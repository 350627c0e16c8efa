"""Rate limits of the API: per token, and per client address for requests without a valid token.

DRF's sliding-window throttles, on the default cache (Redis when ``REDIS_URL``
is set, the file cache under ``var/`` otherwise). The rates are settings
(``API_THROTTLE_RATE_TOKEN``, ``API_THROTTLE_RATE_ADDRESS``), read on every
request so a changed setting applies at once.

- ``TokenRateThrottle``: every request authenticated by a token counts against
  that token, wherever it comes from.
- ``AddressRateThrottle``: every request that fails authentication (no token,
  an unknown, expired or revoked one) counts against its client address; past
  the rate it answers 429 instead of 401. A valid token is never refused by
  its address's failures, so a guessing client cannot lock the harness out
  from behind the same NAT.

The address is ``REMOTE_ADDR``: a client-set ``X-Forwarded-For`` never
chooses whose budget it spends. A cache that does not answer (Redis down)
lets the request through and logs a warning: an outage of the cache must not
take the API down with it.
"""

from __future__ import annotations

import logging

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from .models import ApiToken

log = logging.getLogger(__name__)


class _SettingsRateThrottle(SimpleRateThrottle):
    setting: str = ""

    def get_rate(self) -> str | None:
        return getattr(settings, self.setting) or None

    def get_ident(self, request) -> str:
        return request.META.get("REMOTE_ADDR") or "unknown"

    def key_for(self, ident: str) -> str:
        return f"{settings.API_THROTTLE_KEY_PREFIX}:{self.scope}:{ident}"

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:  # any cache backend error: fail open, loudly
            log.warning("API throttle %s skipped: the cache did not answer", self.scope, exc_info=True)
            return True


class TokenRateThrottle(_SettingsRateThrottle):
    scope = "token"
    setting = "API_THROTTLE_RATE_TOKEN"

    def get_cache_key(self, request, view) -> str | None:
        token = getattr(request, "auth", None)
        return self.key_for(str(token.pk)) if isinstance(token, ApiToken) else None


class AddressRateThrottle(_SettingsRateThrottle):
    scope = "address"
    setting = "API_THROTTLE_RATE_ADDRESS"

    def get_cache_key(self, request, view) -> str:
        return self.key_for(self.get_ident(request))


def address_refusal_wait(request, view) -> float | None:
    """Count one failed authentication against the request's address; the wait in seconds if it is over its rate."""
    throttle = AddressRateThrottle()
    if throttle.allow_request(request, view):
        return None
    return throttle.wait() or 1.0
