"""The journey harness can fail: the vendored axe-core is the pinned file, and each check catches what it is for."""

from __future__ import annotations

import hashlib

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.browser import AXE_FILE, AXE_SHA256, AXE_VERSION, format_violations, is_loopback_url


def test_vendored_axe_core_is_the_pinned_release():
    data = AXE_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == AXE_SHA256
    assert data.startswith(f"/*! axe v{AXE_VERSION}".encode())
    sums = (AXE_FILE.parent / "SHA256SUMS").read_text()
    assert f"{AXE_SHA256}  axe.min.js" in sums


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/", True),
        ("http://127.9.9.9/x", True),
        ("http://localhost:1234/", True),
        ("http://[::1]:80/", True),
        ("data:image/png;base64,AAAA", True),
        ("about:blank", True),
        ("https://cdn.jsdelivr.net/npm/bootstrap.css", False),
        ("http://10.0.0.1/", False),
        ("http://192.168.1.1/", False),
        ("http://example.invalid/", False),
        ("http://127.0.0.1.example.invalid/", False),
        ("ws://example.invalid/socket", False),
    ],
)
def test_loopback_rule(url, loopback):
    assert is_loopback_url(url) is loopback


def test_violations_read_as_a_list_of_rules_and_places():
    text = format_violations(
        "home (/)",
        [
            {
                "id": "color-contrast",
                "impact": "serious",
                "help": "Elements must meet minimum color contrast ratio thresholds",
                "helpUrl": "https://dequeuniversity.com/rules/axe/4.14/color-contrast?application=axeAPI",
                "nodes": [{"target": [".phase .small"], "html": '<div class="small">', "failureSummary": "Fix: 3.4"}],
            }
        ],
    )
    assert text.splitlines() == [
        f"axe-core {AXE_VERSION}: 1 serious/critical violation(s) on home (/)",
        "- [serious] color-contrast: Elements must meet minimum color contrast ratio thresholds "
        "(https://dequeuniversity.com/rules/axe/4.14/color-contrast)",
        "    at .phase .small",
        '      <div class="small">',
        "      Fix: 3.4",
    ]


@pytest.mark.browser
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_each_check_catches_what_it_is_for(start):
    """On the real login page, planted faults: an unnamed button (axe: critical), a describedby naming no element,
    a 900 px wide box at 390 px, a fetch to a non-loopback host (aborted by the route before it leaves chromium)."""
    j = start("harness-self-test", width=390)
    j.goto("/login/", "clean login page")
    assert j.problems == []
    assert j.guard.requests >= 3  # the page, its CSS and JS, and axe-core itself went through the route
    # A page landed on and left without a check is reported when the journey finishes.
    j.page.goto(j.url("/login/?next=/tenants/"))
    assert j.unchecked_pages() == [f"{j.base_url}/login/?next=/tenants/"]
    j.goto("/login/", "clean login page again")
    assert j.unchecked_pages() == [f"{j.base_url}/login/?next=/tenants/"]
    j.goto("/login/?next=/tenants/", "login, next tenants")
    assert j.unchecked_pages() == [] and j.problems == []
    j.page.evaluate(
        """() => {
          const b = document.createElement("button"); document.querySelector("main").appendChild(b);
          document.querySelector("#id_username").setAttribute("aria-describedby", "nowhere_helptext");
          const wide = document.createElement("div"); wide.style.width = "900px"; wide.textContent = "wide";
          document.querySelector("main").appendChild(wide);
        }"""
    )
    j.check("planted faults", screenshot=False)
    axe_report, idrefs, width = j.problems
    assert "[critical] button-name: Buttons must have discernible text" in axe_report
    assert "at #main > button\n      <button></button>" in axe_report
    assert idrefs == (
        'ids referred to but missing on planted faults: input#id_username aria-describedby="nowhere_helptext"'
    )
    assert width.splitlines() == [
        "planted faults scrolls sideways: 912 px wide in a 390 px viewport",
        "    div right edge 912 px",
    ]
    # The page's CSP stops a script's fetch (reported as a CSP violation); a navigation is not under the CSP: the
    # guard's route aborts it before it leaves chromium.
    failed = j.page.evaluate("() => fetch('http://example.invalid/beacon').then(() => 'sent', () => 'refused')")
    assert failed == "refused"
    with pytest.raises(PlaywrightError, match="ERR_BLOCKED_BY_CLIENT"):
        j.page.goto("http://example.invalid/page")
    assert j.guard.blocked == ["http://example.invalid/page"]
    assert j.csp_violations[0].endswith(
        "Connecting to 'http://example.invalid/beacon' violates the following Content Security Policy directive: "
        "\"connect-src 'self'\". The action has been blocked."
    )
    j.problems.clear()
    j.guard.blocked.clear()
    j.csp_violations.clear()
