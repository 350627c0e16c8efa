"""Issue 10, scaling out: with a read replica, the views that look back read it; writes and gates never do.

The replica is a second connection alias on its own database (config/test_settings.py), filled from the
primary with ``pg_dump --data-only`` the way streaming replication would have copied it. Whatever is written
on the primary afterwards is replication lag: a page that reads the replica does not show it yet, a page that
reads the primary does.
"""

from __future__ import annotations

import io
import os
import subprocess

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from config.db_router import PrimaryReplicaRouter, replica_reads
from evaluations import services as eval_services
from governance import ledger
from governance.models import AuditEvent
from rollout.models import Rollout
from rollout.roles import Role
from tests.evaluations.conftest import run

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
]


def _libpq_env(alias: str) -> tuple[list[str], dict[str, str]]:
    cfg = connections[alias].settings_dict
    args = ["-h", cfg["HOST"] or "127.0.0.1", "-p", str(cfg["PORT"] or 5432), "-U", cfg["USER"] or "postgres"]
    env = {**os.environ}
    if cfg.get("PASSWORD"):
        env["PGPASSWORD"] = cfg["PASSWORD"]
    return args, env


def replicate() -> None:
    """The replica catches up: it becomes a copy of the primary's committed data."""
    replica = connections["replica"]
    tables = replica.introspection.table_names()
    with replica.cursor() as cursor:
        # The ledger's triggers refuse TRUNCATE; a replica's data is the primary's to decide, so they stand aside.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("TRUNCATE " + ", ".join(replica.ops.quote_name(t) for t in tables) + " RESTART IDENTITY")
        cursor.execute("SET session_replication_role = DEFAULT")
    args, env = _libpq_env("default")
    dump = subprocess.run(
        [
            "pg_dump",
            *args,
            "--data-only",
            "--disable-triggers",
            "--exclude-table=django_migrations",
            connections["default"].settings_dict["NAME"],
        ],
        check=True,
        capture_output=True,
        env=env,
    ).stdout
    args, env = _libpq_env("replica")
    subprocess.run(
        ["psql", *args, "-q", "-v", "ON_ERROR_STOP=1", "-d", replica.settings_dict["NAME"]],
        input=dump,
        check=True,
        capture_output=True,
        env=env,
    )


@pytest.fixture
def canary_with_runs(rollout, users):
    from tests.factories import advance_to, complete_readiness

    admin = users[Role.ROLLOUT_ADMIN]
    complete_readiness(rollout, admin)
    advance_to(rollout, "canary", admin)
    eval_services.ingest_runs(payload={"runs": [run(rollout.slug, arm=arm) for arm in ("baseline", "candidate") * 2]})
    return rollout


@pytest.fixture
def with_replica(settings):
    settings.DATABASE_READ_REPLICA = "replica"
    settings.DATABASE_REPLICA_WAIT_SECONDS = 0.3
    return settings


def _lagging_entry() -> AuditEvent:
    return ledger.append(
        action="update", object_type="rollout.phase", object_repr="written after the replica's copy", reason="lag"
    )


def test_the_audit_list_reads_the_replica_and_shows_only_what_it_has_replicated(
    canary_with_runs, client_for, with_replica
):
    replicate()
    late = _lagging_entry()
    client = client_for(Role.AUDITOR)

    html = client.get("/audit/").content.decode()
    assert "written after the replica&#x27;s copy" not in html
    assert AuditEvent.objects.using("replica").filter(sequence=late.sequence).exists() is False

    with_replica.DATABASE_READ_REPLICA = None
    assert "written after the replica&#x27;s copy" in client.get("/audit/").content.decode()


