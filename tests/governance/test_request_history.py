"""A transition request's "history in the audit ledger" link shows the request's entries and its approvals'.

Found by the journeys: the link filtered on the request object only, so the leads' decisions (entries of
``governance.transitionapproval`` objects) were missing from the history of the request they decided.
"""

from __future__ import annotations

import html as html_lib
import io
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command
from django.http import StreamingHttpResponse

from governance.models import AuditEvent
from rollout.roles import Role

from .helpers import approve

pytestmark = pytest.mark.django_db


def _history_link(client, request) -> str:
    page = client.get(request.get_absolute_url()).content.decode()
    match = re.search(r'<a href="([^"]+)" data-link="object-history">', page)
    assert match, "no history link on the request page"
    return html_lib.unescape(match.group(1))


def _sequences(page: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tbody class="audit-entry" data-sequence="(\d+)"', page)]


def test_the_history_of_a_request_holds_its_approvals_decisions(canary_request, users, client_for):
    request = approve(canary_request, users)
    approvals = list(request.approvals.order_by("pk"))
    assert len(approvals) == 2
    client = client_for(Role.AUDITOR)
    link = _history_link(client, request)
    assert parse_qs(urlsplit(link).query) == {"history_of": [f"governance.transitionrequest:{request.pk}"]}
    page = client.get(link).content.decode()
    expected = AuditEvent.objects.filter(
        object_type="governance.transitionrequest", object_id=str(request.pk)
    ) | AuditEvent.objects.filter(
        object_type="governance.transitionapproval", object_id__in=[str(a.pk) for a in approvals]
    )
    actions = sorted(expected.values_list("action", flat=True))
    assert actions == ["transition.approve", "transition.approve", "transition.approved", "transition.request"]
    assert _sequences(page) == sorted(expected.values_list("sequence", flat=True), reverse=True)
    assert "History of request #" in page and "with its 2 decisions" in page


def test_an_export_of_a_request_history_verifies_without_flags(canary_request, users, client_for, tmp_path):
    request = approve(canary_request, users)
    client = client_for(Role.AUDITOR)
    response = client.post(
        "/audit/export/", {"format": "jsonl", "history_of": f"governance.transitionrequest:{request.pk}"}
    )
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    path = tmp_path / "request.jsonl"
    path.write_text(text, encoding="utf-8")
    out = io.StringIO()
    call_command("verify_audit_log", file=str(path), stdout=out)
    assert out.getvalue().startswith("Audit ledger intact: 4 entries")
    # An entry of another object edited into the file is caught: it is outside what the export covers.
    other = AuditEvent.objects.exclude(object_type__startswith="governance.transition").order_by("sequence").first()
    from governance import ledger

    lines = text.splitlines(keepends=True)
    lines.insert(1, ledger.canonical_json(ledger.record_of(other)) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(Exception, match="outside the export's manifest"):
        call_command("verify_audit_log", file=str(path), stdout=io.StringIO())


def test_an_unknown_history_object_is_a_form_error(client_for):
    response = client_for(Role.AUDITOR).get("/audit/", {"history_of": "rollout.nothing:1"})
    assert response.status_code == 400
    assert "History of: give an object as type:id" in response.content.decode()
