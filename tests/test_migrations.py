"""Migrations that add an index to a table growing by a million rows a year build it concurrently (issue 10)."""

from __future__ import annotations

import sqlite3

import pytest
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import AddIndex
from django.db.utils import ConnectionHandler

from config.migration_operations import AddIndexConcurrently

BIG_TABLES = {("evaluations", "evaluationrun"), ("evaluations", "runoutput"), ("governance", "auditevent")}


def _index_additions():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for (app, name), migration in sorted(loader.disk_migrations.items()):
        if migration.initial:
            continue  # the table is created in the same migration: nothing to block
        for operation in migration.operations:
            if isinstance(operation, AddIndex) and (app, operation.model_name.lower()) in BIG_TABLES:
                yield app, name, migration, operation


def test_indexes_on_runs_outputs_and_the_ledger_are_added_concurrently_outside_a_transaction():
    found = list(_index_additions())
    assert {(app, name) for app, name, *_ in found} >= {
        ("evaluations", "0005_run_rollout_finished_index"),
        ("evaluations", "0008_run_list_sort_indexes"),
        ("governance", "0009_audit_search_prefix_indexes"),
    }
    for app, name, migration, operation in found:
        assert isinstance(operation, AddIndexConcurrently), (app, name, operation.index.name)
        assert migration.atomic is False, (app, name)


@pytest.mark.django_db(transaction=True)
def test_the_concurrent_index_is_valid_on_postgresql():
    """The test database was migrated with them: each index exists and PostgreSQL marks it valid (a failed
    concurrent build would leave it invalid)."""
    names = [op.index.name for *_, op in _index_additions()]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = ANY(%s)",
            [names],
        )
        assert dict(cursor.fetchall()) == dict.fromkeys(names, True)


def test_on_sqlite_they_are_plain_indexes(tmp_path, django_db_blocker):
    """The embedded demo database has no CONCURRENTLY: the same migrations give plain indexes there."""
    path = tmp_path / "demo.sqlite3"
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}})
    sqlite = handler["default"]
    targets = [("evaluations", "0008_run_list_sort_indexes"), ("governance", "0009_audit_search_prefix_indexes")]
    with django_db_blocker.unblock():  # a database of its own, not the test database
        MigrationExecutor(sqlite).migrate(targets)
        sqlite.close()
    with sqlite3.connect(path) as db:
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"run_rollout_finished", "run_rollout_run_id", "audit_action_prefix"} <= indexes
    assert connections["default"].vendor == "postgresql"
