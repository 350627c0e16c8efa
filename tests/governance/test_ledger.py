"""The audit ledger: one entry per change, who and why, append-only, a chain that verify checks."""

from __future__ import annotations

import hashlib
import io
import itertools
import math

import pytest
from celery import shared_task
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory

from governance import ledger
from governance.admin import AuditEventAdmin
from governance.models import AuditEvent
from rollout import services as rollout_services
from rollout.context import Actor, acting_as
from rollout.models import ChecklistItem, ChecklistKind, CohortKind, CohortMembership, Tenant
from rollout.roles import Role
from tests.factories import advance_to

from .helpers import disable_ledger_guard, enable_ledger_guard, run_threads, threaded

pytestmark = pytest.mark.django_db


def last() -> AuditEvent:
    return AuditEvent.objects.order_by("-sequence").first()


def new_since(sequence: int):
    return list(AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence"))


def top() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


# --- One entry per change, with actor and reason ------------------------------------------------------


def test_a_change_through_a_page_is_one_entry_with_user_reason_and_request_id(rollout, client_for):
    item = rollout.checklist_items.filter(kind=ChecklistKind.READINESS).first()
    start = top()
    response = client_for(Role.ROLLOUT_ADMIN).post(
        f"/rollouts/{rollout.slug}/checklist/{item.pk}/tick/", {"evidence_url": "https://wiki.example.com/ev"}
    )
    assert response.status_code == 302
    [entry] = new_since(start)
    item.refresh_from_db()
    assert (entry.action, entry.object_type, entry.object_id, entry.object_repr) == (
        "update",
        "rollout.checklistitem",
        str(item.pk),
        item.title,
    )
    assert (entry.actor_kind, entry.actor_name, entry.actor_user_id) == ("user", "rollout-admin", item.completed_by_id)
    assert entry.reason == f"Ticked: {item.title}"
    assert entry.rollout_id == rollout.pk
    assert entry.request_id == response["X-Request-ID"] and len(entry.request_id) == 32
    assert entry.before == {"completed_at": None, "completed_by_id": None, "evidence_url": ""}
    assert entry.after == {
        "completed_at": item.completed_at.isoformat(),
        "completed_by_id": item.completed_by_id,
        "evidence_url": "https://wiki.example.com/ev",
    }


def test_every_tracked_write_is_one_entry(rollout, users):
    """Creating a rollout writes 4 phases (and the preparation's first activity period), 16 checklist items,
    5 flags, 3 cohorts, 6 memberships, 5 escalation contacts and 6 success criteria: exactly one entry each,
    plus the rollout."""
    start = top()
    admin_user = users[Role.ROLLOUT_ADMIN]
    rollout_services.rollout_create_from_playbook(name="Second", owner=admin_user)
    entries = new_since(start)
    by_type: dict[str, int] = {}
    for e in entries:
        by_type[e.object_type] = by_type.get(e.object_type, 0) + 1
    assert by_type == {
        "rollout.rollout": 1,
        "rollout.phase": 4,
        "rollout.phaseperiod": 1,
        "rollout.checklistitem": 16,
        "rollout.featureflag": 5,
        "rollout.cohort": 3,
        "rollout.cohortmembership": 6,
        "rollout.escalationcontact": 5,
        "evaluations.successcriterion": 6,
    }
    assert {(e.action, e.actor_name, e.reason) for e in entries} == {
        ("create", "rollout-admin", "Created from the playbook template")
    }
    assert [e.sequence for e in entries] == list(range(start + 1, start + 1 + len(entries)))


def test_a_delete_keeps_the_row_as_before(rollout, users):
    internal = rollout.cohorts.get(kind=CohortKind.INTERNAL)
    gone = CohortMembership.objects.get(cohort=internal, tenant__name="Internal B")
    start = top()
    rollout_services.cohort_set_tenants(
        cohort=internal,
        tenants=[Tenant.objects.get(name="Internal A")],
        actor=users[Role.ROLLOUT_ADMIN],
        reason="B out",
    )
    [entry] = [e for e in new_since(start) if e.object_type == "rollout.cohortmembership"]
    assert (entry.action, entry.object_id, entry.after) == ("delete", str(gone.pk), None)
    assert entry.before == {
        "cohort_id": internal.pk,
        "id": gone.pk,
        "rollout_id": rollout.pk,
        "tenant_id": gone.tenant_id,
    }
    assert entry.reason == "B out" and entry.rollout_id == rollout.pk


def test_system_writes_are_attributed_to_the_system(db):
    start = top()
    Tenant_ = rollout_services.tenant_create(name="Quiet Co")
    [entry] = new_since(start)
    assert (entry.actor_kind, entry.actor_name, entry.actor_user_id) == ("system", "system", None)
    assert entry.object_repr == Tenant_.name and entry.rollout_id is None


@shared_task(name="tests.governance.tick_first_item")
def tick_first_item(item_id: int) -> None:
    item = ChecklistItem.objects.get(pk=item_id)
    rollout_services.checklist_item_tick(item=item, actor=None, evidence_url="https://ci.example.com/run/1")


def test_a_celery_task_is_the_actor_and_its_id_the_request_id(rollout):
    item = rollout.checklist_items.first()
    start = top()
    result = tick_first_item.apply(args=[item.pk])
    [entry] = new_since(start)
    assert (entry.actor_kind, entry.actor_name) == ("task", "tests.governance.tick_first_item")
    assert entry.request_id == result.id
    # The context is reset after the task.
    assert ledger.append(action="update", object_type="x.y").actor_kind == "system"


def test_a_token_actor_from_the_api_context_is_recorded(db):
    with acting_as(Actor(kind="token", name="harness-ci", token_id=7), request_id="req-123"):
        entry = ledger.append(action="create", object_type="evaluations.evaluationrun", object_id=1)
    assert (entry.actor_kind, entry.actor_name, entry.actor_token_id, entry.request_id) == (
        "token",
        "harness-ci",
        7,
        "req-123",
    )


def test_failed_login_is_recorded_without_the_password(client, users):
    start = top()
    response = client.post("/login/", {"username": "auditor", "password": "guess-1234"})
    assert response.status_code == 200
    [entry] = new_since(start)
    assert (entry.action, entry.actor_kind, entry.object_repr) == ("auth.login_failed", "anonymous", "auditor")
    assert entry.after == {"username": "auditor", "ip": "127.0.0.1"}
    assert "guess-1234" not in str(ledger.record_of(entry))


def test_permission_denied_is_recorded(rollout, client_for):
    start = top()
    response = client_for(Role.AUDITOR).get(f"/rollouts/{rollout.slug}/kill-switch/")
    assert response.status_code == 403
    [entry] = new_since(start)
    assert (entry.action, entry.actor_name, entry.rollout_id) == ("auth.permission_denied", "auditor", rollout.pk)
    assert entry.after == {
        "method": "GET",
        "path": f"/rollouts/{rollout.slug}/kill-switch/",
        "view": "rollout:kill_switch",
    }
    assert entry.request_id == response["X-Request-ID"]


def test_a_rollback_is_a_governance_event_after_commit(rollout, users, django_capture_on_commit_callbacks):
    advance_to(rollout, "canary", users[Role.ROLLOUT_ADMIN])
    start = top()
    with django_capture_on_commit_callbacks(execute=True), acting_as(Actor("user", "rollout-admin", 1)):
        incident = rollout_services.rollout_rollback(
            rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="Latency alerts"
        )
    entries = new_since(start)
    event = entries[-1]
    assert (event.action, event.object_type, event.object_id) == (
        "rollout.rollback",
        "rollout.incident",
        str(incident.pk),
    )
    assert event.after == {"incident": incident.pk, "kind": "manual", "trigger": "", "phase": "canary"}
    assert event.reason == "Latency alerts" and event.rollout_id == rollout.pk
    # Before it, one entry per row the rollback changed (phase, rollout, exposures, incident, timeline, steps).
    assert {e.object_type for e in entries[:-1]} >= {"rollout.phase", "rollout.rollout", "rollout.incident"}


def test_a_rollback_commits_with_its_ledger_entry(rollout, users, django_capture_on_commit_callbacks):
    """In the rollback's transaction: a worker killed right after the commit (no on-commit callback runs here)
    cannot leave a rollback without its entry."""
    advance_to(rollout, "canary", users[Role.ROLLOUT_ADMIN])
    with django_capture_on_commit_callbacks(execute=False):
        incident = rollout_services.rollout_rollback(
            rollout=rollout, actor=users[Role.ROLLOUT_ADMIN], reason="Latency alerts"
        )
    entries = AuditEvent.objects.filter(action="rollout.rollback")
    assert [(e.object_id, e.rollout_id, e.reason) for e in entries] == [
        (str(incident.pk), rollout.pk, "Latency alerts")
    ]


# --- The chain ------------------------------------------------------------------------------------------------


def test_the_chain_links_each_entry_to_the_previous(rollout):
    rows = list(ledger.database_records())
    assert rows[0]["sequence"] == 1 and rows[0]["prev_hash"] == ledger.GENESIS_HASH
    for prev, cur in itertools.pairwise(rows):
        assert cur["sequence"] == prev["sequence"] + 1
        assert cur["prev_hash"] == prev["hash"]
        assert cur["hash"] == ledger.entry_hash(prev["hash"], ledger.payload_of(cur))
    assert rows[-1]["at"] >= rows[0]["at"]


def test_values_read_back_exactly_as_hashed(db):
    odd = {
        "big": 1e16,
        "neg_zero": -0.0,
        "nan": math.nan,
        "tiny": 1e-7,
        "text": "a\x00b ünïcode ✓",
        "nested": {"list": [1, 2.5, None, True], "set": {3, 1}},
    }
    entry = ledger.append(action="create", object_type="x.y", after=odd, reason="nul \x00 here")
    stored = AuditEvent.objects.get(pk=entry.pk)
    assert stored.after == {
        "big": 10000000000000000,
        "neg_zero": 0.0,
        "nan": "nan",
        "tiny": 1e-7,
        "text": "a\ufffdb ünïcode ✓",
        "nested": {"list": [1, 2.5, None, True], "set": [1, 3]},
    }
    assert ledger.verify(ledger.database_records()).ok


def test_verify_command_passes_with_a_one_line_summary(rollout):
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out)
    rows = list(ledger.database_records())
    assert out.getvalue() == (
        f"Audit ledger intact: {len(rows)} entries, first #1 {rows[0]['hash']}, last #{len(rows)} {rows[-1]['hash']}.\n"
    )


