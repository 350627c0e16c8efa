"""``manage.py seed_bench --runs N --ledger N --outputs N [--expired-fraction F]``: benchmark data (PostgreSQL)."""

from django.core.management.base import BaseCommand, CommandError

from governance.benchdata import seed_bench


class Command(BaseCommand):
    help = "Load a year of runs, outputs and ledger entries fast (COPY; PostgreSQL only). Loads the demo first."

    def add_arguments(self, parser):
        parser.add_argument("--runs", type=int, default=0, help="evaluation runs to add")
        parser.add_argument("--ledger", type=int, default=0, help="ledger entries to add (a valid hash chain)")
        parser.add_argument("--outputs", type=int, default=0, help="raw outputs, spread over the new runs")
        parser.add_argument(
            "--expired-fraction",
            type=float,
            default=0.25,
            help="share of the runs (and their outputs) older than RETENTION_DAYS (default 0.25: ~120 days)",
        )
        parser.add_argument("--seed", type=int, default=1, help="random seed")

    def handle(self, *args, runs, ledger, outputs, expired_fraction, seed, **options):
        if min(runs, ledger, outputs) < 0:
            raise CommandError("Sizes must not be negative.")
        if outputs and not runs:
            raise CommandError("--outputs needs --runs: outputs belong to runs.")
        try:
            result = seed_bench(
                runs=runs, ledger_entries=ledger, outputs=outputs, expired_fraction=expired_fraction, seed=seed
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.seconds.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {result.runs} runs, {result.outputs} outputs, {result.ledger} ledger entries ({timings})."
            )
        )
