"""Issue 13 in headless Chromium: signing in with the identity provider, a real OpenID provider on loopback
(tests/oidc/provider.mjs). The login button, the provider's login and consent pages, the callback, the groups
mapped to roles; a group removed at the provider and gone at the next sign-in; logging out through the provider
(RP-initiated logout); a user with no role; a tampered ID token refused. Every dashboard page on the way is checked
by the harness (axe-core, the request guard, CSP: the login and logout forms redirect to the provider, which the
CSP's form-action allows)."""

from __future__ import annotations

import pytest

from governance.models import AuditEvent
from tests.browser import journeys
from tests.oidc.dashboard import PROVIDER_NAME, configure, idp_user

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def dashboard(oidc_provider, settings, role_groups, live_server):
    configure(settings, oidc_provider, live_server.url)
    oidc_provider.clear_events()
    return live_server.url


def sign_in_at_provider(j, login: str) -> None:
    """From the dashboard's login page: the button, then the provider's login page and (when asked) its consent."""
    page = j.page
    j.goto("/login/", f"login page ({login})", screenshot=False)
    page.click(f"button:has-text('Sign in with {PROVIDER_NAME}')")
    page.wait_for_url(lambda url: "/interaction/" in url)
    assert page.title().startswith("Sign in to the test identity provider")
    page.fill("#login", login)
    page.fill("#password", f"{login}-password")
    page.click("button:has-text('Sign in')")
    page.wait_for_load_state()
    if "/interaction/" in page.url and page.locator("button:has-text('Allow')").count():
        assert "groups" in page.inner_text("main")
        page.click("button:has-text('Allow')")
    page.wait_for_url(lambda url: url.startswith(j.base_url))


def logout_through_provider(j) -> None:
    page = j.page
    j.open_nav()
    page.click("button:has-text('Log out')")
    page.wait_for_url(lambda url: "/session/end" in url)
    page.click("button:has-text('Yes, sign me out')")
    page.wait_for_url("**/login/")


def test_sign_in_roles_from_groups_a_removed_group_and_logout_through_the_provider(dashboard, oidc_provider):
    oidc_provider.set_users(idp_user("ada", "idp-sre-leads", "idp-product", "idp-everyone"))
    with journeys(dashboard) as start:
        j = start("oidc-sign-in")
        sign_in_at_provider(j, "ada")
        j.page.wait_for_selector("[data-testid=whoami]")
        j.check("home after sign-in")
        assert j.page.inner_text("[data-testid=whoami]") == "ada · Product lead, SRE lead"

        # The provider's administrator takes ada out of the SRE leads.
        oidc_provider.set_users(idp_user("ada", "idp-product", "idp-everyone"))
        logout_through_provider(j)
        j.check("login page after logout")
        assert [e["type"] for e in oidc_provider.events() if e["type"] == "end_session"] == ["end_session"]

        # Signed out at the provider too: the next sign-in asks for the password again.
        sign_in_at_provider(j, "ada")
        j.page.wait_for_selector("[data-testid=whoami]")
        assert j.page.inner_text("[data-testid=whoami]") == "ada · Product lead"
        j.check("home after the second sign-in")
        assert [e["login"] for e in oidc_provider.events("login")] == ["ada", "ada"]

    revoke = AuditEvent.objects.get(action="auth.role_revoke")
    assert revoke.after["role"] == "sre-lead" and revoke.after["claim_values_absent"] == ["idp-sre-leads"]
    assert sorted(e.after["role"] for e in AuditEvent.objects.filter(action="auth.role_grant")) == [
        "product-lead",
        "sre-lead",
    ]
    assert [e.after["method"] for e in AuditEvent.objects.filter(action="auth.login")] == ["oidc", "oidc"]
    assert AuditEvent.objects.get(action="auth.logout").after == {"method": "oidc", "provider_logout": True}


def test_a_user_without_a_role_and_a_tampered_id_token(dashboard, oidc_provider):
    oidc_provider.set_users(idp_user("eve", "idp-everyone"), idp_user("fay", "idp-auditors"))
    with journeys(dashboard) as start:
        j = start("oidc-no-role")
        sign_in_at_provider(j, "eve")
        j.page.wait_for_url("**/no-role/")
        j.check("no role")
        assert "none of your groups at Test IdP maps to a role" in j.page.inner_text("[data-testid=no-role]")
        j.page.goto(j.url("/audit/"))
        assert j.page.url == j.url("/no-role/")

        oidc_provider.spoil_id_tokens("tampered")
        k = start("oidc-tampered")
        sign_in_at_provider(k, "fay")
        k.check("refused")
        refusal = k.page.locator("[data-testid=oidc-refusal]")
        assert refusal.get_attribute("data-refusal") == "id_token_bad_signature"
        assert "signature does not verify" in refusal.inner_text()
        assert k.page.locator("[data-testid=whoami]").count() == 0
        # The page is the 401 the harness counts as no server error.
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.after["error"] == "id_token_bad_signature"