@pytest.mark.postgres
def test_the_database_refuses_update_delete_and_truncate(rollout):
    entry = last()
    for attempt in (
        lambda: AuditEvent.objects.filter(pk=entry.pk).update(reason="edited"),
        lambda: AuditEvent.objects.filter(pk=entry.pk).delete(),
        lambda: connection.cursor().execute("TRUNCATE governance_auditevent"),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    assert AuditEvent.objects.get(pk=entry.pk).reason == entry.reason


@pytest.mark.postgres
def test_verify_names_the_entry_altered_by_raw_sql(rollout):
    disable_ledger_guard()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE governance_auditevent SET reason = 'nothing to see' WHERE sequence = 7")
    with pytest.raises(CommandError, match=r"BROKEN at sequence 7: content does not match") as caught:
        call_command("verify_audit_log")
    assert caught.value.returncode == 1


@pytest.mark.postgres
def test_verify_names_the_entry_whose_hash_was_recomputed_after_an_edit(rollout):
    # A forger who also fixes the edited entry's hash breaks the link to the next one.
    record = next(r for r in ledger.database_records() if r["sequence"] == 7)
    record["reason"] = "forged"
    forged_hash = ledger.entry_hash(record["prev_hash"], ledger.payload_of(record))
    disable_ledger_guard()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE governance_auditevent SET reason = %s, hash = %s WHERE sequence = 7", ["forged", forged_hash]
        )
    result = ledger.verify(ledger.database_records())
    assert (result.ok, result.broken_at) == (False, 8)
    assert "prev_hash" in result.problem


