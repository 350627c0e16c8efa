"""``manage.py verify_audit_log [--file EXPORT]``: recompute the ledger's hash chain.

Exit 0 with a one-line summary (entries, first and last hash) when intact;
exit 1 naming the first broken sequence number when an entry was altered,
removed or inserted.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from governance import ledger


class Command(BaseCommand):
    help = "Verify the audit ledger's hash chain (the database, or an exported JSON Lines / CSV file)."

    def add_arguments(self, parser):
        parser.add_argument("--file", help="An exported segment (.jsonl, or .csv) to verify offline.")
        parser.add_argument(
            "--allow-gaps",
            action="store_true",
            help="The file is a filtered export: accept gaps in the sequence, still check every entry's hash.",
        )

    def handle(self, *args, file=None, allow_gaps=False, **options):
        if file:
            path = Path(file)
            if not path.is_file():
                raise CommandError(f"No such file: {path}")
            try:
                result = ledger.verify(ledger.file_records(path), segment=True, allow_gaps=allow_gaps)
            except (ValueError, KeyError, TypeError) as exc:
                raise CommandError(f"{path} is not an audit ledger export: {exc!r}", returncode=2) from exc
        else:
            result = ledger.verify(ledger.database_records())
        if not result.ok:
            raise CommandError(result.summary(), returncode=1)
        self.stdout.write(result.summary())
