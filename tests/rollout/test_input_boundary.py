"""Issue 8, findings 4 and 10 on the pages: crafted form fields, query parameters and paths never give a 500;
read-only pages refuse POST; an unhandled error shows the 500 page with the request id."""

from __future__ import annotations

import datetime as dt

import pytest

from rollout import inputs
from rollout.models import Rollout
from rollout.roles import Role
from rollout.routes import routes


@pytest.mark.parametrize(
    ("raw", "depth"),
    [(b"{}", 1), (b"[[1], {}]", 2), (b'{"a": "[[[[{{{{"}', 1), (b'["\\"[["]', 1), (b"3", 0), (b"[" * 9 + b"]" * 9, 9)],
)
def test_json_depth_is_read_from_the_raw_bytes(raw, depth):
    assert inputs.json_depth(raw) == depth


@pytest.mark.parametrize(
    ("value", "problem"),
    [("fine", None), ("a\x00b", "NUL"), ("\ud800", "lone surrogate"), ("\U0001f600", None)],
)
def test_text_problem(value, problem):
    found = inputs.text_problem(value)
    assert (found is None) if problem is None else (problem in found)


def test_datetime_range_edges():
    assert inputs.datetime_problem(inputs.MIN_DATETIME) is None
    assert inputs.datetime_problem(inputs.MAX_DATETIME) is None
    assert inputs.datetime_problem(inputs.MIN_DATETIME - dt.timedelta(microseconds=1))
    assert inputs.datetime_problem(dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14))))
    assert inputs.datetime_problem(dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-14))))


def test_no_url_pattern_uses_a_converter_that_lets_a_nul_through():
    loose = [route for route, _name, _p in routes() if "<str:" in route or "<path:" in route]
    # The admin's own patterns are Django's (their lookups are by integer pk or a checked app label).
    assert [r for r in loose if not r.startswith("admin/")] == []


@pytest.fixture
def admin_client(client, users):
    client.force_login(users[Role.ROLLOUT_ADMIN])
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/rollouts/{slug}/runs/a%00b/",
        "/rollouts/{slug}/phases/can%00ary/",
        "/rollouts/{slug}/cohorts/99999999999999999999/",
        "/rollouts/{slug}/transitions/9223372036854775808/",
    ],
)
def test_nul_or_an_integer_beyond_any_column_in_a_page_path_is_404(admin_client, rollout, path):
    assert admin_client.get(path.format(slug=rollout.slug)).status_code == 404


@pytest.mark.parametrize("until", ["9999-12-31", "0001-01-01"])
def test_run_filters_out_of_range_are_reported_not_500(admin_client, rollout, until):
    response = admin_client.get(f"/rollouts/{rollout.slug}/runs/", {"until": until})
    assert response.status_code == 200
    assert "Some filters were ignored" in response.content.decode()
    assert "supported range" in response.content.decode()


@pytest.mark.parametrize(
    "query",
    [
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"since": "0001-01-01"},
        {"until": "9999-12-31"},
    ],
)
def test_audit_filters_out_of_range_are_400_with_the_reason(client, users, query):
    client.force_login(users[Role.AUDITOR])
    response = client.get("/audit/", query)
    assert response.status_code == 400
    assert "supported range" in response.content.decode()


@pytest.mark.parametrize("query", ["actor=a%00b", "rollout=%00", "a%00=1", "since=2025-01-01%00"])
def test_nul_in_any_query_parameter_is_the_400_page(client, users, query):
    client.force_login(users[Role.AUDITOR])
    response = client.get(f"/audit/?{query}")
    assert response.status_code == 400
    assert "NUL" in response.content.decode()


def test_nul_in_a_form_field_is_400_and_creates_nothing(admin_client, tenants):
    response = admin_client.post("/rollouts/new/", {"name": "Evil\x00 rollout"})
    assert response.status_code == 400
    assert "name" in response.content.decode()
    assert not Rollout.objects.exists()


def test_a_plan_date_out_of_range_is_a_form_error(admin_client, tenants):
    response = admin_client.post("/rollouts/new/", {"name": "Far future", "start_date": "9999-12-31"})
    assert response.status_code == 200
    assert "supported range" in response.content.decode()
    assert not Rollout.objects.exists()


READ_ONLY = [
    "/",
    "/audit/",
    "/tenants/",
    "/evaluations/",
    "/compliance/jobs/",
    "/compliance/records/",
    "/compliance/reviews/",
    "/rollouts/{slug}/",
    "/rollouts/{slug}/status/",
    "/rollouts/{slug}/communications/",
    "/rollouts/{slug}/deltas/",
    "/rollouts/{slug}/runs/",
    "/rollouts/{slug}/transitions/",
    "/rollouts/{slug}/delta-reports/",
]


@pytest.mark.parametrize("path", READ_ONLY)
def test_post_to_a_read_only_page_is_405(client, users, rollout, path):
    superuser = users[Role.ROLLOUT_ADMIN]
    superuser.is_superuser = True
    superuser.save()
    client.force_login(superuser)
    url = path.format(slug=rollout.slug)
    assert client.get(url).status_code == 200
    response = client.post(url, {})
    assert response.status_code == 405
    assert set(response["Allow"].split(", ")) == {"GET", "HEAD"}


def test_an_unhandled_page_error_is_the_500_page_with_the_request_id(admin_client, rollout, monkeypatch, error_log):
    from rollout import selectors

    def broken(slug):
        raise RuntimeError("internal detail: password=hunter2")

    monkeypatch.setattr(selectors, "rollout_detail", broken)
    admin_client.raise_request_exception = False
    response = admin_client.get(f"/rollouts/{rollout.slug}/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    request_id = response["X-Request-ID"]
    assert request_id in html and "Something went wrong on our side" in html
    assert "hunter2" not in html and "Traceback" not in html
    assert error_log and error_log[0].exc_info[0] is RuntimeError
    assert error_log[0].request_id == request_id
