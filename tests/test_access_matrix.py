"""The access matrix: who may do what, on every URL, by every principal, in one table (issue 8).

Each cell is one request: a principal (anonymous, a user of each role group, an API token of each scope,
a token without scopes, an unknown token) x a URL name x a method -> the expected answer. The URL kwargs
point at a realistic world (tests/matrix_world.py). POST bodies are valid ones a permitted user would send
(tests/access_matrix.py), so a refusal comes from who asks, never from what they send.

Values: a status code; ``login``: 302 to ``/login/?next=``; ``alogin``: 302 to the admin's login page with
``?next=``; a bare ``302`` is a redirect anywhere else (after an action, or a rule's refusal shown as a
message). A trailing ``+``: the request writes (some row count changes). Every other cell (every refusal,
every rule refusal, every GET) must leave the row count of every table as it was, except the audit ledger's
and its denial windows' (they record denials) and the sessions' (``access_matrix.NOT_COUNTED``). Each cell
runs in a savepoint rolled back after it: all cells of a principal share one world, built once.

Adding a URL pattern? ``test_every_url_pattern_is_in_the_matrix`` fails until it has rows here (and its
kwargs in ``World.kwargs``, a valid body in ``access_matrix.post_body`` when it takes a POST).
Out of the table: the Django admin's own pages (its namespace) except its index, login and logout. Only
staff reach them, no role group is staff, and each admin page's permission checks are Django's own.

The test client does not enforce CSRF: the matrix is about who, CSRF has its own tests.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver

from tests.matrix_world import build_world

from .access_matrix import (
    API_PRINCIPALS,
    INTEGRATION_PRINCIPALS,
    PAGE_PRINCIPALS,
    WRITES,
    Cell,
    client_for,
    counted_tables,
    outcome,
    parse,
    row_counts,
    send,
)

pytestmark = pytest.mark.django_db

# The HTML pages (and the docs pages under /api/v1/). Columns: anonymous, a user of each role group (rollout-admin,
# product-, support-, compliance-, SRE lead, compliance-reviewer, auditor), a token with both scopes (pages take none).
PAGES = """
# url name                          anon   admin  prod   supp   comp   sre    revw   audit | token
login                          GET  200    200    200    200    200    200    200    200   | 200
login                          POST 302+   302+   302+   302+   302+   302+   302+   302+   | 302+

logout                         GET  login  405    405    405    405    405    405    405   | login
logout                         POST login  302    302    302    302    302    302    302   | login

# django-allauth (config/auth_urls.py): its names for the login and logout pages; sign-up is closed (a page saying
# so, nothing written); the inactive-account and provider-cancelled notices are public pages.
account_login                  GET  200    200    200    200    200    200    200    200   | 200
account_login                  POST 302+   302+   302+   302+   302+   302+   302+   302+  | 302+
account_logout                 GET  login  405    405    405    405    405    405    405   | login
account_logout                 POST login  302    302    302    302    302    302    302   | login
account_inactive               GET  200    200    200    200    200    200    200    200   | 200
account_inactive               POST 405    405    405    405    405    405    405    405   | 405
account_signup                 GET  200    200    200    200    200    200    200    200   | 200
account_signup                 POST 200    200    200    200    200    200    200    200   | 200
# Re-authentication: the password form for a logged-in user; the TOTP one sends a user without a factor away.
account_reauthenticate         GET  login  200    200    200    200    200    200    200   | login
account_reauthenticate         POST login  200    200    200    200    200    200    200   | login
mfa_reauthenticate             GET  login  302    302    302    302    302    302    302   | login
mfa_reauthenticate             POST login  302    302    302    302    302    302    302   | login
# The second factor (allauth.mfa): the overview for every user; setting up the app (a login within REAUTH_MAX_AGE:
# the form, a wrong code posted writes nothing) and recovery codes (refused without an app: nothing written); pages
# of a factor the user does not have are 404; the login stage without a login in progress goes back to login.
mfa_index                      GET  login  200    200    200    200    200    200    200   | login
mfa_index                      POST login  405    405    405    405    405    405    405   | login
mfa_activate_totp              GET  login  200    200    200    200    200    200    200   | login
mfa_activate_totp              POST login  200    200    200    200    200    200    200   | login
mfa_deactivate_totp            GET  login  404    404    404    404    404    404    404   | login
mfa_deactivate_totp            POST login  404    404    404    404    404    404    404   | login
mfa_generate_recovery_codes    GET  login  200    200    200    200    200    200    200   | login
mfa_generate_recovery_codes    POST login  200    200    200    200    200    200    200   | login
mfa_view_recovery_codes        GET  login  404    404    404    404    404    404    404   | login
mfa_view_recovery_codes        POST login  405    405    405    405    405    405    405   | login
mfa_download_recovery_codes    GET  login  404    404    404    404    404    404    404   | login
mfa_download_recovery_codes    POST login  404    404    404    404    404    404    404   | login
mfa_authenticate               GET  302    302    302    302    302    302    302    302   | 302
mfa_authenticate               POST 302    302    302    302    302    302    302    302   | 302
# The identity provider (allauth.socialaccount, OpenID Connect): no provider is configured in the matrix's world,
# so its login and callback are 404; the sign-up step without a provider login in progress goes back to login.
openid_connect_login           GET  404    404    404    404    404    404    404    404   | 404
openid_connect_login           POST 404    404    404    404    404    404    404    404   | 404
openid_connect_callback        GET  404    404    404    404    404    404    404    404   | 404
openid_connect_callback        POST 404    404    404    404    404    404    404    404   | 404
socialaccount_login_cancelled  GET  200    200    200    200    200    200    200    200   | 200
socialaccount_login_cancelled  POST 405    405    405    405    405    405    405    405   | 405
socialaccount_login_error      GET  login  401    401    401    401    401    401    401   | login
socialaccount_login_error      POST login  405    405    405    405    405    405    405   | login
socialaccount_signup           GET  302    302    302    302    302    302    302    302   | 302
socialaccount_signup           POST 302    302    302    302    302    302    302    302   | 302
# After an OIDC login whose groups map to no role, every page is this one (governance/oidc.py); anyone else is sent
# home from it.
no_role                        GET  login  302    302    302    302    302    302    302   | login
no_role                        POST login  405    405    405    405    405    405    405   | login

