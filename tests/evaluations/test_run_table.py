"""The runs list: sortable on its indexed columns, run-id prefix search, filters kept in the URL, keyset pages
with the same queries at two sizes, and (on PostgreSQL) each sort and the search served by an index."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from evaluations import selectors
from evaluations.models import EvaluationRun
from evaluations.tables import RUN_SORTING, RunTable
from rollout.roles import Role
from rollout.tables import sorted_page
from tests.tables_helpers import expected, queries, sort_links, walk

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def make_runs(rollout, n: int, *, start: int = 0, prefix: str = "run") -> list[EvaluationRun]:
    """Runs stored directly (the list reads what is stored, whatever the ingest rules): finish times with ties,
    conversations with ties, both arms, two phases."""
    phases = {p.kind: p for p in rollout.phases.all()}
    rows = [
        EvaluationRun(
            run_id=f"{prefix}-{(i * 7919) % 1000:03d}-{i}",
            rollout=rollout,
            phase=phases["canary" if i % 3 else "preparation"],
            arm="baseline" if i % 2 else "candidate",
            started_at=T0 + dt.timedelta(hours=i // 2) - dt.timedelta(minutes=30),
            finished_at=T0 + dt.timedelta(hours=i // 2),
            conversations=100 + (i % 4) * 10,
            guardrail_compensations=i % 3,
            harness_version="h-1",
            content_hash=f"{i:064d}",
            task_success_rate=0.9,
        )
        for i in range(start, start + n)
    ]
    return EvaluationRun.objects.bulk_create(rows)


@pytest.fixture
def small_pages(settings):
    settings.PAGE_SIZE = 4


@pytest.fixture
def url(rollout):
    return f"/rollouts/{rollout.slug}/runs/"


@pytest.mark.parametrize("alias", sorted(RUN_SORTING.columns))
@pytest.mark.parametrize("descending", [False, True])
def test_runs_sort_by_each_sortable_column_across_pages(client_for, rollout, url, small_pages, alias, descending):
    make_runs(rollout, 15)
    sort = f"-{alias}" if descending else alias
    got = walk(client_for(Role.AUDITOR), url, {"sort": sort})
    assert got == expected(rollout.evaluation_runs.all(), RUN_SORTING.fields(alias, "id"), descending)
    assert len(set(got)) == 15


def test_runs_default_to_newest_first_and_show_the_sort(client_for, rollout, url):
    make_runs(rollout, 5)
    client = client_for(Role.AUDITOR)
    response = client.get(url)
    assert [r.pk for r in response.context["page"].object_list] == expected(
        rollout.evaluation_runs.all(), ("finished_at", "id"), True
    )
    html = response.content.decode()
    assert 'aria-sort="descending"' in html and set(sort_links(html)) == {"run", "finished", "conversations"}


def test_run_search_is_a_prefix_of_the_run_id(client_for, rollout, url, small_pages):
    make_runs(rollout, 6)
    make_runs(rollout, 5, start=100, prefix="nightly")
    client = client_for(Role.AUDITOR)
    nightly = walk(client, url, {"q": "nightly", "sort": "run"}, key=lambda r: r.run_id)
    assert nightly == sorted(
        EvaluationRun.objects.filter(run_id__startswith="nightly").values_list("run_id", flat=True)
    )
    assert len(nightly) == 5
    # A prefix, not a substring: the middle of a run id finds nothing.
    assert walk(client, url, {"q": "ightly"}) == []
    one = EvaluationRun.objects.order_by("id").first()
    assert walk(client, url, {"q": one.run_id}, key=lambda r: r.run_id) == [one.run_id]


def test_run_filters_round_trip_through_sort_links_and_pages(client_for, rollout, url, small_pages):
    make_runs(rollout, 24)
    client = client_for(Role.AUDITOR)
    params = {"phase": "canary", "arm": "candidate", "q": "run-", "sort": "conversations"}
    response = client.get(url, params)
    html = response.content.decode()
    assert '<option value="canary" selected>' in html and '<option value="candidate" selected>' in html
    assert 'name="q" value="run-"' in html and '<input type="hidden" name="sort" value="conversations">' in html
    toggled = parse_qs(urlsplit(sort_links(html)["conversations"]).query)
    assert toggled == {"phase": ["canary"], "arm": ["candidate"], "q": ["run-"], "sort": ["-conversations"]}
    page = response.context["page"]
    nxt = parse_qs(urlsplit(page.next_url).query)
    assert {k: v[0] for k, v in nxt.items() if k != "after"} == params
    matching = rollout.evaluation_runs.filter(phase__kind="canary", arm="candidate")
    assert walk(client, url, params) == expected(matching, ("conversations", "id"), False)


@pytest.mark.parametrize(
    "params", [{}, {"sort": "run", "q": "run-"}, {"sort": "-conversations", "arm": "baseline", "phase": "canary"}]
)
def test_runs_list_costs_the_same_queries_at_two_sizes(client_for, rollout, url, small_pages, params):
    client = client_for(Role.AUDITOR)
    make_runs(rollout, 6)
    client.get(url)
    small = queries(client, url, params)
    make_runs(rollout, 60, start=6)
    assert queries(client, url, params) == small
    first = client.get(url, params).context["page"]
    assert first.has_next
    assert queries(client, url, {**params, "after": first.next_cursor}) == small
    assert queries(client, url, {**params, "before": ""}) == small


@pytest.mark.postgres
@pytest.mark.parametrize("params", [{"sort": "run"}, {"sort": "-conversations"}, {}, {"q": "nightly"}])
def test_each_runs_sort_and_the_search_is_served_by_an_index(client_for, rollout, url, params):
    make_runs(rollout, 30)
    client = client_for(Role.AUDITOR)
    with CaptureQueriesContext(connection) as ctx:
        client.get(url, params)
    sql = next(q["sql"] for q in ctx.captured_queries if 'FROM "evaluations_evaluationrun"' in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on evaluations_evaluationrun" not in plan, plan
    assert "Index" in plan, plan


def _normalised(html: str) -> str:
    """Markup without the whitespace between tags (template loops and one-pass rows lay it out differently)."""
    return re.sub(r"\s+", " ", re.sub(r">\s+<", "><", html)).strip()


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Auckland"])
def test_prerendered_rows_are_exactly_what_django_tables2_draws(rollout, rf, zone):
    """The runs table draws its rows in one pass (RunTable.cells): every cell must be what django-tables2's
    per-cell path (the columns' render methods and templates, partials/table.html) draws, in any time zone."""
    runs = make_runs(rollout, 9)
    cohort = rollout.cohorts.first()
    cohort.name = 'QA <&> "tenants"'
    cohort.save()
    late, purged, sparse = runs[1], runs[2], runs[3]
    EvaluationRun.objects.filter(pk=late.pk).update(late=True, cohort=cohort, guardrail_compensations=55)
    EvaluationRun.objects.filter(pk=purged.pk).update(
        outputs_purged_at=dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC), output_count=12
    )
    EvaluationRun.objects.filter(pk=sparse.pk).update(
        task_success_rate=None, latency_p95_ms=12345.678, conversations=1234567, arm="", output_count=0
    )
    EvaluationRun.objects.filter(pk=runs[4].pk).update(task_success_rate=0.0, latency_p95_ms=0.04, conversations=7)
    request = rf.get(f"/rollouts/{rollout.slug}/runs/", {"sort": "-conversations"})
    page, sort = sorted_page(request, selectors.runs_for(rollout), RUN_SORTING)
    assert {late.pk, purged.pk, sparse.pk} <= {r.pk for r in page.object_list}

    def draw(template_name: str) -> str:
        table = RunTable(page, sort=sort, rollout_slug=rollout.slug)
        return Template("{% load django_tables2 %}{% render_table table template_name %}").render(
            Context({"table": table, "request": request, "template_name": template_name})
        )

    with timezone.override(zone):
        fast, slow = draw("rollout/prerendered_table.html"), draw("partials/table.html")
    assert _normalised(fast) == _normalised(slow)
    for expected_cell in (
        "late arrival",
        "QA &lt;&amp;&gt; &quot;tenants&quot;",
        "purged 2026-12-01 UTC" if zone == "Pacific/Auckland" else "purged 2026-11-30 UTC",
        '<td class="text-end">1234567</td>',
        "12,345.7",
        '<td class="text-end">0.0000</td>',
        "(0.5000)",
        "<td >—</td>",
    ):
        assert expected_cell in fast, expected_cell
