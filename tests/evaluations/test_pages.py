"""The evaluation pages and the API reads: content, permissions, and a fixed number of queries at two sizes."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from evaluations import services
from evaluations.models import EvaluationRun, SuccessCriterion
from rollout.roles import Role
from tests.evaluations.conftest import run


def add_runs(canary, n: int, *, outputs: int = 0, offset: int = 0) -> None:
    # Runs of the canary period (entered days ago), the newest a moment ago.
    entered = timezone.now()
    runs = []
    for i in range(n):
        arm = "baseline" if i % 2 else "candidate"
        runs.append(
            run(
                canary.slug,
                arm=arm,
                cohort="internal",
                guardrail_compensations=1,
                finished=entered - dt.timedelta(hours=n - i + offset),
                metrics={"task_success_rate": 0.8 + (i % 7) / 100, "latency_p95_ms": 1500.0 + i},
                outputs=[{"conversation_id": f"c{k}", "text": "hello"} for k in range(outputs)],
            )
        )
    services.ingest_runs(payload={"runs": runs})


def same_queries_at_two_sizes(client, url: str, grow, django_assert_num_queries) -> None:
    client.get(url)  # warm the per-process caches (content types, ...)
    with CaptureQueriesContext(connection) as small:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    grow()
    with django_assert_num_queries(len(small)):
        assert client.get(url).status_code == 200


@pytest.fixture
def viewer(client_for):
    return client_for(Role.AUDITOR)


def test_deltas_page_shows_tables_and_accessible_charts(viewer, canary):
    add_runs(canary, 6)
    html = viewer.get(f"/rollouts/{canary.slug}/deltas/").content.decode()
    assert 'data-phase="canary"' in html
    # Two metrics were reported, so two charts; the other four say so instead of drawing nothing.
    assert html.count('role="img"') == 2
    assert html.count("No runs have reported this metric yet.") == 4
    assert '<title id="chart-task_success_rate-title">Task success rate over time</title>' in html
    assert "Run finished (UTC)" in html and "Task success rate (ratio)" in html
    assert 'class="threshold"' in html and "success criterion ≥ 0.85" in html
    assert "Data table (6 points)" in html
    # Nothing is loaded from another host (the CSRF token is random, so don't search the whole page for "cdn").
    assert not re.search(r'(src|href)="(https?:)?//', html)


@pytest.mark.parametrize(
    "path",
    [
        "/rollouts/{slug}/deltas/",
        "/rollouts/{slug}/runs/",
        "/evaluations/",
        "/rollouts/{slug}/",
        "/rollouts/{slug}/runs/?phase=canary&arm=candidate&since=2020-01-01",
    ],
)
def test_pages_use_a_fixed_number_of_queries(viewer, canary, path, django_assert_num_queries):
    add_runs(canary, 3, outputs=1)
    url = path.format(slug=canary.slug)
    same_queries_at_two_sizes(
        viewer, url, lambda: add_runs(canary, 40, outputs=2, offset=100), django_assert_num_queries
    )


def test_deltas_page_buckets_many_runs_with_the_same_queries(viewer, canary, django_assert_num_queries, monkeypatch):
    from evaluations import selectors

    add_runs(canary, 4)
    url = f"/rollouts/{canary.slug}/deltas/"
    viewer.get(url)
    with CaptureQueriesContext(connection) as small:
        viewer.get(url)
    monkeypatch.setattr(selectors, "MAX_CHART_POINTS", 10)
    add_runs(canary, 30, offset=50)
    with django_assert_num_queries(len(small)):
        html = viewer.get(url).content.decode()
    assert "Means per" in html


def test_deltas_page_makes_the_same_queries_whichever_way_the_trend_is_drawn(
    viewer, canary, django_assert_num_queries, monkeypatch
):
    """One point per run, hourly means over the raw runs, day buckets from the summaries: the trend switches
    strategy with the data (here at 10 points instead of 1,500), the page's query count does not (P12)."""
    from evaluations import selectors

    monkeypatch.setattr(selectors, "MAX_CHART_POINTS", 10)
    url = f"/rollouts/{canary.slug}/deltas/"
    add_runs(canary, 4)
    viewer.get(url)
    with CaptureQueriesContext(connection) as small:
        response = viewer.get(url)
    assert response.context["trend"].bucket is None
    add_runs(canary, 30, offset=50)  # 34 runs within four days
    with django_assert_num_queries(len(small)):
        response = viewer.get(url)
    assert response.context["trend"].bucket == "hour"
    add_runs(canary, 10, offset=8 * 24)  # and ten eight days back
    with django_assert_num_queries(len(small)):
        response = viewer.get(url)
    trend = response.context["trend"]
    assert trend.bucket == "day" and sum(p.runs for p in trend.points) == 44
    assert trend.first == EvaluationRun.objects.order_by("finished_at").first().finished_at
    assert trend.last == EvaluationRun.objects.order_by("finished_at").last().finished_at