api:docs                       GET  login  200    200    200    200    200    200    200   | login
api:docs                       POST login  405    405    405    405    405    405    405   | login
api:redoc                      GET  login  200    200    200    200    200    200    200   | login
api:redoc                      POST login  405    405    405    405    405    405    405   | login

evaluations:index              GET  login  200    200    200    200    200    200    200   | login
evaluations:index              POST login  405    405    405    405    405    405    405   | login
evaluations:deltas             GET  login  200    200    200    200    200    200    200   | login
evaluations:deltas             POST login  405    405    405    405    405    405    405   | login
evaluations:runs               GET  login  200    200    200    200    200    200    200   | login
evaluations:runs               POST login  405    405    405    405    405    405    405   | login
evaluations:run                GET  login  200    200    200    200    200    200    200   | login
evaluations:run                POST login  405    405    405    405    405    405    405   | login
evaluations:criteria           GET  login  200    403    403    403    403    403    403   | login
evaluations:criteria           POST login  302+   403    403    403    403    403    403   | login

rollout:home                   GET  login  200    200    200    200    200    200    200   | login
rollout:home                   POST login  405    405    405    405    405    405    405   | login
rollout:tenants                GET  login  200    200    200    200    200    200    200   | login
rollout:tenants                POST login  405    405    405    405    405    405    405   | login
rollout:preferences            GET  login  200    200    200    200    200    200    200   | login
rollout:preferences            POST login  302+   302+   302+   302+   302+   302+   302+  | login
rollout:create                 GET  login  200    403    403    403    403    403    403   | login
rollout:create                 POST login  302+   403    403    403    403    403    403   | login
rollout:detail                 GET  login  200    200    200    200    200    200    200   | login
rollout:detail                 POST login  405    405    405    405    405    405    405   | login
rollout:status                 GET  login  200    200    200    200    200    200    200   | login
rollout:status                 POST login  405    405    405    405    405    405    405   | login
rollout:status_live            GET  login  200    200    200    200    200    200    200   | login
rollout:status_live            POST login  405    405    405    405    405    405    405   | login
rollout:plan_edit              GET  login  200    403    403    403    403    403    403   | login
rollout:plan_edit              POST login  302+   403    403    403    403    403    403   | login
rollout:escalation_edit        GET  login  200    403    403    403    403    403    403   | login
rollout:escalation_edit        POST login  302+   403    403    403    403    403    403   | login
rollout:cohort_edit            GET  login  200    403    403    403    403    403    403   | login
rollout:cohort_edit            POST login  302    403    403    403    403    403    403   | login
rollout:phase                  GET  login  200    200    200    200    200    200    200   | login
rollout:phase                  POST login  302+   403    302+   403    403    403    403   | login
rollout:checklist_tick         GET  login  405    405    405    405    405    405    405   | login
rollout:checklist_tick         POST login  302+   403    403    403    403    403    403   | login
rollout:checklist_untick       GET  login  200    403    403    403    403    403    403   | login
rollout:checklist_untick       POST login  302+   403    403    403    403    403    403   | login
rollout:kill_switch            GET  login  200    403    403    403    200    403    403   | login
rollout:kill_switch            POST login  302    403    403    403    302    403    403   | login
rollout:rollback               GET  login  200    403    403    403    403    403    403   | login
rollout:rollback               POST login  302+   403    403    403    403    403    403   | login
rollout:incident               GET  login  200    200    200    200    200    200    200   | login
rollout:incident               POST login  405    405    405    405    405    405    405   | login
rollout:incident_step          GET  login  405    405    405    405    405    405    405   | login
rollout:incident_step          POST login  302+   403    403    403    403    403    403   | login
rollout:incident_close         GET  login  405    405    405    405    405    405    405   | login
rollout:incident_close         POST login  400    403    403    403    403    403    403   | login
rollout:communications         GET  login  200    200    200    200    200    200    200   | login
rollout:communications         POST login  405    405    405    405    405    405    405   | login
rollout:communication_create   GET  login  200    403    403    403    403    403    403   | login
rollout:communication_create   POST login  302+   403    403    403    403    403    403   | login
rollout:communication          GET  login  200    200    200    200    200    200    200   | login
rollout:communication          POST login  405    405    405    405    405    405    405   | login
rollout:communication_edit     GET  login  200    403    403    403    403    403    403   | login
rollout:communication_edit     POST login  302+   403    403    403    403    403    403   | login
rollout:communication_publish  GET  login  405    405    405    405    405    405    405   | login
rollout:communication_publish  POST login  302+   403    403    403    403    403    403   | login

