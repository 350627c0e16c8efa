"""Governance's list pages (audit ledger, transition requests, records, reviews): sortable by each sortable
column across keyset pages, searchable, filters kept in the URL, the same queries at two sizes; on PostgreSQL
the ledger's sorts and search are served by indexes."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from governance import ledger, records, reviews, services
from governance.models import AuditEvent, ProcessingRecord, ScheduledReview, TransitionRequest
from governance.tables import AUDIT_SORTING, RECORD_SORTING, REVIEW_SORTING, TRANSITION_SORTING
from rollout.context import Actor
from rollout.roles import Role
from tests.factories import complete_readiness
from tests.tables_helpers import expected, queries, sort_links, walk

ADMIN = Role.ROLLOUT_ADMIN
ACTORS = ["zoe", "adam", "mia", "adam", "bob"]
ACTIONS = ["update", "create", "transition.apply", "export", "update"]


@pytest.fixture
def small_pages(settings):
    settings.PAGE_SIZE = 4


def _entries(rollout, n: int) -> None:
    ledger.append_many(
        {
            "action": ACTIONS[i % 5],
            "actor": Actor(kind="user", name=ACTORS[i % 5]),
            "object_type": ["rollout.rollout", "rollout.phase"][i % 2],
            "object_id": str(i % 3),
            "object_repr": f"{['Canary', 'Limited beta', 'Plan'][i % 3]} {i}",
            "rollout_id": rollout.pk if i % 2 else None,
        }
        for i in range(n)
    )


@pytest.mark.parametrize("alias", sorted(AUDIT_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_audit_sorts_by_each_sortable_column_across_pages(client_for, rollout, small_pages, alias, descending):
    _entries(rollout, 17)
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.AUDITOR), "/audit/", {"sort": sort}, key=lambda e: e.sequence)
    want = expected(
        AuditEvent.objects.all(), AUDIT_SORTING.fields(alias, "sequence"), descending, key=lambda e: e.sequence
    )
    assert got == want and len(got) == AuditEvent.objects.count()


def test_audit_search_is_a_prefix_of_actor_action_or_object(client_for, rollout):
    _entries(rollout, 10)
    client = client_for(Role.AUDITOR)

    def seqs(q):
        return walk(client, "/audit/", {"q": q}, key=lambda e: e.sequence)

    by_actor = list(
        AuditEvent.objects.filter(actor_name="adam").order_by("-sequence").values_list("sequence", flat=True)
    )
    assert seqs("ad") == by_actor and len(by_actor) == 4
    assert seqs("transition.") == list(
        AuditEvent.objects.filter(action="transition.apply").order_by("-sequence").values_list("sequence", flat=True)
    )
    assert seqs("Limited") == list(
        AuditEvent.objects.filter(object_repr__startswith="Limited")
        .order_by("-sequence")
        .values_list("sequence", flat=True)
    )
    assert seqs("imited") == []  # a prefix, not a substring
    assert seqs("ADAM") == []  # case-sensitive, as its index is


def test_audit_search_sort_and_filters_round_trip(client_for, rollout, small_pages):
    _entries(rollout, 40)
    client = client_for(Role.AUDITOR)
    params = {"rollout": rollout.slug, "action": "update", "q": "zoe", "sort": "actor"}
    response = client.get("/audit/", params)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="q" value="zoe"' in html and '<input type="hidden" name="sort" value="actor">' in html
    assert f'<option value="{rollout.slug}" selected>' in html
    toggled = parse_qs(urlsplit(sort_links(html)["actor"]).query)
    assert toggled == {"rollout": [rollout.slug], "action": ["update"], "q": ["zoe"], "sort": ["-actor"]}
    want = list(
        AuditEvent.objects.filter(rollout_id=rollout.pk, action="update", actor_name__startswith="zoe")
        .order_by("actor_name", "sequence")
        .values_list("sequence", flat=True)
    )
    assert walk(client, "/audit/", params, key=lambda e: e.sequence) == want and want
    page = response.context["page"]
    if page.has_next:
        nxt = parse_qs(urlsplit(page.next_url).query)
        assert {k: v[0] for k, v in nxt.items() if k != "after"} == params
    # The export still carries the filters, not the search (the manifest names what it covers).
    export = html[html.index('id="audit-export"') :]
    export = export[: export.index("</form>")]
    assert 'name="action" value="update"' in export and 'name="q"' not in export


@pytest.mark.parametrize("params", [{}, {"sort": "action", "q": "up"}, {"sort": "-object", "rollout": "react"}])
def test_audit_list_costs_the_same_queries_at_two_sizes(client_for, rollout, small_pages, params):
    params = {k: (rollout.slug if v == "react" else v) for k, v in params.items()}
    client = client_for(Role.AUDITOR)
    _entries(rollout, 12)
    client.get("/audit/")
    small = queries(client, "/audit/", params)
    _entries(rollout, 300)
    assert queries(client, "/audit/", params) == small
    page = client.get("/audit/", params).context["page"]
    assert page.has_next
    assert queries(client, "/audit/", {**params, "after": page.next_cursor}) == small
    if "rollout" in params:  # the oldest entries (fixtures') name no rollout: no rollout-name query there
        assert queries(client, "/audit/", {**params, "before": ""}) == small


@pytest.mark.postgres
@pytest.mark.parametrize(
    "params", [{"sort": "actor"}, {"sort": "-action"}, {"sort": "object"}, {"q": "adam"}, {"q": "Plan"}]
)
def test_audit_sorts_and_search_are_served_by_indexes(client_for, rollout, params):
    _entries(rollout, 30)
    with CaptureQueriesContext(connection) as ctx:
        client_for(Role.AUDITOR).get("/audit/", params)
    sql = next(q["sql"] for q in ctx.captured_queries if 'FROM "governance_auditevent"' in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on governance_auditevent" not in plan, plan
    assert "Index" in plan, plan


# --- Transition requests ----------------------------------------------------------------------------------------


def _requests(rollout, users, n: int) -> list[TransitionRequest]:
    admin = users[ADMIN]
    complete_readiness(rollout, admin)
    made = []
    for i in range(n):
        req = services.transition_request_create(rollout=rollout, justification=f"round {i} by plan", actor=admin)
        if i % 2:
            services.transition_decide(
                request=req, role="product-lead", decision="reject", comment="not yet", actor=users["product-lead"]
            )
        else:
            services.transition_withdraw(request=req, actor=admin, reason="later")
        made.append(req)
    return made


@pytest.mark.parametrize("alias", sorted(TRANSITION_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_transitions_sort_by_each_column(client_for, rollout, users, small_pages, alias, descending):
    _requests(rollout, users, 7)
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.AUDITOR), f"/rollouts/{rollout.slug}/transitions/", {"sort": sort})
    assert got == expected(TransitionRequest.objects.all(), TRANSITION_SORTING.fields(alias, "id"), descending)
    assert len(got) == 7


def test_transitions_search_and_status_filter_round_trip(client_for, rollout, users, small_pages):
    made = _requests(rollout, users, 9)
    client = client_for(Role.AUDITOR)
    url = f"/rollouts/{rollout.slug}/transitions/"
    assert walk(client, url, {"q": "ROUND 3"}) == [made[3].pk]
    rejected = walk(client, url, {"status": "rejected", "sort": "number"})
    assert rejected == [r.pk for r in made[1::2]]
    assert set(TransitionRequest.objects.filter(pk__in=rejected).values_list("status", flat=True)) == {"rejected"}
    response = client.get(url, {"status": "withdrawn", "q": "plan", "sort": "-number"})
    html = response.content.decode()
    assert '<option value="withdrawn" selected>' in html and 'name="q" value="plan"' in html
    nxt = parse_qs(urlsplit(response.context["page"].next_url).query)
    assert nxt["status"] == ["withdrawn"] and nxt["q"] == ["plan"] and nxt["sort"] == ["-number"]


def test_transitions_list_costs_the_same_queries_at_two_sizes(client_for, rollout, users, small_pages):
    client = client_for(Role.AUDITOR)
    url = f"/rollouts/{rollout.slug}/transitions/"
    _requests(rollout, users, 2)
    params = {"sort": "status", "q": "round"}
    small = queries(client, url, params)
    for i in range(8):
        req = services.transition_request_create(rollout=rollout, justification=f"round x{i}", actor=users[ADMIN])
        services.transition_withdraw(request=req, actor=users[ADMIN], reason="later")
    assert queries(client, url, params) == small


# --- Records and reviews ----------------------------------------------------------------------------------------


def _records(users, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        records.record_save(
            record=ProcessingRecord(),
            values={
                "key": f"rec-{(i * 5) % 9}-{i}",
                "name": f"{['Support', 'billing', 'Voice'][i % 3]} record {i}",
                "controller": "ACME Ltd, dpo@example.com",
                "purpose": "Fraud detection" if i % 4 == 0 else "Quality",
                "data_subject_categories": "d",
                "personal_data_categories": "d",
                "recipients": "r",
                "transfers": "t",
                "retention_period_days": 30 + (i % 3) * 30,
                "security_measures": "s",
            },
            actor=users[Role.COMPLIANCE_REVIEWER],
            reason="test",
        )


@pytest.mark.parametrize("alias", sorted(RECORD_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_records_sort_by_each_column(client_for, users, small_pages, alias, descending):
    _records(users, 9)
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.COMPLIANCE_REVIEWER), "/compliance/records/", {"sort": sort})
    assert got == expected(ProcessingRecord.objects.all(), RECORD_SORTING.fields(alias, "id"), descending)
    assert len(got) == 9


def test_records_search(client_for, users):
    _records(users, 8)
    client = client_for(Role.COMPLIANCE_REVIEWER)
    fraud = walk(client, "/compliance/records/", {"q": "fraud"}, key=lambda r: r.name)
    assert fraud == sorted(ProcessingRecord.objects.filter(purpose="Fraud detection").values_list("name", flat=True))
    html = client.get("/compliance/records/", {"q": "nothing like it"}).content.decode()
    assert "No record matches." in html


def test_records_list_costs_the_same_queries_at_two_sizes(client_for, users, small_pages):
    client = client_for(Role.COMPLIANCE_REVIEWER)
    _records(users, 2)
    small = queries(client, "/compliance/records/", {"sort": "-retention", "q": "record"})
    _records(users, 12, start=2)
    assert queries(client, "/compliance/records/", {"sort": "-retention", "q": "record"}) == small


@pytest.fixture
def review_rows(db):
    today = timezone.now().date()
    reviews.check_scheduled_reviews(today=today - dt.timedelta(days=70))
    reviews.check_scheduled_reviews(today=today)
    return list(ScheduledReview.objects.all())


@pytest.mark.parametrize("alias", sorted(REVIEW_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_reviews_sort_by_each_column(client_for, users, review_rows, small_pages, alias, descending):
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.COMPLIANCE_REVIEWER), "/compliance/reviews/", {"sort": sort})
    assert got == expected(ScheduledReview.objects.all(), REVIEW_SORTING.fields(alias, "id"), descending)
    assert len(got) == len(review_rows) > 4


def test_reviews_filters_round_trip(client_for, users, review_rows, small_pages):
    client = client_for(Role.COMPLIANCE_REVIEWER)
    weekly = ScheduledReview.objects.filter(kind="weekly_evaluation")
    params = {"kind": "weekly_evaluation", "status": "open", "sort": "due"}
    got = walk(client, "/compliance/reviews/", params)
    assert got == list(weekly.filter(status="open").order_by("due_at", "id").values_list("pk", flat=True))
    html = client.get("/compliance/reviews/", params).content.decode()
    assert '<option value="weekly_evaluation" selected>' in html and '<option value="open" selected>' in html
    label = weekly.order_by("id").first().label
    assert walk(client, "/compliance/reviews/", {"q": label}) == list(
        ScheduledReview.objects.filter(label__icontains=label)
        .order_by("-period_start", "-id")
        .values_list("pk", flat=True)
    )
    bad = client.get("/compliance/reviews/", {"status": "sideways"})
    assert bad.status_code == 200 and "Select a valid choice" in bad.content.decode()


def test_reviews_list_costs_the_same_queries_at_two_sizes(client_for, users, small_pages):
    client = client_for(Role.COMPLIANCE_REVIEWER)
    today = timezone.now().date()
    reviews.check_scheduled_reviews(today=today - dt.timedelta(days=200))
    small = queries(client, "/compliance/reviews/", {"sort": "-due", "status": "open"})
    reviews.check_scheduled_reviews(today=today)
    assert ScheduledReview.objects.count() > 20
    assert queries(client, "/compliance/reviews/", {"sort": "-due", "status": "open"}) == small


# The audit list's entries as the page's template loop drew them before governance_tags.audit_entries drew
# them in one pass: the reference the one-pass markup must equal.
REFERENCE_ENTRIES = (Path(__file__).parent / "audit_entries_reference.html").read_text()


def _normalised(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r">\s+<", "><", html)).strip()


@pytest.mark.parametrize("zone", ["UTC", "America/Sao_Paulo"])
def test_audit_entries_drawn_in_one_pass_are_the_template_loops_markup(rollout, zone):
    at = dt.datetime(2026, 11, 30, 23, 59, 58, tzinfo=dt.UTC)
    long = "é" * 90 + ' <b>"quoted"</b> & ' + "x" * 300
    events = [
        AuditEvent(  # an update: before and after side by side, three fields or fewer open
            sequence=1234567,
            at=at,
            actor_kind="user",
            actor_name="zoë <admin>",
            action="update",
            object_type="rollout.phase",
            object_id="42",
            object_repr=long,
            rollout_id=rollout.pk,
            before={"status": "planned", "entered_at": None, "flag": True},
            after={"status": "active", "entered_at": "2026-11-30T23:59:58.123456+00:00", "flag": True},
            reason=long,
            request_id="0123456789abcdef",
            prev_hash="a" * 64,
            hash="b" * 64,
        ),
        AuditEvent(  # a create with more than three fields: closed, one column; JSON values, a non-string
            sequence=7,
            at=at,
            actor_kind="system",
            actor_name="seed",
            action="create",
            object_type="rollout.checklistitem",
            object_id="",
            object_repr="",
            rollout_id=None,
            before=None,
            after={"a": 1, "b": [1, {"z": "2026-01-02T03:04:05Z"}], "c": {"k": "<v>"}, "d": False, "e": ""},
            reason="",
            request_id="",
            prev_hash="c" * 64,
            hash="d" * 64,
        ),
        AuditEvent(  # a delete with one field, and an entry without a diff at all
            sequence=8,
            at=at,
            actor_kind="token",
            actor_name="ci",
            action="delete",
            object_type="x.y",
            object_id="a&b",
            object_repr="gone",
            rollout_id=None,
            before={"name": "old"},
            after={},
            reason="r",
            request_id="req",
            prev_hash="e" * 64,
            hash="f" * 64,
        ),
        AuditEvent(
            sequence=9,
            at=at,
            actor_kind="user",
            actor_name="mia",
            action="auth.login",
            object_type="auth.login",
            object_id="3",
            object_repr="mia",
            rollout_id=None,
            before=None,
            after="not a dict",
            reason="",
            request_id="",
            prev_hash="g" * 64,
            hash="h" * 64,
        ),
    ]
    for e in events:
        e.rollout_obj = rollout if e.rollout_id else None
    context = Context({"page": {"object_list": events}})
    with timezone.override(zone):
        fast = Template("{% load governance_tags %}{% audit_entries page.object_list %}").render(context)
        slow = Template(REFERENCE_ENTRIES).render(context)
    assert _normalised(fast) == _normalised(slow)
    assert fast.count('class="audit-entry"') == 4 and fast.count('class="diff-row"') == 3
    assert "1234567" in fast and "zoë &lt;admin&gt;" in fast and "…" in fast and "object_id=a%26b" in fast
