"""Retention: the 89/90/91-day boundary in UTC across DST changes, legal holds, dry runs, idempotence, batches,
receipts and ledger entries, and no other path deleting outputs."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from evaluations.models import EvaluationRun, RunOutput
from governance import jobs, retention
from governance.models import AuditEvent, Job, JobStatus, JobTrigger, LegalHold, ReceiptStatus, RetentionReceipt
from rollout.errors import ActionNotAllowed
from rollout.roles import Role
from rollout.services import rollout_create_from_playbook

from .compliance_helpers import runs_with_outputs, surviving

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def entries(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


# --- The boundary ----------------------------------------------------------------------------------------------

# (zone, the slot as local wall time). Three of them straddle a DST change, so 90 days of wall-clock time
# differ from 90 x 24 h by an hour: the purge must count in UTC.
BOUNDARY_CASES = {
    "utc": ("UTC", dt.datetime(2025, 6, 11, 2, 0)),
    "slot in the EU spring-forward week": ("Europe/Berlin", dt.datetime(2025, 3, 31, 4, 0)),
    "cutoff in the EU spring-forward week": ("Europe/Berlin", dt.datetime(2025, 6, 27, 2, 30)),
    "slot in the US fall-back week": ("America/New_York", dt.datetime(2025, 11, 4, 21, 0)),
}


@pytest.mark.parametrize("case", list(BOUNDARY_CASES))
def test_outputs_older_than_90_days_of_24_hours_go_younger_ones_stay(rollout, case):
    zone_name, wall = BOUNDARY_CASES[case]
    zone = zoneinfo.ZoneInfo(zone_name)
    slot = wall.replace(tzinfo=zone)  # ZoneInfo-aware: subtracting days from it is wall-clock arithmetic
    slot_utc = slot.astimezone(dt.UTC)
    cutoff = slot_utc - 90 * DAY
    # What a naive "90 days before the local slot" would give.
    wall_cutoff = (slot - dt.timedelta(days=90)).astimezone(dt.UTC)
    trap = cutoff + dt.timedelta(minutes=30) if wall_cutoff > cutoff else cutoff - dt.timedelta(minutes=30)
    finished = {
        "89 days": slot_utc - 89 * DAY,
        "90 days less a second": cutoff + SECOND,
        "exactly 90 days": cutoff,
        "90 days and a second": cutoff - SECOND,
        "91 days": slot_utc - 91 * DAY,
        "between the UTC and the wall-clock cutoff": trap,
    }
    runs = runs_with_outputs(rollout, finished.values())
    names = {r.run_id: label for r, label in zip(runs, finished, strict=True)}

    with timezone.override(zone):
        receipt = retention.enforce_retention(scheduled_for=slot)

    kept = {names[run_id] for run_id in surviving(runs)}
    expected = {label for label, at in finished.items() if at >= cutoff}
    assert kept == expected
    assert {"89 days", "90 days less a second", "exactly 90 days"} <= kept
    assert not {"90 days and a second", "91 days"} & kept
    assert receipt.cutoff == cutoff and receipt.scheduled_for == slot_utc
    assert (receipt.status, receipt.rows_deleted) == (ReceiptStatus.COMPLETED, 2 * (len(finished) - len(expected)))
    if case != "utc":
        # The data can tell the two rules apart: counting wall-clock days would have decided the trap differently.
        assert wall_cutoff - cutoff in (dt.timedelta(hours=1), dt.timedelta(hours=-1))
        assert ("between the UTC and the wall-clock cutoff" in kept) != (trap >= wall_cutoff)


def test_the_policy_comes_from_the_setting(rollout, settings):
    settings.RETENTION_DAYS = 30
    slot = timezone.now()
    runs = runs_with_outputs(rollout, [slot - 29 * DAY, slot - 31 * DAY])
    receipt = retention.enforce_retention(scheduled_for=slot)
    assert surviving(runs) == {runs[0].run_id}
    assert (receipt.retention_days, receipt.cutoff) == (30, slot - 30 * DAY)


def test_a_slot_in_the_future_is_refused_and_deletes_nothing(rollout):
    runs = runs_with_outputs(rollout, [timezone.now() - 95 * DAY])
    with pytest.raises(retention.InvalidRetentionRun, match="future"):
        retention.enforce_retention(scheduled_for=timezone.now() + 10 * DAY)
    assert surviving(runs) == {runs[0].run_id} and not RetentionReceipt.objects.exists()


# --- Holds ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def two_rollouts(rollout, users):
    other = rollout_create_from_playbook(name="Second rollout", owner=users[Role.ROLLOUT_ADMIN])
    return rollout, other


def test_held_outputs_survive_every_purge_and_go_on_the_first_run_after_release(two_rollouts, users):
    held, free = two_rollouts
    reviewer = users[Role.COMPLIANCE_REVIEWER]
    now = timezone.now()
    held_runs = runs_with_outputs(held, [now - 100 * DAY, now - 10 * DAY], outputs=3)
    free_runs = runs_with_outputs(free, [now - 100 * DAY, now - 10 * DAY], outputs=3)
    hold = retention.legal_hold_place(rollout=held, reason="Litigation hold LH-7", actor=reviewer)

    first = retention.enforce_retention(scheduled_for=now)
    second = retention.enforce_retention(scheduled_for=now)
    assert surviving(held_runs) == {r.run_id for r in held_runs}
    assert surviving(free_runs) == {free_runs[1].run_id}
    assert (first.rows_deleted, first.rows_held, first.held_rollouts) == (3, 3, [held.slug])
    assert (second.rows_deleted, second.rows_held) == (0, 3)
    assert EvaluationRun.objects.get(pk=held_runs[0].pk).outputs_purged_at is None

    retention.legal_hold_release(hold=hold, reason="Matter closed", actor=reviewer)
    third = retention.enforce_retention(scheduled_for=timezone.now())
    assert (third.rows_deleted, third.rows_held, third.held_rollouts) == (3, 0, [])
    assert surviving(held_runs) == {held_runs[1].run_id}
    assert EvaluationRun.objects.get(pk=held_runs[0].pk).outputs_purged_at is not None

    place, release = entries("legal_hold.place"), entries("legal_hold.release")
    assert [(e.actor_name, e.reason, e.rollout_id) for e in place] == [
        ("compliance-reviewer", "Litigation hold LH-7", held.pk)
    ]
    assert [(e.actor_name, e.reason, e.after["released_by_name"]) for e in release] == [
        ("compliance-reviewer", "Matter closed", "compliance-reviewer")
    ]


def test_hold_rules(two_rollouts, users):
    held, _free = two_rollouts
    reviewer = users[Role.COMPLIANCE_REVIEWER]
    with pytest.raises(retention.ReasonRequired):
        retention.legal_hold_place(rollout=held, reason="  ", actor=reviewer)
    for role in (Role.AUDITOR, Role.ROLLOUT_ADMIN, Role.COMPLIANCE_LEAD):
        with pytest.raises(ActionNotAllowed):
            retention.legal_hold_place(rollout=held, reason="x", actor=users[role])
    hold = retention.legal_hold_place(rollout=held, reason="DSAR 1", actor=reviewer)
    with pytest.raises(retention.HoldAlreadyActive):
        retention.legal_hold_place(rollout=held, reason="DSAR 2", actor=reviewer)
    with pytest.raises(ActionNotAllowed):
        retention.legal_hold_release(hold=hold, reason="x", actor=users[Role.AUDITOR])
    with pytest.raises(retention.ReasonRequired):
        retention.legal_hold_release(hold=hold, reason="", actor=reviewer)
    retention.legal_hold_release(hold=hold, reason="done", actor=reviewer)
    with pytest.raises(retention.HoldNotActive):
        retention.legal_hold_release(hold=hold, reason="again", actor=reviewer)
    # A new hold after the release is fine; the database keeps one active hold per rollout whatever the caller.
    retention.legal_hold_place(rollout=held, reason="DSAR 3", actor=reviewer)
    with pytest.raises(IntegrityError), transaction.atomic():
        LegalHold.objects.create(rollout=held, reason="bypass", placed_by_name="x", placed_at=timezone.now())
    assert LegalHold.objects.filter(rollout=held).count() == 2
    assert len(entries("legal_hold.place")) == 2 and len(entries("legal_hold.release")) == 1


# --- Dry run, idempotence, batches, receipts ----------------------------------------------------------------------


def test_a_dry_run_counts_and_deletes_nothing(two_rollouts, users):
    held, free = two_rollouts
    now = timezone.now()
    runs = runs_with_outputs(free, [now - 95 * DAY, now - 91 * DAY, now - 5 * DAY]) + runs_with_outputs(
        held, [now - 120 * DAY]
    )
    retention.legal_hold_place(rollout=held, reason="hold", actor=users[Role.COMPLIANCE_REVIEWER])
    before = RunOutput.objects.count()
    receipt = retention.enforce_retention(scheduled_for=now, dry_run=True)
    assert RunOutput.objects.count() == before == 8
    assert (receipt.dry_run, receipt.rows_matched, receipt.rows_deleted, receipt.rows_held) == (True, 4, 0, 2)
    assert receipt.batches == 0 and not EvaluationRun.objects.filter(outputs_purged_at__isnull=False).exists()
    [entry] = entries("retention.dry_run")
    assert entry.after["rows_matched"] == 4 and entry.after["dry_run"] is True
    assert "would delete 4 outputs, 2 held back" in entry.reason
    assert surviving(runs) == {r.run_id for r in runs}


def test_a_second_run_changes_nothing(rollout):
    now = timezone.now()
    runs = runs_with_outputs(rollout, [now - 100 * DAY, now - 95 * DAY, now - 1 * DAY])
    first = retention.enforce_retention(scheduled_for=now)
    stamps = dict(EvaluationRun.objects.values_list("run_id", "outputs_purged_at"))
    outputs = list(RunOutput.objects.values_list("pk", flat=True))
    second = retention.enforce_retention(scheduled_for=now)
    assert (first.rows_deleted, first.runs_marked) == (4, 2)
    assert (second.rows_deleted, second.runs_marked, second.batches) == (0, 0, 0)
    assert dict(EvaluationRun.objects.values_list("run_id", "outputs_purged_at")) == stamps
    assert list(RunOutput.objects.values_list("pk", flat=True)) == outputs
    assert surviving(runs) == {runs[2].run_id}
    assert [e.after["rows_deleted"] for e in entries("retention.purge")] == [4, 0]


def test_batches_walk_the_index_once_even_with_ties_and_held_rows_between(two_rollouts, users):
    held, free = two_rollouts
    now = timezone.now()
    same = now - 120 * DAY
    # Interleave held and free runs with identical finish times: the keyset must not skip or repeat rows.
    free_runs, held_runs = [], []
    for i in range(7):
        (held_runs if i % 3 == 0 else free_runs).extend(
            runs_with_outputs(held if i % 3 == 0 else free, [same if i < 5 else same + i * SECOND], outputs=3)
        )
    retention.legal_hold_place(rollout=held, reason="hold", actor=users[Role.COMPLIANCE_REVIEWER])
    receipt = retention.enforce_retention(scheduled_for=now, batch_size=4)
    assert receipt.rows_deleted == 3 * len(free_runs) == 12
    assert receipt.batches == 3  # 4 + 4 + 4, the last one full, then an empty look ends it
    assert surviving(free_runs) == set() and surviving(held_runs) == {r.run_id for r in held_runs}
    assert receipt.rows_held == 9 and receipt.runs_marked == len(free_runs)
    assert receipt.longest_batch_ms >= 0 and receipt.duration is not None


def test_the_receipt_and_its_ledger_entry(rollout):
    now = timezone.now()
    runs_with_outputs(rollout, [now - 91 * DAY])
    run = jobs.run_job(Job.ENFORCE_RETENTION, trigger=JobTrigger.COMMAND)
    receipt = RetentionReceipt.objects.get()
    assert run.status == JobStatus.SUCCEEDED and receipt.job_run_id == run.pk
    assert run.summary.startswith("Deleted 2 outputs older than ")
    assert receipt.scheduled_for == run.scheduled_for and receipt.cutoff == run.scheduled_for - 90 * DAY
    [entry] = entries("retention.purge")
    assert receipt.ledger_sequence == entry.sequence
    assert (entry.object_type, entry.object_id) == ("governance.retentionreceipt", str(receipt.pk))
    assert entry.after == {
        "status": "completed",
        "dry_run": False,
        "scheduled_for": receipt.scheduled_for.isoformat(),
        "cutoff": receipt.cutoff.isoformat(),
        "retention_days": 90,
        "rows_matched": 2,
        "rows_deleted": 2,
        "rows_held": 0,
        "runs_marked": 1,
        "batches": 1,
        "held_rollouts": [],
        "job_run": run.pk,
    }


def test_run_summaries_and_records_stay(rollout, users):
    from governance.models import ProcessingRecord

    now = timezone.now()
    runs_with_outputs(rollout, [now - 200 * DAY] * 3)
    ledger_before = AuditEvent.objects.count()
    records = ProcessingRecord.objects.count()
    retention.enforce_retention(scheduled_for=now)
    assert EvaluationRun.objects.count() == 3 and RunOutput.objects.count() == 0
    assert AuditEvent.objects.count() == ledger_before + 1  # the purge's own entry; nothing removed
    assert ProcessingRecord.objects.count() == records
    run = EvaluationRun.objects.first()
    assert run.outputs_purged_at is not None and run.output_count == 2 and run.task_success_rate == 0.9


def test_the_run_page_says_when_outputs_go_and_when_they_went(rollout, client_for, settings):
    settings.RETENTION_DAYS = 60
    now = timezone.now()
    [run, young] = runs_with_outputs(rollout, [now - 61 * DAY, now - 10 * DAY])
    retention.enforce_retention(scheduled_for=now)
    client = client_for(Role.AUDITOR)
    page = client.get(f"/rollouts/{rollout.slug}/runs/{run.run_id}/").content.decode()
    # The date is a <time> element (the reader's zone, UTC on hover): compare the text people read.
    assert f"Outputs purged on {timezone.now():%Y-%m-%d} by the retention job" in re.sub(r"<[^>]+>", "", page)
    assert "kept 60 days after their run finished" in page
    page = client.get(f"/rollouts/{rollout.slug}/runs/{young.run_id}/").content.decode()
    expires = young.finished_at + 60 * DAY
    assert (
        f"kept 60 days after the run finished: purged by the first retention run after {expires:%Y-%m-%d %H:%M}"
        in re.sub(r"<[^>]+>", "", page)
    )


def test_a_running_receipt_left_by_a_dead_process_is_marked_interrupted(rollout):
    now = timezone.now()
    runs_with_outputs(rollout, [now - 100 * DAY])
    dead = RetentionReceipt.objects.create(
        scheduled_for=now - DAY,
        cutoff=now - 91 * DAY,
        retention_days=90,
        batch_size=5000,
        started_at=now - DAY,
        rows_deleted=7,
        rows_matched=7,
        batches=2,
    )
    receipt = retention.enforce_retention(scheduled_for=now)
    dead.refresh_from_db()
    assert dead.status == ReceiptStatus.INTERRUPTED and dead.finished_at is not None
    assert receipt.status == ReceiptStatus.COMPLETED and receipt.rows_deleted == 2
    [entry] = entries("retention.interrupted")
    assert (entry.object_id, entry.after["rows_deleted"], entry.after["batches"]) == (str(dead.pk), 7, 2)


def test_the_database_allows_one_running_receipt(rollout):
    now = timezone.now()
    fields = {"scheduled_for": now, "cutoff": now - 90 * DAY, "retention_days": 90, "batch_size": 10, "started_at": now}
    RetentionReceipt.objects.create(**fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        RetentionReceipt.objects.create(**fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        RetentionReceipt.objects.create(**{**fields, "status": "completed", "dry_run": True, "rows_deleted": 1})


# --- No other path deletes outputs -----------------------------------------------------------------------------


def test_the_admin_offers_no_way_to_delete_outputs_or_runs(rf, users):
    from django.contrib import admin

    request = rf.get("/admin/")
    request.user = users[Role.ROLLOUT_ADMIN]
    request.user.is_superuser = True
    for model in (RunOutput, EvaluationRun, LegalHold, RetentionReceipt):
        model_admin = admin.site._registry[model]
        assert not model_admin.has_delete_permission(request)
        assert not model_admin.has_change_permission(request)


def test_the_api_has_no_delete(api_client_with_token, rollout):
    now = timezone.now()
    [run] = runs_with_outputs(rollout, [now - DAY])
    for path in (f"/api/v1/evaluation-runs/{run.run_id}/", "/api/v1/evaluation-runs/"):
        response = api_client_with_token.delete(path)
        assert response.status_code == 405, path
    assert RunOutput.objects.filter(run=run).count() == 2


@pytest.fixture
def api_client_with_token(client, db):
    from evaluations.services import api_token_create

    _token, raw = api_token_create(name="retention-test", scopes=["ingest", "read"], actor=None)

    class Api:
        def delete(self, path):
            return client.delete(path, HTTP_AUTHORIZATION=f"Bearer {raw}")

    return Api()


@pytest.mark.postgres
def test_postgres_refuses_any_other_delete_of_outputs(two_rollouts, users):
    held, free = two_rollouts
    now = timezone.now()
    [young] = runs_with_outputs(free, [now - DAY])
    [old] = runs_with_outputs(free, [now - 100 * DAY])
    [old_held] = runs_with_outputs(held, [now - 100 * DAY])
    retention.legal_hold_place(rollout=held, reason="hold", actor=users[Role.COMPLIANCE_REVIEWER])
    attempts = {
        "a plain delete": (lambda: RunOutput.objects.filter(run=old).delete(), "only by the retention purge"),
        "a cascade from the run": (lambda: EvaluationRun.objects.filter(pk=young.pk).delete(), "only by the retention"),
        "raw SQL": (
            lambda: connection.cursor().execute("DELETE FROM evaluations_runoutput WHERE run_id = %s", [young.pk]),
            "only by the retention purge",
        ),
    }
    for label, (attempt, message) in attempts.items():
        with pytest.raises(DatabaseError, match=message), transaction.atomic():
            attempt()
        assert RunOutput.objects.count() == 6, label

    def as_purge(run, cutoff):
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('rgd.retention_cutoff', %s, true)", [cutoff.isoformat()])
        RunOutput.objects.filter(run=run).delete()

    with pytest.raises(DatabaseError, match="inside the retention window"), transaction.atomic():
        as_purge(young, now - 90 * DAY)
    with pytest.raises(DatabaseError, match="legal hold"), transaction.atomic():
        as_purge(old_held, now - 90 * DAY)
    with transaction.atomic():
        as_purge(old, now - 90 * DAY)  # expired and not held: what the purge itself does
    assert RunOutput.objects.count() == 4


def test_a_batch_is_a_fixed_handful_of_statements_whatever_its_size(two_rollouts, users):
    """One statement picks, deletes and stamps a batch (no ids travel to Python and back); the rest of a batch is
    its lock, the cutoff for the guard, the holds and the receipt."""
    from django.test.utils import CaptureQueriesContext

    _held, free = two_rollouts
    now = timezone.now()
    counts = {}
    for batch_size in (2, 4):
        runs = runs_with_outputs(free, [now - 120 * DAY - i * SECOND for i in range(4)], outputs=3)
        with CaptureQueriesContext(connection) as queries:
            receipt = retention.enforce_retention(scheduled_for=now, batch_size=batch_size)
        assert (receipt.rows_deleted, receipt.runs_marked, receipt.batches) == (12, 4, 12 // batch_size)
        assert surviving(runs) == set()
        deletes = [q["sql"] for q in queries.captured_queries if "DELETE FROM evaluations_runoutput" in q["sql"]]
        # 12 // batch_size full batches, then the look that finds nothing.
        assert len(deletes) == 12 // batch_size + 1
        counts[batch_size] = len(queries.captured_queries)
    per_batch = (counts[2] - counts[4]) / (6 - 3)
    assert per_batch == 7  # BEGIN, the lock and the cutoff, the holds, the batch, the receipt, COMMIT
