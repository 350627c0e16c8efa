"""``python -m faults [SCENARIO ...]``: run the fault scenarios against real processes; exit 1 on any FAIL."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback

from .harness import Result, Suite, Watchdog, log

# The mixed load comes last: its abusive requests (bad tokens) fill the client address's throttle.
ORDER = ["redis", "child", "main", "beats", "storm", "approvals", "webhooks", "postgres", "mixed"]
EXTRA: list[str] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults")
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(ORDER)} (default: all, in that order)")
    parser.add_argument("--deadline", type=float, default=float(os.environ.get("FAULTS_DEADLINE_SECONDS", 720)))
    args = parser.parse_args(argv)
    chosen = args.scenarios or ORDER
    unknown = set(chosen) - set(ORDER) - set(EXTRA)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    suite = Suite()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results: list[Result] = []
    try:
        with Watchdog(suite, args.deadline):
            suite.setup()
            from . import scenarios
            from .data import make_users

            ctx = scenarios.Ctx(suite=suite, users=make_users())
            scenarios.fresh_token(ctx)
            log(f"set up in {suite.elapsed():.0f} s")
            runners = {
                "redis": scenarios.redis_outage,
                "child": scenarios.child_kills,
                "main": scenarios.main_kill,
                "beats": scenarios.two_beats,
                "storm": scenarios.idempotency_storm,
                "webhooks": scenarios.webhooks,
                "postgres": scenarios.pg_terminate,
                "approvals": scenarios.approvals,
                "mixed": scenarios.mixed_load,
            }
            for name in chosen:
                ctx.reset()
                started = time.monotonic()
                log(f"scenario {name}")
                try:
                    result = runners[name](ctx)
                except Exception as exc:
                    traceback.print_exc()
                    result = Result(name, failures=[f"crashed: {type(exc).__name__}: {exc}"])
                result.seconds = time.monotonic() - started
                results.append(result)
                print(result.report(), flush=True)
    finally:
        total = suite.elapsed()
        suite.close()
    print("\n== fault suite summary", flush=True)
    for result in results:
        print(result.report(), flush=True)
    failed = [r for r in results if not r.passed] or ([] if len(results) == len(chosen) else ["incomplete"])
    print(f"{'FAIL' if failed else 'PASS'}: {len(results)} scenario(s) in {total:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