def test_the_deltas_page_and_api_count_the_replicas_runs_but_gates_read_the_primary(
    canary_with_runs, client_for, token, with_replica
):
    replicate()
    slug = canary_with_runs.slug
    eval_services.ingest_runs(payload={"runs": [run(slug, arm=arm) for arm in ("baseline", "candidate")]})
    raw = token("read")

    def api_runs() -> int:
        body = (
            client_for(Role.PRODUCT_LEAD)
            .get(f"/api/v1/rollouts/{slug}/deltas/", HTTP_AUTHORIZATION=f"Bearer {raw}")
            .json()
        )
        return next(p["runs"] for p in body["phases"] if p["phase"] == "canary")

    assert api_runs() == 4  # the replica's copy: 2 runs per arm
    with CaptureQueriesContext(connections["replica"]) as on_replica:
        page = client_for(Role.PRODUCT_LEAD).get(f"/rollouts/{slug}/deltas/")
    assert page.status_code == 200
    assert any("evaluations_" in q["sql"] for q in on_replica.captured_queries)
    # Roles and permissions (the page's buttons) come from the primary: a revoked role is gone at once.
    assert not any(t in q["sql"] for q in on_replica.captured_queries for t in ("auth_", "django_session"))

    # The rollout page gates decisions: it reads the primary, replica or not.
    with CaptureQueriesContext(connections["replica"]) as on_replica:
        assert client_for(Role.PRODUCT_LEAD).get(f"/rollouts/{slug}/").status_code == 200
    assert on_replica.captured_queries == []

    with_replica.DATABASE_READ_REPLICA = None
    assert api_runs() == 6


def test_a_rollout_created_after_the_copy_has_a_deltas_page(canary_with_runs, users, client_for, with_replica):
    from rollout.services import rollout_create_from_playbook

    replicate()
    fresh = rollout_create_from_playbook(name="Created after the copy", owner=users[Role.ROLLOUT_ADMIN])
    assert not Rollout.objects.using("replica").filter(pk=fresh.pk).exists()
    assert client_for(Role.PRODUCT_LEAD).get(f"/rollouts/{fresh.slug}/deltas/").status_code == 200


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_streams_from_the_replica_once_it_holds_every_entry_it_covers(
    canary_with_runs, client_for, with_replica, tmp_path, fmt
):
    from django.core.management import call_command

    replicate()
    covered = AuditEvent.objects.count()
    client = client_for(Role.AUDITOR)
    with CaptureQueriesContext(connections["replica"]) as on_replica:
        response = client.post("/audit/export/", {"format": fmt})
        body = b"".join(response.streaming_content)
    row_reads = [q for q in on_replica.captured_queries if 'FROM "governance_auditevent"' in q["sql"]]
    assert len(row_reads) >= 2  # the readiness probe, then the rows
    path = tmp_path / f"export.{fmt}"
    path.write_bytes(body)
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=out)
    assert out.getvalue().startswith(f"Audit ledger intact: {covered} entries,")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_reads_the_primary_when_the_replica_lags_behind_it(
    canary_with_runs, client_for, with_replica, tmp_path, fmt
):
    from django.core.management import call_command

    replicate()
    late = _lagging_entry()
    covered = AuditEvent.objects.count()
    client = client_for(Role.AUDITOR)
    with CaptureQueriesContext(connections["replica"]) as on_replica:
        response = client.post("/audit/export/", {"format": fmt})
        body = b"".join(response.streaming_content)
    # Only readiness probes reached the replica: it never caught up within DATABASE_REPLICA_WAIT_SECONDS.
    assert on_replica.captured_queries
    assert all("LIMIT 1" in q["sql"] for q in on_replica.captured_queries)
    text = body.decode()
    assert "written after the replica's copy" in text
    assert f"{late.sequence}" in text
    path = tmp_path / f"export.{fmt}"
    path.write_bytes(body)
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=out)
    assert out.getvalue().startswith(f"Audit ledger intact: {covered} entries,")


def test_the_router_never_writes_to_the_replica_and_keeps_reads_in_a_transaction_on_the_primary(with_replica):
    router = PrimaryReplicaRouter()
    assert router.db_for_read(AuditEvent) == "default"
    assert router.db_for_write(AuditEvent) == "default"
    with replica_reads() as alias:
        assert alias == "replica"
        assert router.db_for_read(AuditEvent) == "replica"
        assert router.db_for_write(AuditEvent) == "default"
        with transaction.atomic():
            assert router.db_for_read(AuditEvent) == "default"
    assert router.db_for_read(AuditEvent) == "default"

    with_replica.DATABASE_READ_REPLICA = None
    with replica_reads() as alias:
        assert alias == "default"
        assert router.db_for_read(AuditEvent) == "default"
