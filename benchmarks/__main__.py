"""Run the benchmarks: ``python -m benchmarks [module ...] [--scale N] [--repeats N] [--requests N]``.

PostgreSQL only (``DATABASE_URL``): the figures are ratios to PostgreSQL's own speed. Each benchmark gets a
throw-away database ``<DATABASE NAME>_bench``. Modules that measure against a reference return ``rows``; the
table of every row is printed at the end and everything is written to ``bench-results/<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELPERS = {"support", "__main__", "load", "rows"}


def machine() -> str:
    cpus = os.cpu_count()
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = next(int(line.split()[1]) for line in lines if line.startswith("MemTotal"))
        mem = f", {mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        mem = ""
    return f"{platform.system()} {platform.machine()}, {cpus} cores{mem}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("modules", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the data sizes (e.g. 0.1 for a quick look)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each figure and of its reference")
    parser.add_argument("--requests", type=int, default=48, help="requests per burst in the page benchmarks")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--output", default=str(ROOT / "bench-results"), help="folder for the JSON results")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        print(
            f"make bench needs PostgreSQL: DATABASE_URL points at {connection.vendor}. "
            "Set DATABASE_URL=postgres://user@host:5432/name (each benchmark makes its own throw-away database).",
            file=sys.stderr,
        )
        return 2
    from benchmarks.rows import Row, table
    from benchmarks.support import bench_database

    names = args.modules or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in HELPERS
    )
    results, rows = [], []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        # Each benchmark gets a database of its own: no one's rows skew another's figures.
        with bench_database():
            started = time.perf_counter()
            figures = module.run(args)
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                figures["postgresql"] = cursor.fetchone()[0]
        figures["benchmark"] = name
        figures["total_seconds"] = round(time.perf_counter() - started, 2)
        rows.extend(Row(**r) for r in figures.get("rows", []))
        results.append(figures)
        print(json.dumps(figures), flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{stamp}.json"
    path.write_text(
        json.dumps({"at": stamp, "machine": machine(), "args": vars(args), "results": results}, indent=2) + "\n"
    )
    if rows:
        print(f"\n{table(rows)}\n\nscale {args.scale:g}, {args.repeats} repeats; {machine()}; results in {path}")
    return 1 if any(not r.passed for r in rows) and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
