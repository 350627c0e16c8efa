"""Keyset pagination: every row exactly once walking older or newer, stable under inserts, one query a page."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from evaluations import services
from evaluations.models import EvaluationRun
from governance import ledger
from governance.models import AuditEvent
from rollout.pagination import decode_int, decode_time_id, encode_int, encode_time_id, keyset_page
from rollout.roles import Role
from tests.evaluations.conftest import run


def _page(qs, params, *, per_page=7, fields=("sequence",), encode=encode_int, decode=decode_int):
    return keyset_page(
        RequestFactory().get("/", params), qs, fields=fields, per_page=per_page, encode=encode, decode=decode
    )


@pytest.mark.django_db
def test_walking_older_then_newer_visits_every_entry_once(django_assert_num_queries):
    ledger.append_many({"action": "update", "object_type": "rollout.rollout"} for _ in range(40))
    qs = AuditEvent.objects.all()
    expected = list(qs.order_by("-sequence").values_list("sequence", flat=True))
    seen, params = [], {}
    while True:
        with django_assert_num_queries(1):
            page = _page(qs, params)
        seen += [e.sequence for e in page.object_list]
        if not page.has_next:
            break
        params = {"after": page.next_cursor}
    assert seen == expected
    assert not page.has_next and page.has_previous and len(page.object_list) == 40 % 7
    back = []
    while page.has_previous:
        page = _page(qs, {"before": page.previous_cursor})
        back = [e.sequence for e in page.object_list] + back
    assert back + seen[-(40 % 7) :] == expected
    oldest = _page(qs, {"before": ""})
    assert [e.sequence for e in oldest.object_list] == expected[-7:] and not oldest.has_next and oldest.has_previous


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["x", "-1", "99999999999999999999999", "2025-01-01_1", "nope_3"])
def test_a_bad_cursor_is_the_first_page(bad):
    ledger.append_many({"action": "update", "object_type": "rollout.rollout"} for _ in range(10))
    page = _page(AuditEvent.objects.all(), {"after": bad})
    assert [e.sequence for e in page.object_list] == list(range(10, 3, -1))
    runs = _page(
        EvaluationRun.objects.all(),
        {"after": bad},
        fields=("finished_at", "id"),
        encode=encode_time_id,
        decode=decode_time_id,
    )
    assert runs.object_list == []


def test_time_cursors_round_trip():
    at = dt.datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert decode_time_id(encode_time_id((at, 42))) == (at, 42)
    # A "+" in the offset that a hand-typed URL turned into a space still parses.
    assert decode_time_id("2025-06-01T10:00:00.123456 00:00_42") == (at, 42)


def test_runs_list_pages_through_ties_in_finished_at(client_for, canary, django_assert_num_queries):
    at = timezone.now() - dt.timedelta(hours=1)
    # 60 runs, three at each finish time: the id breaks the ties.
    services.ingest_runs(
        payload={"runs": [run(canary.slug, finished=at - dt.timedelta(minutes=i // 3)) for i in range(60)]}
    )
    client = client_for(Role.AUDITOR)
    url = f"/rollouts/{canary.slug}/runs/"
    expected = list(EvaluationRun.objects.order_by("-finished_at", "-id").values_list("run_id", flat=True))
    client.get(url)
    seen, params, counts = [], {}, set()
    while True:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url, params)
        counts.add(len(ctx))
        page = response.context["page"]
        seen += [r.run_id for r in page.object_list]
        if not page.has_next:
            break
        assert 'rel="next"' in response.content.decode()
        params = {"after": page.next_cursor}
    assert seen == expected
    assert len(counts) == 1  # first, middle and last page: the same queries
    last = client.get(url, {"before": ""}).context["page"]
    assert [r.run_id for r in last.object_list] == expected[-25:]
    filtered = client.get(url, {"arm": "candidate", "phase": "canary"}).context["page"]
    assert len(filtered.object_list) == 25