def test_run_page_shows_metrics_and_paginated_outputs_then_purged(viewer, canary, django_assert_num_queries):
    add_runs(canary, 1, outputs=3)
    r = EvaluationRun.objects.get()
    url = f"/rollouts/{canary.slug}/runs/{r.run_id}/"
    html = viewer.get(url).content.decode()
    assert html.count('class="border rounded p-2 mb-2 output"') == 3
    assert "0.8000" in html
    same_queries_at_two_sizes(
        viewer,
        url,
        lambda: services.ingest_runs(
            payload={
                "runs": [run(canary.slug, run_id="big", outputs=[{"conversation_id": f"x{i}"} for i in range(45)])]
            }
        ),
        django_assert_num_queries,
    )
    big = viewer.get(f"/rollouts/{canary.slug}/runs/big/").content.decode()
    assert big.count('class="border rounded p-2 mb-2 output"') == 20 and "Page 1 of 3" in big
    EvaluationRun.objects.filter(pk=r.pk).update(outputs_purged_at=dt.datetime(2026, 3, 4, tzinfo=dt.UTC))
    purged = 'Outputs purged on <time datetime="2026-03-04T00:00:00Z" title="2026-03-04 00:00:00 UTC">2026-03-04</time>'
    assert purged in viewer.get(url).content.decode()
    assert viewer.get(f"/rollouts/other/runs/{r.run_id}/").status_code == 404


def test_runs_filters_and_bad_values_give_a_message(viewer, canary):
    add_runs(canary, 4)
    page = viewer.get(f"/rollouts/{canary.slug}/runs/?arm=baseline")
    assert len(page.context["page"].object_list) == 2
    bad = viewer.get(f"/rollouts/{canary.slug}/runs/?arm=purple&since=yesterday&phase=canary")
    assert bad.status_code == 200
    messages = [str(m) for m in bad.context["messages"]]
    assert len(messages) == 1 and "Some filters were ignored" in messages[0]
    assert len(bad.context["page"].object_list) == 4  # arm and since dropped, phase kept
    empty = viewer.get(f"/rollouts/{canary.slug}/runs/?phase=limited_beta")
    assert "No runs match these filters." in empty.content.decode()
    reversed_dates = viewer.get(f"/rollouts/{canary.slug}/runs/?since=2026-02-02&until=2026-01-01")
    assert reversed_dates.status_code == 200


def test_rollout_page_panel_shows_streaks_thresholds_and_open_incidents(viewer, canary):
    entered = canary.phases.get(kind="canary").entered_at
    services.ingest_runs(
        payload={"runs": [run(canary.slug, guardrail_compensations=9, finished=entered + dt.timedelta(seconds=1))]}
    )
    html = viewer.get(f"/rollouts/{canary.slug}/").content.decode()
    assert 'data-trigger="guardrail" data-streak="1"' in html
    assert "&gt; 5.00% of conversations in a candidate run; fires at 2 in a row" in html
    assert 'data-trigger="latency" data-streak="0"' in html and "&gt; 2000 ms in a monitoring interval" in html
    assert "No open incidents." in html
    services.ingest_runs(
        payload={"runs": [run(canary.slug, guardrail_compensations=9, finished=entered + dt.timedelta(seconds=2))]}
    )
    services.evaluate_triggers(rollout_id=canary.pk)
    html = viewer.get(f"/rollouts/{canary.slug}/").content.decode()
    assert 'id="open-incidents"' in html and "Automatic rollback in Canary (internal QA): guardrail trigger" in html
    assert "No active phase: not evaluated." in html
    # The trigger that fired says so while its incident is open; the other was not evaluated (not "clear").
    guardrail, latency = (
        html.split(f'data-trigger="{key}"', 1)[1].split("</strong>", 1)[1][:80] for key in ("guardrail", "latency")
    )
    assert guardrail.startswith('<span class="badge text-bg-danger">fired</span>')
    assert latency.startswith('<span class="badge text-bg-secondary">not evaluated</span>')
    assert 'data-trigger="guardrail" data-streak="0"' in html