governance:sign_off            GET  login  405    405    405    405    405    405    405   | login
governance:sign_off            POST login  403    302    302    302    302    403    403   | login
governance:approvers           GET  login  200    403    403    403    403    403    403   | login
governance:approvers           POST login  302+   403    403    403    403    403    403   | login
governance:transitions         GET  login  200    200    200    200    200    200    200   | login
governance:transitions         POST login  405    405    405    405    405    405    405   | login
governance:transition_create   GET  login  200    403    403    403    403    403    403   | login
governance:transition_create   POST login  200    403    403    403    403    403    403   | login
governance:transition          GET  login  200    200    200    200    200    200    200   | login
governance:transition          POST login  405    405    405    405    405    405    405   | login
governance:transition_decide   GET  login  405    405    405    405    405    405    405   | login
governance:transition_decide   POST login  403    302+   302+   302    302+   403    403   | login
governance:transition_apply    GET  login  200    403    403    403    403    403    403   | login
governance:transition_apply    POST login  302    403    403    403    403    403    403   | login
governance:transition_withdraw GET  login  200    403    403    403    403    403    403   | login
governance:transition_withdraw POST login  302+   403    403    403    403    403    403   | login
governance:audit               GET  login  403    200    200    200    200    200    200   | login
governance:audit               POST login  405    405    405    405    405    405    405   | login
governance:audit_export        GET  login  405    405    405    405    405    405    405   | login
governance:audit_export        POST login  403    403    403    403    403    403    200   | login
governance:retention           GET  login  403    403    403    200    403    200    200   | login
governance:retention           POST login  403    403    403    403    403    302+   403   | login
governance:hold_release        GET  login  403    403    403    403    403    200    403   | login
governance:hold_release        POST login  403    403    403    403    403    302+   403   | login
governance:jobs                GET  login  403    403    403    200    403    200    200   | login
governance:jobs                POST login  405    405    405    405    405    405    405   | login
governance:job_run             GET  login  403    403    403    403    403    200    403   | login
governance:job_run             POST login  403    403    403    403    403    302+   403   | login
governance:records             GET  login  403    403    403    200    403    200    200   | login
governance:records             POST login  405    405    405    405    405    405    405   | login
governance:record_create       GET  login  403    403    403    403    403    200    403   | login
governance:record_create       POST login  403    403    403    403    403    302+   403   | login
governance:record              GET  login  403    403    403    200    403    200    200   | login
governance:record              POST login  405    405    405    405    405    405    405   | login
governance:record_edit         GET  login  403    403    403    403    403    200    403   | login
governance:record_edit         POST login  403    403    403    403    403    302+   403   | login
governance:change_decide       GET  login  405    405    405    405    405    405    405   | login
governance:change_decide       POST login  403    403    403    403    403    302+   403   | login
governance:reviews             GET  login  200    200    200    200    200    200    200   | login
governance:reviews             POST login  405    405    405    405    405    405    405   | login
governance:review              GET  login  200    200    200    200    200    200    200   | login
governance:review              POST login  403    403    403    403    302+   403    403   | login
governance:review_reassign     GET  login  405    405    405    405    405    405    405   | login
governance:review_reassign     POST login  403    403    403    302+   403    302+   403   | login
governance:delta_reports       GET  login  200    200    200    200    200    200    200   | login
governance:delta_reports       POST login  405    405    405    405    405    405    405   | login
governance:delta_report        GET  login  200    200    200    200    200    200    200   | login
governance:delta_report        POST login  405    405    405    405    405    405    405   | login

