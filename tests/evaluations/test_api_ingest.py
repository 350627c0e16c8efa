"""The ingestion API: the harness's contract (issue 4)."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.test.client import FakePayload
from django.utils import timezone

from evaluations.models import EvaluationRun, MonitoringSample, RunOutput
from tests.evaluations.conftest import run

URL = "/api/v1/evaluation-runs/"
SAMPLES = "/api/v1/monitoring-samples/"


def assert_problem(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = json.loads(response.content)
    assert body["status"] == status
    assert {"type", "title", "detail", "instance", "errors"} <= set(body)
    assert isinstance(body["errors"], list)
    if code:
        assert body["code"] == code
        assert body["type"] == f"urn:rollout-dashboard:problem:{code}"
    return body


def assert_nothing_stored() -> None:
    assert EvaluationRun.objects.count() == 0
    assert RunOutput.objects.count() == 0
    assert MonitoringSample.objects.count() == 0


def test_ingest_stores_runs_and_outputs(api, canary):
    runs = [
        run(canary.slug, outputs=[{"conversation_id": "c1", "turns": 3}, {"conversation_id": "c2", "voice": True}]),
        run(canary.slug, arm="baseline", cohort="internal", metrics={"cost_per_conversation_usd": 0.05}),
    ]
    response = api.post(URL, {"runs": runs})
    assert response.status_code == 201
    body = json.loads(response.content)
    assert (body["created"], body["duplicates"]) == (2, 0)
    assert body["created_ids"] == [runs[0]["run_id"], runs[1]["run_id"]]
    stored = EvaluationRun.objects.get(run_id=runs[0]["run_id"])
    assert (stored.phase.kind, stored.arm, stored.output_count, stored.task_success_rate) == (
        "canary",
        "candidate",
        2,
        0.9,
    )
    assert stored.cost_per_conversation_usd is None
    assert list(stored.outputs.values_list("conversation_id", "data", "run_finished_at")) == [
        ("c1", {"turns": 3}, stored.finished_at),
        ("c2", {"voice": True}, stored.finished_at),
    ]
    assert EvaluationRun.objects.get(run_id=runs[1]["run_id"]).cohort.kind == "internal"


def test_same_run_again_is_a_duplicate_and_changes_nothing(api, canary):
    body = {"runs": [run(canary.slug, outputs=[{"conversation_id": "c1"}])]}
    assert api.post(URL, body).status_code == 201
    before = list(EvaluationRun.objects.values())
    again = api.post(URL, body)
    assert again.status_code == 201
    assert (again.json()["created"], again.json()["duplicates"]) == (0, 1)
    assert list(EvaluationRun.objects.values()) == before
    assert RunOutput.objects.count() == 1


def test_equal_content_in_another_spelling_is_still_a_duplicate(api, canary):
    first = run(canary.slug)
    assert api.post(URL, {"runs": [first]}).status_code == 201
    respelt = {
        **first,
        "finished_at": dt.datetime.fromisoformat(first["finished_at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    response = api.post(URL, {"runs": [respelt]})
    assert response.json()["duplicates"] == 1


def test_same_run_id_with_other_content_is_409_and_nothing_of_the_batch_is_stored(api, canary):
    first = run(canary.slug)
    assert api.post(URL, {"runs": [first]}).status_code == 201
    fresh = run(canary.slug)
    changed = {**first, "conversations": 101}
    body = assert_problem(api.post(URL, {"runs": [fresh, changed]}), 409, "run-conflict")
    assert body["errors"] == [
        {"pointer": "/runs/1/run_id", "message": f"{first['run_id']!r} was already ingested with other content."}
    ]
    assert not EvaluationRun.objects.filter(run_id=fresh["run_id"]).exists()


def test_conflict_inside_one_request_is_409(api, canary):
    first = run(canary.slug)
    body = assert_problem(api.post(URL, {"runs": [first, {**first, "guardrail_compensations": 3}]}), 409)
    assert body["errors"][0]["pointer"] == "/runs/1/run_id"
    assert_nothing_stored()


def test_malformed_json_is_400(api, canary):
    body = assert_problem(
        api.post(
            URL,
            '{"runs": [',
        ),
        400,
        "malformed-json",
    )
    assert "JSON" in body["detail"]
    assert_nothing_stored()


def test_not_json_is_415(api, canary, client):
    response = client.post(URL, "runs=1", content_type="application/x-www-form-urlencoded", **api.auth)
    assert_problem(response, 415, "unsupported-media-type")
    assert_nothing_stored()


def test_missing_token_is_401_with_challenge(client, canary):
    response = client.post(URL, {"runs": [run(canary.slug)]}, content_type="application/json")
    assert_problem(response, 401, "not-authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("header", "code"),
    [("Bearer rgd_not-a-real-token", "invalid-token"), ("Token abc", "invalid-token"), ("Bearer", "invalid-token")],
)
def test_bad_token_is_401(client, canary, header, code):
    response = client.post(
        URL, {"runs": [run(canary.slug)]}, content_type="application/json", HTTP_AUTHORIZATION=header
    )
    assert_problem(response, 401, code)
    assert_nothing_stored()


def test_expired_and_revoked_tokens_are_401(client, canary, token):
    from evaluations.models import ApiToken
    from evaluations.services import api_token_revoke, hash_token

    expired, revoked = token("ingest"), token("ingest")
    ApiToken.objects.filter(token_hash=hash_token(expired)).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    api_token_revoke(token=ApiToken.objects.get(token_hash=hash_token(revoked)), actor=None)
    for raw, code in ((expired, "token-expired"), (revoked, "token-revoked")):
        response = client.post(
            URL, {"runs": [run(canary.slug)]}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
        )
        assert_problem(response, 401, code)
    assert_nothing_stored()


def test_wrong_scope_is_403(client, canary, token):
    read_only = token("read")
    response = client.post(
        URL, {"runs": [run(canary.slug)]}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {read_only}"
    )
    body = assert_problem(response, 403, "insufficient-scope")
    assert "ingest" in body["detail"]
    ingest_only = token("ingest")
    response = client.get("/api/v1/rollouts/", HTTP_AUTHORIZATION=f"Bearer {ingest_only}")
    assert_problem(response, 403, "insufficient-scope")
    assert_nothing_stored()


def test_body_over_the_limit_is_413(api, canary, settings):
    settings.API_MAX_BODY_BYTES = 2000
    runs = [run(canary.slug, outputs=[{"conversation_id": f"c{i}", "text": "x" * 50} for i in range(40)])]
    body = assert_problem(api.post(URL, {"runs": runs}), 413, "body-too-large")
    assert "2000 bytes" in body["detail"]
    assert_nothing_stored()


def _chunked(client_handler, body: bytes, auth: dict, terminated: bool = True):
    """A chunked request as a de-chunking WSGI server (gunicorn) hands it over: no Content-Length."""
    from django.test.client import RequestFactory

    environ = RequestFactory()._base_environ(
        PATH_INFO=URL,
        REQUEST_METHOD="POST",
        CONTENT_TYPE="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        **auth,
    )
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["wsgi.input_terminated"] = terminated
    return client_handler(environ)


def test_chunked_body_over_the_limit_is_413(api, canary, settings, client):
    settings.API_MAX_BODY_BYTES = 2000
    payload = json.dumps({"runs": [run(canary.slug, outputs=[{"conversation_id": f"c{i}"} for i in range(200)])]})
    assert len(payload) > 2000
    response = _chunked(client.handler, payload.encode(), api.auth)
    assert_problem(response, 413, "body-too-large")
    assert_nothing_stored()


def test_chunked_body_under_the_limit_is_read(api, canary, client):
    payload = json.dumps({"runs": [run(canary.slug)]}).encode()
    response = _chunked(client.handler, payload, api.auth)
    assert response.status_code == 201, response.content
    assert EvaluationRun.objects.count() == 1


def _outputs_of(total_bytes: int) -> list[dict]:
    per_output = total_bytes // 1000
    return [{"conversation_id": f"c{i}", "text": "x" * per_output} for i in range(1000)]


def test_body_over_djangos_form_limit_but_under_the_api_limit_is_stored(api, canary, settings):
    # Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB) used to answer these with a 500.
    payload = json.dumps({"runs": [run(canary.slug, outputs=_outputs_of(3 * 1024 * 1024))]})
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < len(payload) < settings.API_MAX_BODY_BYTES
    response = api.post(URL, payload)
    assert response.status_code == 201, response.content[:500]
    assert RunOutput.objects.count() == 1000


def test_api_limit_alone_decides_sized_bodies(api, canary, settings):
    settings.API_MAX_BODY_BYTES = 3 * 1024 * 1024
    payload = json.dumps({"runs": [run(canary.slug, outputs=_outputs_of(3 * 1024 * 1024 + 10_000))]})
    assert len(payload) > settings.API_MAX_BODY_BYTES
    body = assert_problem(api.post(URL, payload), 413, "body-too-large")
    assert body["detail"] == f"Bodies are limited to {3 * 1024 * 1024} bytes; send fewer runs per request."
    assert_nothing_stored()


def test_chunked_body_over_djangos_form_limit_is_stored(api, canary, client, settings):
    payload = json.dumps({"runs": [run(canary.slug, outputs=_outputs_of(3 * 1024 * 1024))]}).encode()
    assert len(payload) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = _chunked(client.handler, payload, api.auth)
    assert response.status_code == 201, response.content[:500]
    assert RunOutput.objects.count() == 1000


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        self.bytes_read += len(piece)
        return piece


def test_chunked_body_far_over_the_limit_is_read_no_further_than_the_limit(api, canary, client, settings):
    settings.API_MAX_BODY_BYTES = 100_000
    stream = _CountingStream(b"[" + b"1," * 5_000_000 + b"1]")
    from django.test.client import RequestFactory

    environ = RequestFactory()._base_environ(
        PATH_INFO=URL,
        REQUEST_METHOD="POST",
        CONTENT_TYPE="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        **api.auth,
    )
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = stream
    environ["wsgi.input_terminated"] = True
    assert_problem(client.handler(environ), 413, "body-too-large")
    assert stream.bytes_read == 100_001


def test_chunked_body_on_a_server_that_cannot_end_it_is_411(api, canary, client):
    response = _chunked(client.handler, b'{"runs": []}', api.auth, terminated=False)
    assert_problem(response, 411, "length-required")


@pytest.mark.parametrize(
    ("change", "pointer", "fragment"),
    [
        (
            {"metrics": {"task_success_rate": 0.9, "bogus_metric": 1.0}},
            "/runs/0/metrics/bogus_metric",
            "Unknown metric",
        ),
        ({"guardrail_compensations": 101}, "/runs/0/guardrail_compensations", "Cannot exceed conversations"),
        ({"conversations": 0}, "/runs/0/conversations", "greater than or equal to 1"),
        ({"phase": "staging"}, "/runs/0/phase", "not a valid choice"),
        ({"metrics": {"task_success_rate": 1.5}}, "/runs/0/metrics/task_success_rate", "less than or equal to 1"),
        ({"metrics": {"latency_p95_ms": "fast"}}, "/runs/0/metrics/latency_p95_ms", "A number is required"),
        ({"metrics": {"latency_p95_ms": 10**400}}, "/runs/0/metrics/latency_p95_ms", "must be finite"),
        ({"conversations": True}, "/runs/0/conversations", "An integer is required"),
        ({"started_at": "2026-01-01T00:00:00"}, "/runs/0/started_at", "UTC offset"),
        ({"run_id": "has spaces/and slashes"}, "/runs/0/run_id", "does not match"),
        ({"colour": "blue"}, "/runs/0/colour", "Unknown field"),
        ({"outputs": [{"conversation_id": "a"}, {"conversation_id": "a"}]}, "/runs/0/outputs", "appears twice"),
        ({"outputs": [{"text": "no id"}]}, "/runs/0/outputs/0", "conversation_id"),
    ],
)
def test_validation_errors_are_422_with_a_pointer_per_field(api, canary, change, pointer, fragment):
    good = run(canary.slug)
    response = api.post(URL, {"runs": [{**good, **change}]})
    body = assert_problem(response, 422, "validation-error")
    assert any(e["pointer"] == pointer and fragment in e["message"] for e in body["errors"]), body["errors"]
    assert_nothing_stored()


def test_a_run_for_an_unknown_rollout_is_404(api, canary):
    """Finding 10: well-formed data about what is not there gets the status the schema documents for it."""
    response = api.post(URL, {"runs": [{**run(canary.slug), "rollout": "no-such-rollout"}]})
    body = assert_problem(response, 404, "not-found")
    assert body["errors"] == [{"pointer": "/runs/0/rollout", "message": "Unknown rollout 'no-such-rollout'."}]
    assert_nothing_stored()


def _utc(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def test_a_run_for_a_phase_never_entered_is_422_at_finished_at(api, canary):
    """Issue 9, seam 1: a phase that has not been active takes no runs; 422 (not 409) naming finished_at."""
    good = run(canary.slug, phase="limited_beta")
    body = assert_problem(api.post(URL, {"runs": [good]}), 422, "outside-phase")
    finished = dt.datetime.fromisoformat(good["finished_at"])
    assert body["errors"] == [
        {
            "pointer": "/runs/0/finished_at",
            "message": f"finished_at {_utc(finished)} is outside the phase's activity. "
            "The Limited beta phase has not been active yet.",
        }
    ]
    assert_nothing_stored()


def test_a_run_that_finished_before_its_phase_was_entered_is_422_and_says_when_it_was_active(api, canary):
    """Issue 9, seam 1: a canary run that finished before the canary began was stored (201) and silently ignored
    by the trigger; now it is refused with a pointer at finished_at and the phase's activity in words."""
    entered = canary.phases.get(kind="canary").entered_at
    early = entered - dt.timedelta(hours=2)
    runs = [run(canary.slug), run(canary.slug, guardrail_compensations=6, finished=early)]
    body = assert_problem(api.post(URL, {"runs": runs}), 422, "outside-phase")
    assert body["errors"] == [
        {
            "pointer": "/runs/1/finished_at",
            "message": f"finished_at {_utc(early)} is outside the phase's activity. "
            f"The Canary (internal QA) phase was active from {_utc(entered)} (still active).",
        }
    ]
    assert_nothing_stored()
    # The same moment is inside the preparation phase's period: there it is accepted.
    prep = run(canary.slug, phase="preparation", finished=early)
    assert api.post(URL, {"runs": [prep]}).status_code == 201


