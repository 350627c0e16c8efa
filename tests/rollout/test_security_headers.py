"""Browser security headers (CSP, Permissions-Policy), no-store for logged-in users, and Markdown images."""

from __future__ import annotations

import re

import pytest

from rollout.roles import Role


def _csp(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


PAGES = ["/", "/tenants/", "/evaluations/", "/audit/", "/api/v1/docs/", "/api/v1/redoc/", "/admin/"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_carry_a_csp_that_allows_no_inline_script(client, users, path):
    superuser = users[Role.AUDITOR]
    superuser.is_staff = superuser.is_superuser = True
    superuser.save()
    client.force_login(superuser)
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    policy = _csp(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["img-src"] == ["'self'", "data:"]
    # Nothing on the page needs an exception: no inline <script> and no inline event handler.
    html = response.content.decode()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"\son[a-z]+\s*=", html) == []


def test_login_page_carries_the_csp_and_permissions_policy(client):
    response = client.get("/login/")
    assert _csp(response)["script-src"] == ["'self'"]
    assert response["Permissions-Policy"] == (
        "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), fullscreen=(), "
        "geolocation=(), gyroscope=(), magnetometer=(), microphone=(), midi=(), payment=(), "
        "publickey-credentials-get=(), screen-wake-lock=(), usb=(), xr-spatial-tracking=()"
    )


def test_authenticated_pages_are_never_stored(client_for):
    response = client_for(Role.ROLLOUT_ADMIN).get("/")
    assert response.status_code == 200
    assert set(response["Cache-Control"].split(", ")) == {
        "max-age=0",
        "no-cache",
        "no-store",
        "must-revalidate",
        "private",
    }


def test_api_answers_to_a_token_are_never_stored(api):
    response = api.get("/api/v1/rollouts/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"].split(", ")


def test_anonymous_static_files_keep_their_cache_headers(client, db):
    # WhiteNoise answers before any session exists: nothing adds no-store there.
    response = client.get("/static/favicon.svg")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


def test_publish_confirmation_is_a_server_side_step_not_an_inline_handler(client_for, rollout, users):
    from rollout.services import communication_create

    comm = communication_create(
        rollout=rollout, kind="status_update", title="Hello", body="Body", actor=users[Role.ROLLOUT_ADMIN]
    )
    response = client_for(Role.ROLLOUT_ADMIN).get(f"/rollouts/{rollout.slug}/communications/{comm.pk}/")
    html = response.content.decode()
    # The confirmation is a page of its own (rollout.confirming), not a JS confirm() nor an inline handler.
    assert 'data-form="publish"' in html and "data-confirm=" not in html
    assert "onsubmit" not in html
    assert re.search(r'<script src="/static/js/confirm\.js"', html)


def test_markdown_keeps_images_of_the_dashboard_only(settings):
    from rollout.templatetags.rollout_tags import render_markdown

    settings.DASHBOARD_URL = "https://rollouts.example.com"
    html = render_markdown(
        "![ours](/static/favicon.svg) ![abs](https://rollouts.example.com/static/x.png) "
        "![pixel](https://tracker.example.net/p.gif) ![proto](//tracker.example.net/p.gif) "
        "![data](data:image/png;base64,AAAA) ![rel](static/favicon.svg) ![lookalike](https://rollouts.example.com.evil.net/p.gif)"
    )
    assert re.findall(r"<img[^>]*>", html) == [
        '<img alt="ours" src="/static/favicon.svg">',
        '<img alt="abs" src="https://rollouts.example.com/static/x.png">',
        '<img alt="pixel">',
        '<img alt="proto">',
        '<img alt="data">',
        '<img alt="rel">',
        '<img alt="lookalike">',
    ]


def test_communication_page_renders_no_external_image(client_for, rollout, users):
    from rollout.services import communication_create

    comm = communication_create(
        rollout=rollout,
        kind="status_update",
        title="Pixel",
        body="Hello ![t](https://tracker.example.net/p.gif?u=1)",
        actor=users[Role.ROLLOUT_ADMIN],
    )
    html = client_for(Role.ROLLOUT_ADMIN).get(f"/rollouts/{rollout.slug}/communications/{comm.pk}/").content.decode()
    assert "tracker.example.net" not in html
    assert '<img alt="t">' in html
