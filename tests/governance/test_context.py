"""The request middleware: a fresh request id per request, echoed, and no actor left behind."""

from __future__ import annotations

import pytest

from rollout.context import current_actor, current_request_id
from rollout.roles import Role

pytestmark = pytest.mark.django_db


def test_each_request_gets_its_own_id_and_the_context_is_reset(client_for):
    client = client_for(Role.AUDITOR)
    first = client.get("/", HTTP_X_REQUEST_ID="chosen-by-the-client")
    second = client.get("/")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != "chosen-by-the-client"
    assert first["X-Request-ID"] != second["X-Request-ID"]
    assert current_actor() is None and current_request_id() == ""


def test_anonymous_requests_get_an_id_too(client):
    response = client.get("/login/")
    assert response.status_code == 200 and len(response["X-Request-ID"]) == 32
