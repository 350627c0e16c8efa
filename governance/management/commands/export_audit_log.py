"""``manage.py export_audit_log --format csv|jsonl [--since] [--until] [--rollout] [--output FILE]``.

The same export as the audit page: half-open ``[since, until)`` in UTC, streamed
from a server-side cursor, recorded in the ledger itself. Writes to stdout
unless ``--output`` is given. The first line is the export's manifest (what it
covers), which ``verify_audit_log --file`` checks.
"""

import getpass

from django.core.management.base import BaseCommand, CommandError

from governance import ledger, manifest, services
from governance.forms import parse_utc
from governance.selectors import AuditFilter
from rollout.context import Actor, acting_as, new_request_id
from rollout.errors import DomainError
from rollout.models import Rollout


class Command(BaseCommand):
    help = "Export the audit ledger (filtered) as CSV or JSON Lines."

    def add_arguments(self, parser):
        parser.add_argument("--format", required=True, choices=services.EXPORT_FORMATS)
        parser.add_argument("--since", help="UTC date or date-time, inclusive (e.g. 2025-06-01T00:00Z).")
        parser.add_argument("--until", help="UTC date or date-time, exclusive.")
        parser.add_argument("--rollout", help="Rollout slug.")
        parser.add_argument("--actor", default="", help="Actor name, exactly.")
        parser.add_argument("--action", default="", help="Action, exactly (e.g. transition.apply).")
        parser.add_argument("--output", help="File to write (default: stdout).")

    def handle(self, *args, **options):
        try:
            since = parse_utc(options["since"]) if options["since"] else None
            until = parse_utc(options["until"]) if options["until"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if since and until and since >= until:
            raise CommandError("--since must be before --until: the range is [since, until).")
        rollout = None
        if options["rollout"]:
            rollout = Rollout.objects.filter(slug=options["rollout"]).first()
            if rollout is None:
                raise CommandError(f"Unknown rollout {options['rollout']!r}.")
        filters = AuditFilter(
            since=since, until=until, rollout=rollout, actor=options["actor"], action=options["action"]
        )
        actor = Actor(kind="system", name=f"manage.py export_audit_log ({getpass.getuser()})"[:150])
        with acting_as(actor, request_id=new_request_id()):
            try:
                queryset, event = services.audit_export(filters=filters, fmt=options["format"])
            except DomainError as exc:
                raise CommandError(exc.message) from exc
        chunks = ledger.export_chunks(queryset, options["format"], manifest=manifest.of_export(event))
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8", newline="") as out:
                for chunk in chunks:
                    out.write(chunk)
        else:
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
        self.stderr.write(
            f"Exported {event.after['rows']} entries (through #{event.after['through_sequence']}); "
            f"the export is ledger entry #{event.sequence}."
        )
