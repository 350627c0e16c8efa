"""A throw-away database for the benchmarks, so they never touch real data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection
from django.test.utils import setup_databases, teardown_databases


@contextlib.contextmanager
def bench_database() -> Iterator[None]:
    """Create ``<name>_bench`` with all migrations, run, then drop it."""
    base = connection.settings_dict.get("TEST", {}).get("NAME") or connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"{base.removesuffix('_bench')}_bench"
    old = setup_databases(verbosity=0, interactive=False, keepdb=False)
    try:
        yield
    finally:
        connection.close()
        teardown_databases(old, verbosity=0)