def test_criteria_edit_is_for_rollout_admins_and_goes_through_the_service(client_for, canary):
    url = f"/rollouts/{canary.slug}/success-criteria/"
    assert client_for(Role.AUDITOR).get(url).status_code == 403
    assert (
        "Success criteria"
        not in client_for(Role.AUDITOR)
        .get(f"/rollouts/{canary.slug}/deltas/")
        .content.decode()
        .split("nav-tabs")[1]
        .split("</ul>")[0]
    )
    admin = client_for(Role.ROLLOUT_ADMIN)
    assert admin.get(url).status_code == 200
    from rollout.signals import plan_changed

    seen = []
    plan_changed.connect(lambda sender, **kw: seen.append(kw["reason"]), weak=False, dispatch_uid="t-criteria")
    try:
        data = {"reason": "Raise the bar for GA"}
        for key, comparator, threshold in [("task_success_rate", "gte", "0.9"), ("latency_p95_ms", "lte", "1800")]:
            data.update({f"{key}-enabled": "on", f"{key}-comparator": comparator, f"{key}-threshold": threshold})
        for key in (
            "guardrail_compensation_rate",
            "cost_per_conversation_usd",
            "tool_call_accuracy",
            "critic_revision_rate",
        ):
            data.update({f"{key}-comparator": "lte", f"{key}-threshold": ""})
        response = admin.post(url, data)
        assert response.status_code == 302
    finally:
        plan_changed.disconnect(dispatch_uid="t-criteria")
    assert seen == ["Raise the bar for GA"]
    assert sorted(SuccessCriterion.objects.filter(rollout=canary).values_list("metric", "comparator", "threshold")) == [
        ("latency_p95_ms", "lte", 1800.0),
        ("task_success_rate", "gte", 0.9),
    ]
    record = SuccessCriterion.history.filter(metric="task_success_rate").first()
    assert (record.history_user.username, record.history_change_reason) == ("rollout-admin", "Raise the bar for GA")
    # A ratio above 1 is refused with a message, and nothing changes.
    bad = admin.post(url, {**data, "task_success_rate-threshold": "1.5"})
    assert bad.status_code == 200 and "Fix the highlighted fields." in [str(m) for m in bad.context["messages"]]
    assert SuccessCriterion.objects.get(rollout=canary, metric="task_success_rate").threshold == 0.9


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/rollouts/",
        "/api/v1/rollouts/{slug}/",
        "/api/v1/rollouts/{slug}/deltas/",
        "/api/v1/rollouts/{slug}/flags/",
    ],
)
def test_api_reads_use_a_fixed_number_of_queries(api, canary, path, django_assert_num_queries):
    add_runs(canary, 3)
    url = path.format(slug=canary.slug)

    def grow():
        add_runs(canary, 30, offset=100)
        from rollout.services import rollout_create_from_playbook

        rollout_create_from_playbook(name="Another rollout", owner=canary.owner)

    api.get(url)
    with CaptureQueriesContext(connection) as small:
        assert api.get(url).status_code == 200
    grow()
    with django_assert_num_queries(len(small)):
        assert api.get(url).status_code == 200


