"""``make run``'s start on a big database (P13): what ``make seed`` runs before the web app starts (``manage.py
migrate`` then ``manage.py seed_demo``, each its own process, as ``make`` starts them) on a database holding 1M
ledger entries (x --scale), against the same two commands on an empty, migrated database, alternated in the same
run. Each reference sample gets a new empty database (``CREATE DATABASE ... TEMPLATE`` of one taken before the
seeding, outside the clock), so every sample is a first start: seed_demo creates the whole demo there, while on the
big database it finds the demo in place and must not verify or scan the ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from .pages import database_url, maintenance
from .rows import Row, alternate, row

ROOT = Path(__file__).resolve().parent.parent


def _start(name: str) -> float:
    """Seconds for ``make seed``'s two commands against database ``name``."""
    env = {**os.environ, "DATABASE_URL": database_url(name), "DJANGO_SETTINGS_MODULE": "config.settings"}
    started = time.perf_counter()
    for command in (["migrate", "--no-input", "-v", "0"], ["seed_demo"]):
        subprocess.run(  # noqa: S603 - our own interpreter and manage.py
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )
    return time.perf_counter() - started


def run(args) -> dict:
    from governance.benchdata import seed_bench
    from governance.models import AuditEvent

    name = connection.settings_dict["NAME"]
    empty, fresh = f"{name}_empty", f"{name}_fresh"
    connection.close()
    maintenance(f'CREATE DATABASE "{empty}" TEMPLATE "{name}"')
    try:
        entries = max(1000, int(1_000_000 * args.scale))
        seeded = seed_bench(runs=0, ledger_entries=entries, outputs=0)
        total = AuditEvent.objects.count()
        connection.close()

        def reference() -> float:
            maintenance(f'CREATE DATABASE "{fresh}" TEMPLATE "{empty}"')
            try:
                return _start(fresh)
            finally:
                maintenance(f'DROP DATABASE IF EXISTS "{fresh}"')

        measured, references = alternate(args.repeats, lambda: _start(name), reference)
    finally:
        maintenance(f'DROP DATABASE IF EXISTS "{empty}"')
    rows: list[Row] = [
        row(
            "P13",
            f"make run's start (migrate + seed_demo) at {total:,} ledger entries",
            measured,
            references,
            unit="s",
            target="<= 2x",
            reference_what="the same on an empty database",
            check=lambda _f, _r, ratio: ratio is not None and ratio <= 2.0,
        )
    ]
    return {
        "database": connection.vendor,
        "ledger_entries": total,
        "seed_seconds": seeded.seconds,
        "rows": [r.as_dict() for r in rows],
    }
