"""Governance pages: who sees which button, 403 for the rest, messages for refused rules, query counts."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from governance import ledger, services
from governance.models import AuditEvent, Decision, PlanSignOff, TransitionRequest
from governance.selectors import plan_hash, transition_view
from rollout import services as rollout_services
from rollout.roles import Role
from tests.conftest import make_user
from tests.factories import complete_readiness

from .helpers import approve, sign_all

pytestmark = pytest.mark.django_db

ADMIN = Role.ROLLOUT_ADMIN


def messages_of(response) -> list[str]:
    """Messages of this response (the test client does not follow redirects, so earlier ones linger)."""
    return [str(m) for m in get_messages(response.wsgi_request)][-1:]


def top() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


# --- Visibility -------------------------------------------------------------------------------------------------


def test_the_rollout_page_shows_each_role_its_own_actions(rollout, client_for):
    url = f"/rollouts/{rollout.slug}/"
    page = client_for(ADMIN).get(url).content.decode()
    assert 'data-action="request-transition"' in page
    assert 'data-action="edit-approvers"' in page
    assert 'data-form="sign-off"' not in page
    assert 'data-nav="audit"' not in page and 'data-link="rollout-history"' not in page

    page = client_for(Role.PRODUCT_LEAD).get(url).content.decode()
    assert 'data-form="sign-off"' in page and "Deciding as <strong>Product lead</strong>" in page
    assert 'data-action="request-transition"' not in page and 'data-action="edit-approvers"' not in page
    assert 'data-nav="audit"' in page and 'data-link="rollout-history"' in page

    page = client_for(Role.AUDITOR).get(url).content.decode()
    for marker in ('data-form="sign-off"', 'data-action="request-transition"', 'data-action="edit-approvers"'):
        assert marker not in page
    assert 'data-link="rollout-history"' in page


def test_the_rollout_page_shows_sign_offs_and_gates(ready_rollout, client_for, users):
    rollout_services.rollout_update_plan(
        rollout=ready_rollout, actor=users[ADMIN], reason="Longer soak", canary_soak_hours=72
    )
    services.plan_sign_off(
        rollout=ready_rollout, role=Role.SRE_LEAD, decision=Decision.APPROVE, comment="", actor=users["sre-lead"]
    )
    page = client_for(Role.AUDITOR).get(f"/rollouts/{ready_rollout.slug}/").content.decode()
    assert 'data-testid="signoff-count">1/4<' in page
    assert page.count("data-superseded=") == 4
    assert 'data-gate="sign_off" data-state="fail"' in page
    assert "plan signed 1/4" in page
    assert 'data-gate="readiness" data-state="pass"' in page and "readiness 12/12" in page


def test_the_request_page_shows_gates_approvals_and_the_right_buttons(canary_request, client_for, users):
    url = canary_request.get_absolute_url()
    page = client_for(Role.PRODUCT_LEAD).get(url).content.decode()
    assert 'data-form="decide"' in page
    assert 'data-role="product-lead" data-decision="waiting"' in page
    assert 'data-gate="sign_off" data-state="pass"' in page
    page = client_for(Role.SUPPORT_LEAD).get(url).content.decode()  # not an approving role for canary
    assert 'data-form="decide"' not in page
    page = client_for(ADMIN).get(url).content.decode()
    assert 'data-form="decide"' not in page
    assert 'data-action="withdraw"' in page and 'data-action="apply"' not in page
    approve(canary_request, users)
    page = client_for(ADMIN).get(url).content.decode()
    assert 'data-action="apply"' in page
    page = client_for(Role.SRE_LEAD).get(url).content.decode()
    assert 'data-form="decide"' not in page and 'data-action="apply"' not in page
    assert 'data-role="sre-lead" data-decision="approve"' in page


def test_the_requester_holding_a_role_gets_no_decision_form(ready_rollout, client):
    both = make_user("admin-product", ADMIN, Role.PRODUCT_LEAD)
    req = services.transition_request_create(rollout=ready_rollout, justification="x", actor=both)
    client.force_login(both)
    assert 'data-form="decide"' not in client.get(req.get_absolute_url()).content.decode()


# --- 403 for the actions a role may not take -------------------------------------------------------------------

FORBIDDEN = [
    ("post", "/rollouts/{slug}/sign-off/", ADMIN),
    ("post", "/rollouts/{slug}/sign-off/", Role.AUDITOR),
    ("get", "/rollouts/{slug}/transitions/new/", Role.PRODUCT_LEAD),
    ("post", "/rollouts/{slug}/transitions/new/", Role.AUDITOR),
    ("post", "/rollouts/{slug}/transitions/{pk}/decide/", ADMIN),
    ("post", "/rollouts/{slug}/transitions/{pk}/decide/", Role.COMPLIANCE_REVIEWER),
    ("get", "/rollouts/{slug}/transitions/{pk}/apply/", Role.PRODUCT_LEAD),
    ("post", "/rollouts/{slug}/transitions/{pk}/apply/", Role.AUDITOR),
    ("post", "/rollouts/{slug}/transitions/{pk}/withdraw/", Role.SRE_LEAD),
    ("get", "/rollouts/{slug}/approvers/", Role.COMPLIANCE_LEAD),
    ("post", "/rollouts/{slug}/approvers/", Role.PRODUCT_LEAD),
    ("get", "/audit/", ADMIN),
    ("post", "/audit/export/", Role.COMPLIANCE_REVIEWER),
    ("post", "/audit/export/", Role.PRODUCT_LEAD),
]


@pytest.mark.parametrize(("method", "path", "role"), FORBIDDEN)
def test_actions_answer_403_to_other_roles_and_the_attempt_is_recorded(canary_request, client_for, method, path, role):
    url = path.format(slug=canary_request.rollout.slug, pk=canary_request.pk)
    start = top()
    data = {"role": "product-lead", "decision": "approve", "justification": "x", "reason": "x", "format": "csv"}
    response = getattr(client_for(role), method)(url, data if method == "post" else None)
    assert response.status_code == 403
    assert "403 · Not allowed" in response.content.decode()
    [entry] = AuditEvent.objects.filter(sequence__gt=start)
    assert (entry.action, entry.actor_name) == ("auth.permission_denied", str(role))
    canary_request.refresh_from_db()
    assert canary_request.status == "open"


def test_auditors_and_reviewers_and_leads_read_the_audit_log(db, client_for):
    for role in (Role.AUDITOR, Role.COMPLIANCE_REVIEWER, Role.PRODUCT_LEAD, Role.SUPPORT_LEAD):
        page = client_for(role).get("/audit/")
        assert page.status_code == 200
        assert ('data-action="export-csv"' in page.content.decode()) == (role == Role.AUDITOR)


# --- Flows through the pages: success and refused rules as messages ----------------------------------------------


def test_a_lead_signs_off_from_the_rollout_page(rollout, client_for):
    client = client_for(Role.COMPLIANCE_LEAD)
    response = client.post(
        f"/rollouts/{rollout.slug}/sign-off/",
        {"role": "compliance-lead", "decision": "approve", "comment": "ok", "version": plan_hash(rollout)},
    )
    assert response.status_code == 302 and response["Location"].endswith("#sign-off")
    assert messages_of(response)[0].startswith("Plan approved as Compliance lead (version ")
    assert PlanSignOff.objects.get(rollout=rollout).signer_name == "compliance-lead"


def test_a_refused_rule_is_a_message_and_writes_nothing(rollout, client_for):
    client = client_for(Role.COMPLIANCE_LEAD)
    start = top()
    v = plan_hash(rollout)
    url = f"/rollouts/{rollout.slug}/sign-off/"
    response = client.post(url, {"role": "compliance-lead", "decision": "reject", "version": v})
    assert messages_of(response) == ["A rejection needs a comment saying why."]
    response = client.post(url, {"role": "product-lead", "decision": "approve", "version": v})
    assert messages_of(response) == ["Only a member of Product lead signs off for that role."]
    response = client.post(url, {"role": "compliance-lead", "decision": "approve"})
    assert messages_of(response) == ["Version: The form did not say which version it showed; reload the page."]
    response = client.post(url, {"role": "nonsense", "decision": "approve", "version": v})
    assert messages_of(response)[0].startswith("Role: Select a valid choice")
    # Bad input writes nothing; the refusal of the actor (not in that role) is the one ledger entry.
    [entry] = AuditEvent.objects.filter(sequence__gt=start)
    assert (entry.action, entry.actor_name, entry.after["code"]) == (
        "auth.rule_refused",
        "compliance-lead",
        "not-in-role",
    )
    assert not PlanSignOff.objects.exists()


def test_request_decide_and_apply_through_the_pages(ready_rollout, client_for, users):
    slug = ready_rollout.slug
    admin = client_for(ADMIN)
    response = admin.post(f"/rollouts/{slug}/transitions/new/", {"justification": "All green.", "target": "canary"})
    req = TransitionRequest.objects.get(rollout=ready_rollout)
    assert response["Location"] == req.get_absolute_url()
    response = admin.post(f"/rollouts/{slug}/transitions/new/", {"justification": "Again", "target": "canary"})
    assert response.status_code == 200
    assert f'Request <a class="alert-link" href="{req.get_absolute_url()}">#{req.pk}</a> is still open' in (
        response.content.decode()
    )
    assert TransitionRequest.objects.filter(rollout=ready_rollout).count() == 1

    for role in (Role.PRODUCT_LEAD, Role.SRE_LEAD):
        response = client_for(role).post(
            f"/rollouts/{slug}/transitions/{req.pk}/decide/",
            {"role": role.value, "decision": "approve", "version": transition_view(req).version},
        )
        assert messages_of(response) == [f"Recorded: {role.label} approves."]
        req.refresh_from_db()
    response = client_for(Role.SRE_LEAD).post(
        f"/rollouts/{slug}/transitions/{req.pk}/decide/",
        {"role": "sre-lead", "decision": "approve", "version": transition_view(req).version},
    )
    assert messages_of(response) == [f"Request #{req.pk} is approved; it takes no decisions."] or messages_of(response)[
        0
    ].startswith("SRE lead already decided")

    admin = client_for(ADMIN)
    confirm = admin.get(f"/rollouts/{slug}/transitions/{req.pk}/apply/")
    assert confirm.status_code == 200 and "Apply now" in confirm.content.decode()
    req.refresh_from_db()
    response = admin.post(
        f"/rollouts/{slug}/transitions/{req.pk}/apply/", {"note": "Go", "version": transition_view(req).version}
    )
    assert response["Location"] == ready_rollout.get_absolute_url()
    assert messages_of(response) == [f"Applied: {ready_rollout.name} moved into Canary (internal QA)."]
    response = admin.post(f"/rollouts/{slug}/transitions/{req.pk}/apply/", {"note": "Again", "version": "x"})
    assert messages_of(response)[0].startswith(f"Request #{req.pk} was already applied")
    assert ledger.verify(ledger.database_records()).ok


def test_the_approvers_page_saves_and_voids(canary_request, client_for, users):
    services.transition_decide(
        request=canary_request, role="product-lead", decision="approve", comment="", actor=users["product-lead"]
    )
    slug = canary_request.rollout.slug
    client = client_for(ADMIN)
    page = client.get(f"/rollouts/{slug}/approvers/").content.decode()
    assert 'name="roles_canary" value="product-lead"' in page
    data = {
        "roles_canary": ["product-lead", "support-lead"],
        "roles_limited_beta": ["product-lead", "sre-lead", "support-lead"],
        "roles_general_availability": ["product-lead", "support-lead", "compliance-lead", "sre-lead"],
        "roles_completed": ["product-lead", "compliance-lead"],
        "reason": "Support owns canary feedback",
    }
    response = client.post(f"/rollouts/{slug}/approvers/", data)
    assert response.status_code == 302
    assert canary_request.approvals.get().voided_at is not None
    response = client.post(f"/rollouts/{slug}/approvers/", {**data, "roles_canary": []})
    assert response.status_code == 200
    assert "needs at least one approving role" in response.content.decode()


def test_home_my_work_lists_what_waits_for_each_role(canary_request, client_for, users):
    assert "Nothing is waiting for your roles." in client_for(Role.SUPPORT_LEAD).get("/").content.decode()
    page = client_for(Role.PRODUCT_LEAD).get("/").content.decode()
    assert 'id="my-decisions"' in page and canary_request.get_absolute_url() in page
    approve(canary_request, users)
    page = client_for(ADMIN).get("/").content.decode()
    assert 'id="my-applies"' in page and canary_request.get_absolute_url() in page
    assert 'id="my-work"' not in client_for(Role.AUDITOR).get("/").content.decode()


def test_home_lists_plans_waiting_for_sign_off(rollout, client_for, users):
    services.plan_sign_off(rollout=rollout, role="sre-lead", decision="approve", comment="", actor=users["sre-lead"])
    assert 'id="my-sign-offs"' in client_for(Role.SUPPORT_LEAD).get("/").content.decode()
    assert 'id="my-sign-offs"' not in client_for(Role.SRE_LEAD).get("/").content.decode()


def test_object_pages_link_to_their_history(rollout, users, client_for):
    from tests.factories import advance_to

    advance_to(rollout, "canary", users[ADMIN])
    incident = rollout_services.rollout_rollback(rollout=rollout, actor=users[ADMIN], reason="drill")
    client = client_for(Role.AUDITOR)
    phase = rollout.phases.get(kind="canary")
    for url, obj_type, pk in (
        (phase.get_absolute_url(), "rollout.phase", phase.pk),
        (incident.get_absolute_url(), "rollout.incident", incident.pk),
    ):
        page = client.get(url).content.decode()
        assert f"/audit/?object_type={obj_type}&amp;object_id={pk}" in page
        history = client.get("/audit/", {"object_type": obj_type, "object_id": pk})
        assert history.status_code == 200
        assert (
            len(history.context["page"].object_list)
            == AuditEvent.objects.filter(object_type=obj_type, object_id=str(pk)).count()
        )


# --- Query counts at two data sizes ----------------------------------------------------------------------------------


def _grow(rollout, users, n: int) -> TransitionRequest:
    """A canary request with one approval, after ``n`` rounds of history: withdrawn requests,
    voided approvals and superseded sign-offs."""
    admin = users[ADMIN]
    for i in range(n):
        req = services.transition_request_create(rollout=rollout, justification=f"round {i}", actor=admin)
        services.transition_decide(
            request=req, role="product-lead", decision="approve", comment="", actor=users["product-lead"]
        )
        services.approvers_set(
            rollout=rollout,
            roles_by_target={"canary": ["product-lead", "sre-lead"] if i % 2 else ["product-lead"]},
            actor=admin,
            reason=f"round {i}",
        )
        services.transition_withdraw(request=req, actor=admin, reason=f"round {i}")
        rollout_services.rollout_update_plan(rollout=rollout, actor=admin, reason=f"round {i}", latency_sla_ms=2000 + i)
        sign_all(rollout, users)
    services.approvers_set(
        rollout=rollout, roles_by_target={"canary": ["product-lead", "sre-lead"]}, actor=admin, reason="final"
    )
    req = services.transition_request_create(rollout=rollout, justification="now", actor=admin)
    services.transition_decide(
        request=req, role="product-lead", decision="approve", comment="", actor=users["product-lead"]
    )
    return req


@pytest.mark.parametrize("n", [1, 6])
def test_request_rollout_list_and_home_pages_run_a_fixed_number_of_queries(
    rollout, users, client_for, django_assert_num_queries, n
):
    complete_readiness(rollout, users[ADMIN])
    req = _grow(rollout, users, n)
    client = client_for(Role.SRE_LEAD)
    # Every page includes the ledger-alert banner: one indexed query. The request page: 16, plus the nine of the
    # evidence panel (tests/governance/test_evidence.py).
    with django_assert_num_queries(25):
        assert client.get(req.get_absolute_url()).status_code == 200
    # Keyset pages (rollout.tables): no COUNT(*) before the rows.
    with django_assert_num_queries(7):
        assert client.get(f"/rollouts/{rollout.slug}/transitions/").status_code == 200
    # Home: "My work" and the compliance panel (open reviews).
    with django_assert_num_queries(11):
        assert client.get("/").status_code == 200
    # The rollout page carries the rollout core, the evaluations panel (triggers, GA gate) and governance's panels
    # (sign-offs and transitions; legal hold and latest daily delta report), and the phases' activity periods. The
    # panels read the active phase, open incidents and success criteria the page prefetched, and the recent changes
    # are one query over every tracked model; the plan's version is hashed from what the page loaded.
    with django_assert_num_queries(31):
        assert client.get(rollout.get_absolute_url()).status_code == 200


@pytest.mark.parametrize("n", [10, 300])
def test_the_audit_page_runs_a_fixed_number_of_queries(rollout, client_for, django_assert_num_queries, n):
    ledger.append_many(
        {"action": "update", "object_type": "rollout.rollout", "object_id": rollout.pk, "rollout_id": rollout.pk}
        for _ in range(n)
    )
    client = client_for(Role.AUDITOR)
    # Keyset pages: no COUNT over the ledger, the same queries on the newest, a middle and the oldest page.
    with django_assert_num_queries(9):
        assert client.get("/audit/").status_code == 200
    newest = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    for cursor in ({"after": newest - 5}, {"before": ""}):
        with django_assert_num_queries(10):
            page = client.get("/audit/", {"rollout": rollout.slug, "action": "update", **cursor})
            assert page.status_code == 200
    assert len(page.context["page"].object_list) == min(n, 25)  # the oldest page
