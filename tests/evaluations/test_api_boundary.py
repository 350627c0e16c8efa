"""Issue 8, finding 4: crafted input at the API answers a named 4xx, never a 500, and stores nothing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from evaluations.models import EvaluationRun, MonitoringSample, RunOutput
from rollout.inputs import MAX_JSON_DEPTH
from tests.evaluations.conftest import run
from tests.evaluations.test_api_ingest import SAMPLES, URL, assert_nothing_stored, assert_problem, sample

INT32_MAX = 2**31 - 1


def post_raw(client, auth: dict, path: str, text: str):
    return client.post(path, text.encode(), content_type="application/json", **auth)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_json_nested_deeper_than_the_limit_is_400_before_any_recursion(client, api, canary, depth):
    # 200,000 levels would be a RecursionError in any recursive parser (the first thing that broke).
    text = '{"runs": [' + "[" * depth + "]" * depth + "]}"
    response = post_raw(client, api.auth, URL, text)
    body = assert_problem(response, 400, "json-too-deep")
    assert f"at most {MAX_JSON_DEPTH}" in body["detail"]
    assert_nothing_stored()


def test_brackets_inside_strings_do_not_count_as_nesting(api, canary):
    deep_text = "[" * 10_000 + '{"' + "\\" + '"'
    response = api.post(URL, {"runs": [run(canary.slug, outputs=[{"conversation_id": "c", "text": deep_text}])]})
    assert response.status_code == 201, response.content
    assert RunOutput.objects.get().data["text"] == deep_text


def test_nesting_at_the_limit_is_accepted(client, api, canary):
    # {"runs": [ {run "outputs": [ {output "x": ...: 5 levels before the value of "x".
    inner = "[" * (MAX_JSON_DEPTH - 5) + "]" * (MAX_JSON_DEPTH - 5)
    body = json.dumps({"runs": [run(canary.slug, outputs=[{"conversation_id": "c", "x": "PLACEHOLDER"}])]})
    response = post_raw(client, api.auth, URL, body.replace('"PLACEHOLDER"', inner))
    assert response.status_code == 201, response.content
    too_deep = body.replace('"PLACEHOLDER"', "[" + inner + "]").replace('"run-', '"other-run-')
    assert_problem(post_raw(client, api.auth, URL, too_deep), 400, "json-too-deep")


@pytest.mark.parametrize(
    ("mutate", "pointer", "fragment"),
    [
        (lambda r: r.update(run_id="a\x00b"), "/runs/0/run_id", "NUL"),
        (lambda r: r.update(harness_version="h\ud800"), "/runs/0/harness_version", "lone surrogate"),
        (lambda r: r.update(outputs=[{"conversation_id": "c\x00"}]), "/runs/0/outputs/0/conversation_id", "NUL"),
        (
            lambda r: r.update(outputs=[{"conversation_id": "\udfff"}]),
            "/runs/0/outputs/0/conversation_id",
            "lone surrogate",
        ),
        (
            lambda r: r.update(outputs=[{"conversation_id": "c", "turns": [{"text": "ok"}, {"text": "x\x00y"}]}]),
            "/runs/0/outputs/0/turns/1/text",
            "NUL",
        ),
        (lambda r: r.update(outputs=[{"conversation_id": "c", "k\x00": 1}]), "/runs/0/outputs/0", "key"),
        (lambda r: r.update({"\ud800": 1}), "/runs/0", "key"),
    ],
)
def test_nul_and_lone_surrogates_anywhere_are_422_naming_the_pointer(client, api, canary, mutate, pointer, fragment):
    item = run(canary.slug)
    mutate(item)
    # json.dumps escapes both (\u0000, \ud800): the bytes on the wire are valid UTF-8 JSON.
    response = post_raw(client, api.auth, URL, json.dumps({"runs": [item]}))
    body = assert_problem(response, 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]
    assert fragment in body["errors"][0]["message"]
    assert_nothing_stored()


def test_a_valid_surrogate_pair_is_an_ordinary_character(client, api, canary):
    item = run(canary.slug, outputs=[{"conversation_id": "c", "text": "\U0001f600"}])
    response = post_raw(client, api.auth, URL, json.dumps({"runs": [item]}))
    assert response.status_code == 201, response.content
    assert RunOutput.objects.get().data["text"] == "\U0001f600"


@pytest.mark.parametrize("field", ["conversations", "guardrail_compensations"])
def test_run_integers_beyond_their_column_are_422(api, canary, field):
    item = run(canary.slug, conversations=INT32_MAX + 1, guardrail_compensations=0)
    item[field] = INT32_MAX + 1
    body = assert_problem(api.post(URL, {"runs": [item]}), 422, "validation-error")
    assert any(e["pointer"] == f"/runs/0/{field}" and str(INT32_MAX) in e["message"] for e in body["errors"]), body[
        "errors"
    ]
    assert_nothing_stored()


def test_run_integers_at_the_column_maximum_are_stored(api, canary):
    response = api.post(URL, {"runs": [run(canary.slug, conversations=INT32_MAX, guardrail_compensations=INT32_MAX)]})
    assert response.status_code == 201, response.content
    assert EvaluationRun.objects.get().conversations == INT32_MAX


def test_sample_requests_beyond_the_column_is_422(api, canary):
    start = timezone.now() - dt.timedelta(hours=1)
    body = assert_problem(api.post(SAMPLES, {"samples": [sample(canary.slug, start, requests=2**31)]}), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/samples/0/requests"]
    ok = api.post(SAMPLES, {"samples": [sample(canary.slug, start, requests=INT32_MAX)]})
    assert ok.status_code == 201, ok.content
    assert MonitoringSample.objects.get().requests == INT32_MAX


@pytest.mark.parametrize("edge", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z"])
def test_datetimes_at_the_edges_are_422_not_overflow(api, canary, edge):
    body = assert_problem(api.post(URL, {"runs": [run(canary.slug, started_at=edge)]}), 422, "validation-error")
    assert any(e["pointer"] == "/runs/0/started_at" and "supported range" in e["message"] for e in body["errors"])
    start = timezone.now() - dt.timedelta(hours=1)
    body = assert_problem(api.post(SAMPLES, {"samples": [sample(canary.slug, start, interval_start=edge)]}), 422)
    assert any(e["pointer"] == "/samples/0/interval_start" for e in body["errors"]), body["errors"]
    assert_nothing_stored()


@pytest.mark.parametrize(
    "path", ["/api/v1/evaluation-runs/a%00b/", "/api/v1/rollouts/a%00b/", "/api/v1/rollouts/a%00b/flags/"]
)
def test_nul_in_an_api_path_is_a_problem_404(api, canary, path):
    assert_problem(api.get(path), 404, "not-found")


@pytest.mark.parametrize("query", ["page=%00", "page=1&x%00=1", "page=abc", "page=", "page=null&page=null", "page=0"])
def test_unreadable_query_parameters_are_400(api, canary, query):
    body = assert_problem(api.get(f"/api/v1/rollouts/?{query}"), 400)
    assert body["code"] == "invalid-parameter"


def test_a_page_past_the_end_is_404_and_page_one_is_200(api, canary):
    assert api.get("/api/v1/rollouts/?page=1").status_code == 200
    assert_problem(api.get("/api/v1/rollouts/?page=2"), 404, "not-found")


def test_an_unhandled_error_is_a_generic_problem_500_logged_with_the_request_id(
    client, api, canary, monkeypatch, error_log
):
    from evaluations import selectors

    def broken(run_id):
        raise RuntimeError("internal detail: password=hunter2")

    monkeypatch.setattr(selectors, "run_detail", broken)
    client.raise_request_exception = False
    response = client.get("/api/v1/evaluation-runs/r-1/", **api.auth)
    body = assert_problem(response, 500, "server-error")
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert request_id in body["detail"]
    assert "hunter2" not in response.content.decode() and "RuntimeError" not in response.content.decode()
    assert error_log and error_log[0].exc_info[0] is RuntimeError
    assert error_log[0].request_id == request_id and request_id in error_log[0].getMessage()


def test_an_error_before_the_view_is_a_problem_500_too(client, api, canary, monkeypatch):
    from governance import middleware

    def broken():
        raise RuntimeError("boom in a middleware")

    monkeypatch.setattr(middleware, "new_request_id", broken)
    client.raise_request_exception = False
    response = client.get("/api/v1/rollouts/", **api.auth)
    body = assert_problem(response, 500, "server-error")
    assert "boom" not in json.dumps(body)
