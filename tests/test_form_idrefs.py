"""Every aria-describedby (and label ``for``) on the form pages names an element of the page: help texts and errors
carry the ids Django's widgets point at (partials/form_fields.html, partials/field_help.html). Issue 9: the plan's
fields, the audit filters, the kill-switch and legal-hold reasons pointed at missing ids."""

from __future__ import annotations

import re

import pytest

from rollout.roles import Role

IDREF = re.compile(r'\b(aria-describedby|aria-labelledby|aria-controls|for)="([^"]+)"')
ID = re.compile(r'\bid="([^"]+)"')


def missing_ids(html: str) -> list[str]:
    ids = set(ID.findall(html))
    return [f'{attr}="{ref}"' for attr, refs in IDREF.findall(html) for ref in refs.split() if ref not in ids]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "path", "method", "data", "status", "describedby"),
    [
        (Role.ROLLOUT_ADMIN, "/rollouts/{slug}/plan/", "get", None, 200, 7),
        (Role.ROLLOUT_ADMIN, "/rollouts/{slug}/plan/", "post", {"latency_sla_ms": "-1"}, 200, 7),
        (Role.ROLLOUT_ADMIN, "/rollouts/{slug}/kill-switch/", "get", None, 200, 1),
        (Role.ROLLOUT_ADMIN, "/rollouts/{slug}/kill-switch/", "post", {"on": "on"}, 200, 1),
        (Role.ROLLOUT_ADMIN, "/rollouts/{slug}/transitions/new/", "get", None, 200, 1),
        (Role.AUDITOR, "/audit/", "get", None, 200, 4),
        (Role.AUDITOR, "/audit/?since=yesterday&object_id=3", "get", None, 400, 4),
        (Role.COMPLIANCE_REVIEWER, "/compliance/retention/", "get", None, 200, 1),
        (Role.COMPLIANCE_REVIEWER, "/compliance/retention/", "post", {"reason": ""}, 400, 1),
    ],
)
def test_described_by_names_an_element_of_the_page(client_for, rollout, role, path, method, data, status, describedby):
    client = client_for(role)
    url = path.format(slug=rollout.slug)
    response = client.post(url, data) if method == "post" else client.get(url)
    assert response.status_code == status
    html = response.content.decode()
    assert html.count("aria-describedby=") >= describedby
    assert missing_ids(html) == []


def test_the_check_finds_a_dangling_reference():
    html = '<input id="id_a" aria-describedby="id_a_helptext id_a_error"><div id="id_a_helptext"></div>'
    assert missing_ids(html) == ['aria-describedby="id_a_error"']