def test_a_run_with_a_cohort_the_phase_does_not_expose_is_422_at_cohort(api, canary):
    """Issue 9, seam 1: a canary run tagged ``beta`` was accepted; the canary exposes the internal cohort only."""
    body = assert_problem(
        api.post(URL, {"runs": [run(canary.slug, cohort="internal"), run(canary.slug, cohort="beta")]}),
        422,
        "outside-phase",
    )
    assert body["errors"] == [
        {
            "pointer": "/runs/1/cohort",
            "message": "The Canary (internal QA) phase does not expose the beta cohort; it exposes internal.",
        }
    ]
    assert_nothing_stored()
    assert api.post(URL, {"runs": [run(canary.slug, cohort="internal")]}).status_code == 201


def test_a_sample_that_ended_outside_its_phase_is_422_at_interval_end(api, canary):
    entered = canary.phases.get(kind="canary").entered_at
    early = entered - dt.timedelta(minutes=30)
    body = assert_problem(api.post(SAMPLES, {"samples": [sample(canary.slug, early)]}), 422, "outside-phase")
    end = early + dt.timedelta(minutes=5)
    assert body["errors"] == [
        {
            "pointer": "/samples/0/interval_end",
            "message": f"interval_end {_utc(end)} is outside the phase's activity. "
            f"The Canary (internal QA) phase was active from {_utc(entered)} (still active).",
        }
    ]
    never = assert_problem(
        api.post(
            SAMPLES,
            {"samples": [sample(canary.slug, timezone.now() - dt.timedelta(hours=1), phase="general_availability")]},
        ),
        422,
        "outside-phase",
    )
    assert never["errors"][0]["pointer"] == "/samples/0/interval_end"
    assert never["errors"][0]["message"].endswith("The General availability phase has not been active yet.")
    assert_nothing_stored()