@pytest.mark.postgres
def test_verify_names_a_deleted_entry(rollout):
    disable_ledger_guard()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM governance_auditevent WHERE sequence = 12")
    with pytest.raises(CommandError, match=r"BROKEN at sequence 12: entry missing \(the next entry is #13\)"):
        call_command("verify_audit_log")


@pytest.mark.postgres
def test_verify_names_an_inserted_entry(rollout):
    records = list(ledger.database_records())
    forged = dict(records[9], reason="approved by nobody", object_repr="forged")  # after #10
    forged["sequence"] = 11
    forged["prev_hash"] = records[9]["hash"]
    forged["hash"] = ledger.entry_hash(forged["prev_hash"], ledger.payload_of(forged))
    disable_ledger_guard()
    with connection.cursor() as cursor:
        # Make room: shift #11.. up by one (through a far range so the primary key never collides).
        cursor.execute("UPDATE governance_auditevent SET sequence = sequence + 1000000 WHERE sequence >= 11")
        cursor.execute("UPDATE governance_auditevent SET sequence = sequence - 999999 WHERE sequence > 1000000")
    AuditEvent.objects.create(**{**forged, "at": ledger.parse_at(forged["at"])})
    result = ledger.verify(ledger.database_records())
    # The forged entry links to #10 and hashes correctly; the chain breaks right after it.
    assert (result.ok, result.broken_at) == (False, 12)
    # A crude insertion (hash not recomputed) is named itself.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE governance_auditevent SET hash = %s WHERE sequence = 11", ["f" * 64])
    with pytest.raises(CommandError, match="BROKEN at sequence 11"):
        call_command("verify_audit_log")