def test_api_run_detail_and_deltas_json(api, canary):
    add_runs(canary, 4, outputs=2)
    r = EvaluationRun.objects.order_by("id").first()
    body = api.get(f"/api/v1/evaluation-runs/{r.run_id}/").json()
    assert body["run_id"] == r.run_id and body["output_count"] == 2 and body["outputs_purged_at"] is None
    assert body["metrics"] == {"task_success_rate": 0.8, "latency_p95_ms": 1500.0}
    assert body["rollout"] == canary.slug and body["phase"] == "canary" and body["cohort"] == "internal"
    deltas = api.get(f"/api/v1/rollouts/{canary.slug}/deltas/").json()
    canary_phase = next(p for p in deltas["phases"] if p["phase"] == "canary")
    tsr = next(m for m in canary_phase["metrics"] if m["metric"] == "task_success_rate")
    assert tsr["baseline"]["n"] == 2 and tsr["candidate"]["n"] == 2 and tsr["criterion"] == "task_success_rate ≥ 0.85"
    flags = api.get(f"/api/v1/rollouts/{canary.slug}/flags/").json()
    internal = next(c for c in flags["cohorts"] if c["cohort"] == "internal")
    assert all(t["flags"]["multi_agent_runner"] for t in internal["tenants"])


def test_schema_and_docs_are_self_hosted(api, client_for, client):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    spec = schema.json()
    run_schema = spec["components"]["schemas"]["EvaluationRunInRequest"]
    assert set(run_schema["required"]) >= {"run_id", "rollout", "phase", "arm", "started_at", "finished_at"}
    responses = spec["paths"]["/api/v1/evaluation-runs/"]["post"]["responses"]
    assert set(responses) >= {"201", "400", "401", "403", "409", "413", "415", "422"}
    assert list(responses["422"]["content"]) == ["application/problem+json"]
    # The schema states the limits the service enforces.
    batch = spec["components"]["schemas"]["EvaluationRunBatchRequest"]["properties"]["runs"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 500)
    assert run_schema["properties"]["outputs"]["maxItems"] == 1000
    metrics = spec["components"]["schemas"]["MetricsRequest"]["properties"]
    from evaluations.models import METRIC_KEYS

    assert list(metrics) == list(METRIC_KEYS)
    assert metrics["task_success_rate"]["maximum"] == 1.0
    assert spec["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    assert client.get("/api/v1/schema/").status_code == 401
    docs = client_for(Role.AUDITOR).get("/api/v1/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs
    assert not re.search(r'(src|href)="(https?:)?//', docs)


def _normalised(html: str) -> str:
    """Markup without the whitespace between tags (template loops and one-pass builders lay it out differently)."""
    return re.sub(r"\s+", " ", re.sub(r">\s+<", "><", html)).strip()


@pytest.mark.parametrize(("zone", "max_points"), [("UTC", 1500), ("Asia/Kolkata", 1500), ("UTC", 10)])
def test_deltas_rows_and_charts_drawn_in_one_pass_are_the_template_loops_markup(
    viewer, canary, monkeypatch, zone, max_points
):
    """The metric rows and the charts are drawn by evaluation_tags.delta_rows and chart_figure; their markup is
    that of the template loops they replaced (kept as deltas_reference.html): per-run points and hourly means,
    met / not met / no-data criteria, empty charts, thresholds, in two time zones."""
    from pathlib import Path

    from django.template import Context, Template

    from evaluations import selectors

    monkeypatch.setattr(selectors, "MAX_CHART_POINTS", max_points)
    add_runs(canary, 14)
    response = viewer.get(f"/rollouts/{canary.slug}/deltas/")
    context = {k: response.context[k] for k in ("report", "charts", "trend")}
    assert context["trend"].bucket == (None if max_points > 14 else "hour")
    reference = Template((Path(__file__).parent / "deltas_reference.html").read_text())
    one_pass = Template(
        "{% load evaluation_tags %}{% for p in report.phases %}<table><tbody>{{ p|delta_rows }}</tbody></table>"
        '{% endfor %}{% for chart in charts %}<div class="col-xl-6">{{ chart|chart_figure:trend.bucket }}</div>'
        "{% endfor %}"
    )
    with timezone.override(zone):
        fast, slow = one_pass.render(Context(context)), reference.render(Context(context))
    assert _normalised(fast) == _normalised(slow)
    for expected in (
        'data-meets="yes"',
        'data-meets="no"',
        "no data",
        'class="threshold"',
        "No runs have reported",
        "<circle",
        'text-anchor="middle"',
    ):
        assert expected in fast, expected