def test_finished_before_started_is_422(api, canary):
    good = run(canary.slug)
    bad = {**good, "started_at": good["finished_at"], "finished_at": good["started_at"]}
    body = assert_problem(api.post(URL, {"runs": [run(canary.slug), bad]}), 422)
    assert body["errors"] == [{"pointer": "/runs/1/finished_at", "message": "A run cannot finish before it started."}]
    assert_nothing_stored()


def test_one_bad_run_stores_none_of_the_batch(api, canary):
    runs = [run(canary.slug) for _ in range(5)] + [run(canary.slug, guardrail_compensations=500)]
    body = assert_problem(api.post(URL, {"runs": runs}), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/runs/5/guardrail_compensations"]
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [({"runs": []}, "/runs"), ({}, "/runs"), ([], ""), ({"runs": [1]}, "/runs/0"), ({"runs": "x"}, "/runs")],
)
def test_batch_shape_errors_are_422(api, canary, payload, pointer):
    body = assert_problem(api.post(URL, payload), 422)
    assert body["errors"][0]["pointer"] == pointer


def test_more_than_500_runs_is_422(api, canary):
    body = assert_problem(api.post(URL, {"runs": [run(canary.slug) for _ in range(501)]}), 422)
    assert body["errors"][0]["pointer"] == "/runs"
    assert_nothing_stored()