@pytest.mark.postgres
@threaded
def test_concurrent_writers_never_fork_the_chain(rollout, users):
    items = list(rollout.checklist_items.order_by("pk")[:10])
    start = top()

    def write(i: int):
        if i < 10:
            return rollout_services.checklist_item_tick(
                item=items[i], actor=users[Role.ROLLOUT_ADMIN], evidence_url=f"https://e.example.com/{i}"
            )
        return ledger.append(action="auth.permission_denied", object_type="http.request", object_repr=f"#{i}")

    results = run_threads(20, write)
    assert not [r for r in results if isinstance(r, Exception)], results
    new = new_since(start)
    assert len(new) == 20
    assert [e.sequence for e in new] == list(range(start + 1, start + 21))
    assert len({e.prev_hash for e in new}) == 20
    assert ledger.verify(ledger.database_records()).ok


def test_the_admin_cannot_add_change_or_delete_entries(rollout, users):
    request = RequestFactory().get("/admin/")
    request.user = users[Role.AUDITOR]
    request.user.is_superuser = True
    model_admin = AuditEventAdmin(AuditEvent, admin.site)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, last())
    assert not model_admin.has_delete_permission(request, last())


def test_the_actor_name_survives_the_users_deletion(rollout, client_for, users):
    client_for(Role.AUDITOR).get(f"/rollouts/{rollout.slug}/kill-switch/")
    entry = last()
    user_id = users[Role.AUDITOR].pk
    users[Role.AUDITOR].delete()
    entry.refresh_from_db()
    assert (entry.actor_name, entry.actor_user_id) == ("auditor", user_id)
    assert ledger.verify(ledger.database_records()).ok


