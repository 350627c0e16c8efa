"""A throw-away database for the benchmarks, so they never touch real data."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from django.db import connection
from django.test.utils import setup_databases, teardown_databases


@contextlib.contextmanager
def bench_database() -> Iterator[None]:
    """Create ``<name>_bench_<pid>`` with all migrations, run, then drop it (two runs at once never collide)."""
    base = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{base}_bench_{os.getpid()}"
    old = setup_databases(verbosity=0, interactive=False, keepdb=False)
    try:
        yield
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
