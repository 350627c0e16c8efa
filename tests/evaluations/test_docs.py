"""The API docs pages (Swagger UI, Redoc): behind login, and nothing loaded from another host."""

from __future__ import annotations

import urllib.parse

import pytest

from rollout.roles import Role
from tests.browser import login


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_docs_send_anonymous_visitors_to_the_login_page(client, db, path):
    response = client.get(path)
    assert (response.status_code, response["Location"]) == (302, f"/login/?next={urllib.parse.quote(path)}")


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_docs_are_served_to_a_logged_in_user_from_local_files(client_for, path):
    response = client_for(Role.AUDITOR).get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "https://" not in html and "//fonts." not in html


def _is_loopback(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or parts.hostname in {"127.0.0.1", "localhost", "::1"}


VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.effectiveDirective + " " + e.blockedURI);
});
"""


@pytest.mark.browser
def test_swagger_ui_and_redoc_render_without_any_off_host_request(browser_page, users):
    page = browser_page
    off_host: list[str] = []

    def guard(route):
        if _is_loopback(route.request.url):
            route.continue_()
        else:
            off_host.append(route.request.url)
            route.abort()

    page.context.route("**/*", guard)
    page.context.add_init_script(VIOLATIONS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, Role.AUDITOR.value, "pw")
    page.wait_for_url("**/")

    page.goto("/api/v1/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Rollout Governance Dashboard API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag")  # the operations, from the schema the page fetched
    assert page.evaluate("window.__cspViolations") == []

    page.goto("/api/v1/redoc/")
    page.wait_for_selector("h1:has-text('Rollout Governance Dashboard API')")
    page.wait_for_selector("[data-section-id^='tag/'], [data-section-id^='operation/']")
    page.wait_for_timeout(500)  # Redoc renders its side menu (and the Redocly logo) after the content
    # The one thing either page asks for off-host is Redoc's "Redocly" logo: the CSP refuses it before
    # any request is made, and Redoc hides a logo that does not load.
    assert page.evaluate("window.__cspViolations") == ["img-src https://cdn.redoc.ly/redoc/logo-mini.svg"]
    assert page.locator("img[alt='redocly logo']").count() == 0

    assert off_host == []
    assert errors == []
