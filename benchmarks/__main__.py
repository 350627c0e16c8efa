"""Run the benchmarks: ``python -m benchmarks [module ...] [--scale N]``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("modules", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the data sizes (e.g. 0.1 for a quick look)")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from benchmarks.support import bench_database

    names = args.modules or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in {"support", "__main__"}
    )
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        # Each benchmark gets a database of its own: no one's rows skew another's figures.
        with bench_database():
            started = time.perf_counter()
            figures = module.run(args)
        figures["benchmark"] = name
        figures["total_seconds"] = round(time.perf_counter() - started, 2)
        print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
