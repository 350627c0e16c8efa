"""Django's Redis cache, degrading instead of failing when Redis cannot be reached.

Everything that uses the cache on a request path (page fragments, DRF
throttling, short locks) must keep serving during a Redis outage: a read is a
miss, a write or ``add`` reports that nothing was stored, a delete does
nothing. Each failure is logged (at most once per ``_QUIET_SECONDS``) so the
outage shows in the logs without flooding them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_QUIET_SECONDS = 10.0


class DegradingRedisCache(RedisCache):
    _last_warning = 0.0

    def _degraded(self, operation: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - DegradingRedisCache._last_warning >= _QUIET_SECONDS:
            DegradingRedisCache._last_warning = now
            log.warning("cache unavailable (%s): %s; serving without it", operation, exc)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        try:
            return super().get(key, default, version)
        except _UNAVAILABLE as exc:
            self._degraded("get", exc)
            return default

    def get_many(self, keys: Any, version: int | None = None) -> dict:
        try:
            return super().get_many(keys, version)
        except _UNAVAILABLE as exc:
            self._degraded("get_many", exc)
            return {}

    def has_key(self, key: Any, version: int | None = None) -> bool:
        try:
            return super().has_key(key, version)
        except _UNAVAILABLE as exc:
            self._degraded("has_key", exc)
            return False

    def add(self, key: Any, value: Any, timeout: Any = None, version: int | None = None) -> bool:
        # Callers using add as a lock read False as "held by someone else": they skip, which is the safe side.
        try:
            return super().add(key, value, timeout, version)
        except _UNAVAILABLE as exc:
            self._degraded("add", exc)
            return False

    def set(self, key: Any, value: Any, timeout: Any = None, version: int | None = None) -> None:
        try:
            super().set(key, value, timeout, version)
        except _UNAVAILABLE as exc:
            self._degraded("set", exc)

    def set_many(self, data: dict, timeout: Any = None, version: int | None = None) -> list:
        try:
            return super().set_many(data, timeout, version)
        except _UNAVAILABLE as exc:
            self._degraded("set_many", exc)
            return list(data)

    def touch(self, key: Any, timeout: Any = None, version: int | None = None) -> bool:
        try:
            return super().touch(key, timeout, version)
        except _UNAVAILABLE as exc:
            self._degraded("touch", exc)
            return False

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        try:
            return super().incr(key, delta, version)
        except _UNAVAILABLE as exc:
            self._degraded("incr", exc)
            return delta

    def delete(self, key: Any, version: int | None = None) -> bool:
        try:
            return super().delete(key, version)
        except _UNAVAILABLE as exc:
            self._degraded("delete", exc)
            return False

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        try:
            super().delete_many(keys, version)
        except _UNAVAILABLE as exc:
            self._degraded("delete_many", exc)

    def clear(self) -> None:
        try:
            super().clear()
        except _UNAVAILABLE as exc:
            self._degraded("clear", exc)
