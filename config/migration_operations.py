"""Migration operations shared by the apps.

``AddIndexConcurrently``: an index on a table that grows by a million rows a year (evaluation runs, raw outputs, the
audit ledger) is built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL, so ingestion and the ledger's writers are
not blocked while it builds (a plain ``CREATE INDEX`` holds a lock that blocks every write for the whole build).
Elsewhere (the embedded SQLite demo database) it is a plain ``AddIndex``. A migration using it sets
``atomic = False``: PostgreSQL refuses ``CONCURRENTLY`` inside a transaction. If a concurrent build fails, it leaves an
invalid index behind; drop it (``DROP INDEX CONCURRENTLY <name>``) and migrate again.
"""

from __future__ import annotations

from django.contrib.postgres import operations as postgres
from django.db.migrations.operations import AddIndex


class AddIndexConcurrently(postgres.AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
