"""Django's ``flush``, aware of the append-only audit ledger.

On PostgreSQL a statement trigger refuses ``TRUNCATE`` on the ledger table, so
a plain flush fails, which is what production wants: even "empty the database"
must not silently erase the audit trail. The test runner, though, flushes
between transactional tests (``TransactionTestCase``); with
``settings.AUDIT_LEDGER_FLUSHABLE`` on (only ``config.test_settings``) this
command disables that one trigger, flushes and re-enables it, all in one
transaction, so the trigger is never left off even if the flush fails. The
row-level UPDATE/DELETE guard is untouched.

Django looks up commands in installed apps before its own, so this replaces the
core command for ``manage.py flush`` and ``call_command("flush")`` alike.
"""

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import flush
from django.db import connections, transaction

from governance.models import AuditEvent

TRUNCATE_TRIGGER = "audit_ledger_no_truncate"


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options["database"]]
        table = AuditEvent._meta.db_table
        if connection.vendor != "postgresql" or table not in connection.introspection.table_names():
            return super().handle(**options)
        if not settings.AUDIT_LEDGER_FLUSHABLE:
            try:
                return super().handle(**options)
            except CommandError as exc:
                if "append-only" not in str(exc.__cause__):
                    raise
                raise CommandError(
                    "Flush refused: the audit ledger is append-only (a PostgreSQL trigger refuses TRUNCATE on "
                    f"{table}). Drop and recreate the database if it really must go."
                ) from exc
        quoted = connection.ops.quote_name(table)
        with transaction.atomic(using=connection.alias):
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {quoted} DISABLE TRIGGER {TRUNCATE_TRIGGER}")
            super().handle(**options)
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {quoted} ENABLE TRIGGER {TRUNCATE_TRIGGER}")