def test_the_admin_pages_render_read_only(approved_canary, client):
    from tests.conftest import make_user

    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    for url in (
        "/admin/governance/auditevent/",
        f"/admin/governance/auditevent/{last().pk}/change/",
        "/admin/governance/transitionrequest/",
        f"/admin/governance/transitionrequest/{approved_canary.pk}/change/",
        "/admin/governance/plansignoff/",
        "/admin/governance/transitionapproval/",
        "/admin/governance/approvingrole/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b'name="_save"' not in response.content, url


@pytest.mark.postgres
@pytest.mark.parametrize(
    "tamper",
    [
        None,
        "UPDATE governance_auditevent SET reason = 'nothing to see' WHERE sequence = 7",
        "UPDATE governance_auditevent SET hash = repeat('f', 64) WHERE sequence = 9",
        "DELETE FROM governance_auditevent WHERE sequence = 12",
        'UPDATE governance_auditevent SET "at" = "at" + interval \'1 microsecond\' WHERE sequence = 5',
        'UPDATE governance_auditevent SET "after" = \'{"b": [1, {"z": 2, "a": "\\u00e9"}], "a": null}\' '
        "WHERE sequence = 6",
    ],
)
def test_the_streamed_database_verification_equals_the_record_by_record_one(rollout, tamper):
    """``verify_database`` (a server-side cursor, timestamps formatted by PostgreSQL, chunks of its own size) gives
    exactly the result of ``verify(database_records())``, intact or broken, whatever the chunk boundaries."""
    with acting_as(Actor(kind="user", name="zoë \u2018quoted\u2019")):
        ledger.append(action="update", object_type="x", object_id=1, object_repr="é\u2028", before={"k": 1.5})
    ledger.append(action="create", object_type="x", object_id=2, object_repr="micro", after={"n": -3})
    if tamper:
        disable_ledger_guard()
        with connection.cursor() as cursor:
            cursor.execute(tamper)
    expected = ledger.verify(ledger.database_records())
    assert expected.ok is (tamper is None)
    for chunk_size in (1, 3, 50_000):
        assert ledger.verify_database(chunk_size=chunk_size) == expected


TRICKY_TEXTS = [
    "plain",
    "",
    "é ü 中",
    "😀 astral",
    "\u2028 separator",
    "del \x7f char",
    "ctrl \x01\x1f",
    'quote " and back\\slash /',
    "new\nline\r\ttab\b\f",
    "=SUM(A1)",
    "-2",
]
TRICKY_JSON = [
    None,
    {},
    [],
    {"enabled": False},
    {"ccc": 1, "a": 2, "bb": [3, None, True], "é": "x", "Z": {"y": -1, "x": {"deep": [1.5, -0.0, 2.5e-7]}}},
    {"ключ": "значение", "big": 1e300, "float": 123456789.123456789, "neg": -42, "small": 1e-300, "t": "\u2028"},
    [-1, "=x", 'q"\\', {"n": None}],
    "a string",
    -3,
    0.1,
    True,
]


@pytest.mark.postgres
def test_the_servers_payload_text_is_the_canonical_json_of_every_entry(db, monkeypatch):
    """``verify_database`` hashes text PostgreSQL mostly writes (``_database_payloads``): for every kind of value
    it must be exactly ``canonical_json`` of the payload Django reads, or an intact ledger would look broken."""
    for i, (text, value) in enumerate(itertools.product(TRICKY_TEXTS, TRICKY_JSON)):
        with acting_as(Actor(kind="user", name=f"{text} {i}", user_id=-i if i % 2 else None, token_id=i or None)):
            ledger.append(
                action="update",
                object_type="x.y",
                object_id=text[:60],
                object_repr=text,
                reason=text,
                rollout_id=-i if i % 3 else None,
                before=value,
                after=TRICKY_JSON[(i + 1) % len(TRICKY_JSON)],
            )
    expected = [
        (r["sequence"], r["prev_hash"], r["hash"], ledger.canonical_json(ledger.payload_of(r)))
        for r in ledger.database_records()
    ]
    assert len(expected) >= len(TRICKY_TEXTS) * len(TRICKY_JSON)
    assert list(ledger.verifying._database_payloads(7)) == expected
    monkeypatch.setattr(ledger.verifying, "_JSON_MEMO_SIZE", 2)  # the memo of before/after texts forgets and refills
    assert list(ledger.verifying._database_payloads(50_000)) == expected
    assert ledger.verify_database().ok


def _chain(n: int) -> list[tuple[int, str, str, str]]:
    entries, prev = [], ledger.GENESIS_HASH
    for sequence in range(1, n + 1):
        text = f'{{"n":{sequence}}}'
        own = hashlib.sha256((prev + text).encode("ascii")).hexdigest()
        entries.append((sequence, prev, own, text))
        prev = own
    return entries


def _breaks(entries):
    yield "intact", entries
    for i in (0, 1, 4, 5, 9):
        yield f"missing {i + 1}", entries[:i] + entries[i + 1 :]
        seq, prev, own, text = entries[i]
        yield f"altered {i + 1}", [*entries[:i], (seq, prev, own, text + " "), *entries[i + 1 :]]
        yield f"relinked {i + 1}", [*entries[:i], (seq, "f" * 64, own, text), *entries[i + 1 :]]
        yield f"rehashed {i + 1}", [*entries[:i], (seq, prev, "0" * 64, text), *entries[i + 1 :]]
    yield "missing the last two", entries[:-2]
    yield "empty", []


@pytest.mark.parametrize(("name", "entries"), list(_breaks(_chain(10))))
def test_ranges_verified_apart_and_joined_give_the_one_pass_result(name, entries):
    """``_verify_parallel`` verifies sequence ranges in separate processes and joins them with ``_join_ranges``:
    for any break and wherever the ranges split the ledger (empty ranges too), the result is the one-pass one."""
    expected = ledger.verifying._verify(iter(entries), canonical=str)
    for cuts in itertools.chain(itertools.combinations(range(0, 13), 1), itertools.combinations(range(0, 13), 2)):
        bounds = [0, *cuts, 13]
        ranges = [
            ledger.verifying._verify_range(e for e in entries if low < e[0] <= high)
            for low, high in itertools.pairwise(bounds)
        ]
        assert ledger.verifying._join_ranges(ranges) == expected, (name, cuts)


@pytest.mark.postgres
@threaded
@pytest.mark.parametrize(
    "tamper",
    [
        None,
        "UPDATE governance_auditevent SET reason = 'nothing to see' WHERE sequence = 7",
        "DELETE FROM governance_auditevent WHERE sequence = 21",  # on the seam of two ranges
    ],
)
def test_the_ledger_verified_in_processes_is_the_one_pass_result(db, monkeypatch, tamper):
    """The real thing: child processes on one exported snapshot, each its own range (committed data)."""
    ledger.append_many({"action": "update", "object_type": "x", "object_id": i, "after": {"i": i}} for i in range(40))
    if tamper:
        disable_ledger_guard()
        try:
            with connection.cursor() as cursor:
                cursor.execute(tamper)
        finally:
            enable_ledger_guard()
    expected = ledger.verify(ledger.database_records())
    assert expected.ok is (tamper is None)
    monkeypatch.setattr(ledger.verifying, "_PARALLEL_MIN_ENTRIES", 0)
    forks = []
    fork_range = ledger.verifying._fork_range
    monkeypatch.setattr(ledger.verifying, "_fork_range", lambda *args: forks.append(args) or fork_range(*args))
    for workers in (2, 3, 5):
        assert ledger.verify_database(chunk_size=4, workers=workers) == expected
    assert len(forks) == 1 + 2 + 4
