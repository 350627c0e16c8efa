"""A throw-away database for the benchmarks, so they never touch real data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection
from django.test.utils import setup_databases, teardown_databases


@contextlib.contextmanager
def bench_database() -> Iterator[None]:
    """Create ``test_<name>`` with all migrations, run, then drop it."""
    old = setup_databases(verbosity=0, interactive=False, keepdb=False)
    try:
        yield
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
