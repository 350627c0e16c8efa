"""``manage.py import_promptfoo_results FILE --rollout SLUG --phase P``: a promptfoo results file as runs.

The JSON that ``promptfoo eval -o results.json`` writes becomes one run per provider, all or nothing, through the
same service as the API; importing the file again counts duplicates. See
``evaluations.importers.promptfoo_results`` for where each field comes from.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from rollout.context import Actor, acting_as
from rollout.inputs import InputRejected, load_json

from ...errors import ProblemWithFields
from ...importers.promptfoo_results import import_promptfoo_results
from ._imports import describe_problem, report


class Command(BaseCommand):
    help = "Import a promptfoo results file (promptfoo eval -o results.json) as one evaluation run per provider."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The results JSON file.")
        parser.add_argument("--rollout", required=True, help="Rollout slug.")
        parser.add_argument("--phase", required=True, help="Phase the runs belong to.")
        parser.add_argument("--cohort", help="internal, beta or general (optional).")
        parser.add_argument("--mapping", help="A JSON mapping file (arms, metrics, compensations).")
        parser.add_argument("--dry-run", action="store_true", help="Check everything, store nothing.")

    def handle(self, *args, file, rollout, phase, cohort, mapping, dry_run, **options):
        try:
            with open(file, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from exc
        try:
            document = load_json(raw)
        except InputRejected as exc:
            where = "; ".join(f"{e['pointer'] or '/'}: {e['message']}" for e in exc.errors[:5])
            raise CommandError(f"{file}: {exc.message}{f' ({where})' if where else ''} Nothing was stored.") from exc
        try:
            with acting_as(Actor(kind="system", name="manage.py import_promptfoo_results")):
                outcome = import_promptfoo_results(
                    document,
                    options={"rollout": rollout, "phase": phase, "cohort": cohort},
                    mapping=mapping,
                    dry_run=dry_run,
                )
        except ProblemWithFields as exc:
            raise CommandError(describe_problem(exc)) from exc
        report(self, outcome)