def test_ingest_sends_the_signal_on_commit(api, canary, django_capture_on_commit_callbacks):
    from evaluations.signals import runs_ingested

    seen = []

    def listener(sender, **kwargs):
        seen.append(kwargs)

    runs_ingested.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            api.post(URL, {"runs": [run(canary.slug, outputs=[{"conversation_id": "c", "tokens": 5, "voice": {}}])]})
    finally:
        runs_ingested.disconnect(listener)
    assert len(seen) == 1
    assert seen[0]["rollout_id"] == canary.pk
    assert seen[0]["run_ids"] == list(EvaluationRun.objects.values_list("pk", flat=True))
    assert seen[0]["telemetry_fields"] == ["tokens", "voice"]
    assert seen[0]["actor"].kind == "token"


def sample(slug: str, start: dt.datetime, minutes: int = 5, latency: float = 1200.0, **overrides) -> dict:
    return {
        "rollout": slug,
        "phase": "canary",
        "interval_start": start.isoformat(),
        "interval_end": (start + dt.timedelta(minutes=minutes)).isoformat(),
        "latency_p95_ms": latency,
        "requests": 500,
        **overrides,
    }


def test_monitoring_samples_ingest_idempotent_and_conflicting(api, canary):
    start = timezone.now() - dt.timedelta(hours=1)
    body = {"samples": [sample(canary.slug, start), sample(canary.slug, start + dt.timedelta(minutes=5))]}
    first = api.post(SAMPLES, body)
    assert first.status_code == 201 and first.json()["created"] == 2
    again = api.post(SAMPLES, body)
    assert (again.json()["created"], again.json()["duplicates"]) == (0, 2)
    conflict = api.post(SAMPLES, {"samples": [sample(canary.slug, start, latency=9999.0)]})
    assert_problem(conflict, 409, "sample-conflict")
    bad = api.post(SAMPLES, {"samples": [sample(canary.slug, start, minutes=0)]})
    assert assert_problem(bad, 422)["errors"][0]["pointer"] == "/samples/0/interval_end"
    assert MonitoringSample.objects.count() == 2


