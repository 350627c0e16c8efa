"""``manage.py verify_audit_log [--file EXPORT]``: recompute the ledger's hash chain.

Exit 0 with a one-line summary (entries, first and last hash) when intact;
exit 1 naming the first broken sequence number when an entry was altered,
removed or inserted. An export's manifest (its first line) says what it covers,
so a filtered export verifies without ``--allow-gaps``.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from governance import ledger, manifest


class Command(BaseCommand):
    help = "Verify the audit ledger's hash chain (the database, or an exported JSON Lines / CSV file)."

    def add_arguments(self, parser):
        parser.add_argument("--file", help="An exported segment (.jsonl, or .csv) to verify offline.")
        parser.add_argument(
            "--allow-gaps",
            action="store_true",
            help="For an export without a manifest (older files) filtered by rollout, actor or action: accept gaps "
            "in the sequence, still check every entry's hash. An export with a manifest needs no flag.",
        )

    def handle(self, *args, file=None, allow_gaps=False, **options):
        if not file:
            result = ledger.verify_database()
            if not result.ok:
                raise CommandError(result.summary(), returncode=1)
            self.stdout.write(result.summary())
            return
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        try:
            covers = manifest.read(path)
            records = ledger.file_records(path)
            if covers is not None:
                result = manifest.verify_export(covers, records)
            else:
                result = ledger.verify(records, segment=True, allow_gaps=allow_gaps)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CommandError(f"{path} is not an audit ledger export: {exc!r}", returncode=2) from exc
        if not result.ok:
            raise CommandError(result.summary(), returncode=1)
        summary = result.summary()
        if covers is not None:
            summary += f" Matches its manifest: {manifest.describe(covers)}."
        else:
            summary += " The file has no manifest: removed entries at its ends cannot be detected."
        self.stdout.write(summary)
