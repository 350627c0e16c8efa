"""``manage.py import_inspect_log PATH... --rollout SLUG``: Inspect AI logs as evaluation runs (one per log).

All the logs are one ingest (all or nothing), through the same service as the API; importing a log again counts
a duplicate. See ``evaluations.importers.inspect_logs`` for where each field comes from.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from rollout.context import Actor, acting_as

from ...errors import ImporterUnavailable, ProblemWithFields
from ...importers.inspect_logs import import_inspect_logs
from ._imports import describe_problem, report


class Command(BaseCommand):
    help = "Import Inspect AI logs (.eval or JSON) as evaluation runs, one run per log, all or nothing."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="Inspect log files (.eval or .json).")
        parser.add_argument("--rollout", help="Rollout slug (else the log's eval.metadata or task_args).")
        parser.add_argument("--phase", help="Phase (else metadata phase=... or -T phase=...).")
        parser.add_argument("--arm", help="baseline or candidate (else metadata or task_args).")
        parser.add_argument("--cohort", help="internal, beta or general (optional).")
        parser.add_argument("--mapping", help="A JSON mapping file (metrics, latency, compensations, outputs).")
        parser.add_argument("--dry-run", action="store_true", help="Check everything, store nothing.")

    def handle(self, *args, paths, rollout, phase, arm, cohort, mapping, dry_run, **options):
        files = []
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    files.append((path, handle.read()))
            except OSError as exc:
                raise CommandError(f"Cannot read {path}: {exc.strerror}.") from exc
        try:
            with acting_as(Actor(kind="system", name="manage.py import_inspect_log")):
                outcome = import_inspect_logs(
                    files,
                    options={"rollout": rollout, "phase": phase, "arm": arm, "cohort": cohort},
                    mapping=mapping,
                    dry_run=dry_run,
                )
        except ImporterUnavailable as exc:
            raise CommandError(exc.message) from exc
        except ProblemWithFields as exc:
            raise CommandError(describe_problem(exc)) from exc
        report(self, outcome)