def test_unknown_api_path_is_a_problem_not_html(api):
    assert_problem(api.get("/api/v1/nope/"), 404, "not-found")


def test_a_token_never_authenticates_the_pages(client, canary, token):
    raw = token("ingest", "read")
    for path in ("/", f"/rollouts/{canary.slug}/", f"/rollouts/{canary.slug}/deltas/", "/evaluations/"):
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 302, path
        assert response["Location"].startswith("/login/")


def test_unexpected_error_is_a_500_problem_and_nothing_stored(api, canary, monkeypatch):
    from evaluations import services

    def boom(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "_store_runs", lambda *a, **k: boom())
    from django.test import Client

    response = Client(raise_request_exception=False).post(
        URL, {"runs": [run(canary.slug)]}, content_type="application/json", **api.auth
    )
    body = assert_problem(response, 500, "server-error")
    assert "disk on fire" not in json.dumps(body)
    assert_nothing_stored()


def test_fake_payload_helper_is_not_needed():
    # The chunked tests build their own WSGI environ; FakePayload stays importable for other suites.
    assert FakePayload(b"x").read() == b"x"


def test_the_api_needs_no_csrf_token_and_a_session_does_not_authenticate_it(canary, api, users):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(URL, {"runs": [run(canary.slug)]}, content_type="application/json", **api.auth)
    assert response.status_code == 201
    strict.force_login(users["rollout-admin"])
    assert_problem(strict.get("/api/v1/rollouts/"), 401, "not-authenticated")


