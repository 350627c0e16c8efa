"""Reads that can tolerate replication lag go to a read replica; everything else to the primary.

With ``DATABASE_REPLICA_URL`` set, the views that only look back (the audit list and exports, the delta reports,
the deltas page and its API) read inside ``replica_reads()``. Nothing else does: writes, and every read that
gates a decision (gates, approvals, triggers, ingestion), stay on the primary by default, and a read made inside
a transaction on the primary stays there even within ``replica_reads()`` (a service called from such a view
locks and reads what it writes). Without the setting every read goes to the primary and none of this costs
anything.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# Who may do what is never read with lag: a role taken away is gone on the next page, replica or not.
PRIMARY_ONLY_APPS = frozenset({"auth", "contenttypes", "sessions", "axes"})

_replica_reads: contextvars.ContextVar[bool] = contextvars.ContextVar("replica_reads", default=False)


def replica_alias() -> str | None:
    """The replica's connection alias when one is configured, else ``None``."""
    alias = getattr(settings, "DATABASE_READ_REPLICA", None)
    return alias if alias and alias in settings.DATABASES else None


@contextmanager
def replica_reads() -> Iterator[str]:
    """Send this block's reads to the replica (when one is configured); yields the alias reads go to."""
    token = _replica_reads.set(True)
    try:
        yield replica_alias() or DEFAULT_DB_ALIAS
    finally:
        _replica_reads.reset(token)


def reads_from_replica(view: F) -> F:
    """A view decorator: the view's reads go to the replica. Put it innermost, so that authentication and
    permission checks (in the outer decorators and middleware) read the primary."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with replica_reads():
            return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def stream_from_replica(chunks: Iterator[T], *, ready: Callable[[str], bool]) -> Iterator[T]:
    """Iterate ``chunks`` (a streamed response body) with reads on the replica, once ``ready(alias)`` says the
    replica holds what the stream must contain; after ``DATABASE_REPLICA_WAIT_SECONDS`` without that, on the
    primary. A stream is consumed after its view returned, so the view's own ``replica_reads()`` is over."""
    alias = replica_alias()
    if alias is not None:
        deadline = time.monotonic() + settings.DATABASE_REPLICA_WAIT_SECONDS
        while not ready(alias):
            if time.monotonic() >= deadline:
                alias = None
                break
            time.sleep(0.1)
    if alias is None:
        yield from chunks
        return
    with replica_reads():
        yield from chunks


class PrimaryReplicaRouter:
    """Django database router: see the module docstring."""

    def db_for_read(self, model: type, **hints: Any) -> str | None:
        if not _replica_reads.get() or model._meta.app_label in PRIMARY_ONLY_APPS:
            return DEFAULT_DB_ALIAS
        alias = replica_alias()
        if alias is None or connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return DEFAULT_DB_ALIAS
        return alias

    def db_for_write(self, model: type, **hints: Any) -> str:
        # Never the replica, even for an instance that was read from it.
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        # Both aliases hold the same data: an object read from the replica may point at one from the primary.
        return True
