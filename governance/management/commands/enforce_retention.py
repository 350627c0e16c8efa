"""``manage.py enforce_retention [--dry-run] [--batch-size N] [--pause SECONDS] [--scheduled-for ISO]``.

The retention job's service, run in this process under the job's lock (a run
already in progress makes this one a skipped no-op). Prints the receipt; exits 1
if the run failed or was skipped.
"""

import getpass

from django.core.management.base import BaseCommand, CommandError

from governance import jobs
from governance.models import Job, JobStatus, JobTrigger, RetentionReceipt
from rollout.context import Actor, acting_as, new_request_id


class Command(BaseCommand):
    help = "Purge raw evaluation outputs older than the retention period (RETENTION_DAYS), except under legal holds."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, help="Rows per transaction (default RETENTION_BATCH_SIZE).")
        parser.add_argument(
            "--pause", type=float, help="Seconds between batches (default RETENTION_BATCH_PAUSE_SECONDS)."
        )
        parser.add_argument(
            "--scheduled-for", help="The slot to run for (ISO 8601 with offset, not in the future; default: now)."
        )

    def handle(self, *args, dry_run=False, batch_size=None, pause=None, scheduled_for=None, **options):
        run_options: dict = {"dry_run": True} if dry_run else {}
        if batch_size is not None:
            if batch_size < 1:
                raise CommandError("--batch-size must be at least 1.")
            run_options["batch_size"] = batch_size
        if pause is not None:
            run_options["pause_seconds"] = max(pause, 0.0)
        actor = Actor(kind="system", name=f"manage.py enforce_retention ({getpass.getuser()})"[:150])
        try:
            with acting_as(actor, request_id=new_request_id()):
                run = jobs.run_job(
                    Job.ENFORCE_RETENTION,
                    trigger=JobTrigger.COMMAND,
                    options=run_options,
                    scheduled_for=scheduled_for,
                    requested_by_name=actor.name,
                )
        except (jobs.InvalidJobOptions, ValueError) as exc:
            raise CommandError(getattr(exc, "message", str(exc))) from exc
        receipt = RetentionReceipt.objects.filter(job_run=run).order_by("-id").first()
        if receipt is not None:
            self.stdout.write(
                f"Receipt #{receipt.pk} ({receipt.status}{', dry run' if receipt.dry_run else ''}): "
                f"cutoff {receipt.cutoff:%Y-%m-%d %H:%M:%S} UTC ({receipt.retention_days} days), "
                f"{'would delete' if receipt.dry_run else 'deleted'} {receipt.rows_matched}, "
                f"held back {receipt.rows_held}, {receipt.batches} batch(es), "
                f"longest {receipt.longest_batch_ms} ms, ledger entry #{receipt.ledger_sequence}."
            )
        if run.status != JobStatus.SUCCEEDED:
            raise CommandError(f"Retention run {run.status}: {run.summary}")