def test_the_ledger_entry_of_an_ingest_commits_with_its_runs(api, canary, django_capture_on_commit_callbacks):
    """Written in the ingest's transaction, not on commit: a process killed between the commit and its on-commit
    callbacks (none of them runs here) still leaves exactly one entry per ingest and rollout."""
    from governance.models import AuditEvent

    start = timezone.now() - dt.timedelta(minutes=20)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert api.post(URL, {"runs": [run(canary.slug), run(canary.slug)]}).status_code == 201
        assert api.post(SAMPLES, {"samples": [sample(canary.slug, start)]}).status_code == 201
    assert len(callbacks) == 4  # per ingest: the runs_ingested/samples_ingested signal and the outbox publish
    entries = AuditEvent.objects.filter(action__endswith="_ingested").order_by("sequence")
    assert [(e.action, e.after["count"], e.actor_kind, e.rollout_id) for e in entries] == [
        ("evaluations.runs_ingested", 2, "token", canary.pk),
        ("evaluations.samples_ingested", 1, "token", canary.pk),
    ]


def test_each_ingest_is_one_ledger_entry_by_the_token(api, canary, django_capture_on_commit_callbacks):
    from governance.models import AuditEvent

    before = AuditEvent.objects.count()
    start = timezone.now() - dt.timedelta(minutes=20)
    with django_capture_on_commit_callbacks(execute=True):
        api.post(URL, {"runs": [run(canary.slug), run(canary.slug)]})
        api.post("/api/v1/monitoring-samples/", {"samples": [sample(canary.slug, start)]})
    entries = list(AuditEvent.objects.filter(sequence__gt=before, action__endswith="_ingested").order_by("sequence"))
    assert [(e.action, e.object_repr, e.actor_kind, e.rollout_id) for e in entries] == [
        ("evaluations.runs_ingested", "2 evaluation runs", "token", canary.pk),
        ("evaluations.samples_ingested", "1 monitoring sample", "token", canary.pk),
    ]
    assert entries[0].after["count"] == 2
    assert entries[0].actor_name.startswith("t")