admin:index                    GET  alogin alogin alogin alogin alogin alogin alogin alogin| alogin
admin:index                    POST alogin alogin alogin alogin alogin alogin alogin alogin| alogin
admin:login                    GET  200    200    200    200    200    200    200    200   | 200
admin:login                    POST 200    200    200    200    200    200    200    200   | 200
admin:logout                   GET  alogin 302    302    302    302    302    302    302   | alogin
admin:logout                   POST alogin 302    302    302    302    302    302    302   | alogin
"""

# The REST API. Users' sessions are not accepted (only the schema reads them, for the docs pages). Tokens: the
# ingest scope, the read scope, a token left without scopes, an unknown token.
API = """
# url name                          anon   admin  prod   supp   comp   sre    revw   audit | ingest read   none   bad
api:schema                     GET  401    200    200    200    200    200    200    200   | 200    200    200    401
api:schema                     POST 401    405    405    405    405    405    405    405   | 405    405    405    401
api:evaluation-runs            GET  401    401    401    401    401    401    401    401   | 405    403    403    401
api:evaluation-runs            POST 401    401    401    401    401    401    401    401   | 201+   403    403    401
api:evaluation-run             GET  401    401    401    401    401    401    401    401   | 403    200    403    401
api:evaluation-run             POST 401    401    401    401    401    401    401    401   | 403    405    403    401
api:monitoring-samples         GET  401    401    401    401    401    401    401    401   | 405    403    403    401
api:monitoring-samples         POST 401    401    401    401    401    401    401    401   | 201+   403    403    401
api:rollouts                   GET  401    401    401    401    401    401    401    401   | 403    200    403    401
api:rollouts                   POST 401    401    401    401    401    401    401    401   | 403    405    403    401
api:rollout-flags              GET  401    401    401    401    401    401    401    401   | 403    200    403    401
api:rollout-flags              POST 401    401    401    401    401    401    401    401   | 403    405    403    401
api:rollout-deltas             GET  401    401    401    401    401    401    401    401   | 403    200    403    401
api:rollout-deltas             POST 401    401    401    401    401    401    401    401   | 403    405    403    401
api:rollout                    GET  401    401    401    401    401    401    401    401   | 403    200    403    401
api:rollout                    POST 401    401    401    401    401    401    401    401   | 403    405    403    401
# The import endpoints with a body that is no log (the matrix posts JSON): the ingest token reaches the importer.
api:import-inspect             GET  401    401    401    401    401    401    401    401   | 405    403    403    401
api:import-inspect             POST 401    401    401    401    401    401    401    401   | 422    403    403    401
api:import-promptfoo           GET  401    401    401    401    401    401    401    401   | 405    403    403    401
api:import-promptfoo           POST 401    401    401    401    401    401    401    401   | 422    403    403    401
"""

# The integrations of issue 12 outside /api/v1/: the OpenFeature Remote Evaluation Protocol (flags scope) and the
# Prometheus scrape (metrics scope). Tokens: flags, metrics, read, an unknown token.
INTEGRATIONS = """
# url name                          anon   admin  prod   supp   comp   sre    revw   audit | flags  metric read   bad
ofrep:evaluate-flags           GET  401    401    401    401    401    401    401    401   | 405    403    403    401
ofrep:evaluate-flags           POST 401    401    401    401    401    401    401    401   | 200    403    403    401
ofrep:evaluate-flag            GET  401    401    401    401    401    401    401    401   | 405    403    403    401
ofrep:evaluate-flag            POST 401    401    401    401    401    401    401    401   | 200    403    403    401
metrics                        GET  401    401    401    401    401    401    401    401   | 403    200    403    401
metrics                        POST 401    401    401    401    401    401    401    401   | 403    405    403    401
"""

CELLS = parse(PAGES, PAGE_PRINCIPALS) + parse(API, API_PRINCIPALS) + parse(INTEGRATIONS, INTEGRATION_PRINCIPALS)

# Outside the table, with the reason.
EXCLUDED_NAMESPACES = {"admin": "the Django admin: staff only, its own permission checks (see the docstring)"}
ADMIN_COVERED = {"admin:index", "admin:login", "admin:logout"}


def url_names() -> list[str]:
    """Every URL pattern's full name, walking the resolver; a pattern without a name is reported as such."""

    def walk(resolver: URLResolver, namespaces: tuple[str, ...], prefix: str):
        for p in resolver.url_patterns:
            if isinstance(p, URLResolver):
                yield from walk(p, (*namespaces, p.namespace) if p.namespace else namespaces, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                yield (
                    ":".join((*namespaces, p.name))
                    if p.name
                    else ":".join((*namespaces, f"<unnamed {prefix}{p.pattern}>"))
                )

    return list(walk(get_resolver(), (), "/"))


def test_every_url_pattern_is_in_the_matrix():
    in_table = {c.name for c in CELLS}
    names = [n for n in url_names() if n.split(":")[0] not in EXCLUDED_NAMESPACES or n in ADMIN_COVERED]
    assert not [n for n in names if "<unnamed" in n], "name every URL pattern: the matrix goes by name"
    assert sorted(set(names) - in_table) == [], "URL patterns missing from the access matrix"
    assert sorted(in_table - set(names)) == [], "rows for URL names that no longer exist"


def test_every_name_has_both_methods_and_each_row_is_there_once():
    rows = [(c.name, c.method, c.principal) for c in CELLS]
    assert len(rows) == len(set(rows))
    for name in {c.name for c in CELLS}:
        assert {c.method for c in CELLS if c.name == name} == {"GET", "POST"}, name
    # Only an answered POST writes: never a GET, a redirect to a login page or an error.
    assert {c.answer for c in CELLS if c.writes} <= {"200", "201", "302"}
    assert not [c for c in CELLS if c.writes and c.method == "GET"]


@pytest.fixture
def world(users):
    return build_world(users)


def check(cell: Cell, world, kwargs: dict, tables: list[str]) -> None:
    with transaction.atomic():
        client = client_for(cell.principal, world)  # logging in writes (a session, axes' access log)
        before = row_counts(tables)
        response = send(cell, client, world, kwargs)
        got = outcome(response)
        after = row_counts(tables)
        transaction.set_rollback(True)  # every cell starts from the same world
    changed = {t: (before[t], after[t]) for t in tables if before[t] != after[t]}
    assert got == cell.answer, f"{cell}: got {got}" + (WRITES if changed else "")
    if cell.writes:
        assert changed, f"{cell}: wrote nothing"
    else:
        assert changed == {}, f"{cell}: changed row counts {changed}"


@pytest.mark.parametrize(
    "principal",
    sorted({c.principal for c in CELLS}, key=[*PAGE_PRINCIPALS, *API_PRINCIPALS, *INTEGRATION_PRINCIPALS].index),
)
def test_access_matrix(principal, world, subtests):
    """All cells of one principal against one world (built once); each cell is a subtest named after it."""
    kwargs = world.kwargs()
    tables = counted_tables()
    for cell in (c for c in CELLS if c.principal == principal):
        with subtests.test(msg=str(cell)):
            check(cell, world, kwargs.get(cell.name, {}), tables)


# --- The matrix can fail ----------------------------------------------------------------------------------------


def test_a_permission_granted_to_the_wrong_role_fails_its_cell(world):
    from django.contrib.auth.models import Group, Permission

    [cell] = [
        c for c in CELLS if (c.name, c.method, c.principal) == ("rollout:communication_create", "POST", "auditor")
    ]
    Group.objects.get(name="auditor").permissions.add(Permission.objects.get(codename="add_communication"))
    world.users["auditor"] = type(world.users["auditor"]).objects.get(pk=world.users["auditor"].pk)  # no perm cache
    with pytest.raises(AssertionError, match="got 302"):
        check(cell, world, world.kwargs()[cell.name], counted_tables())


def test_row_counts_cover_the_domain_and_history_but_not_the_ledger_or_sessions(world):
    from governance.models import AuditEvent
    from rollout.models import Communication

    tables = counted_tables()
    assert Communication._meta.db_table in tables and Communication.history.model._meta.db_table in tables
    assert AuditEvent._meta.db_table not in tables and "django_session" not in tables
    before = row_counts(tables)
    world.draft.pk = None
    world.draft.save()  # test data: a write behind the services' back must show too
    after = row_counts(tables)
    changed = {t: after[t] - before[t] for t in tables if before[t] != after[t]}
    assert changed == {Communication._meta.db_table: 1, Communication.history.model._meta.db_table: 1}
