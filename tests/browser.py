"""Playwright on Debian's chromium (Playwright's own browser download does not work here).

Besides opening a page, this is the harness of the browser journeys (tests/journeys/):

* a request guard: every request the browser makes goes through ``context.route``; one to a host outside the
  loopback range is aborted and fails the test (``RequestGuard``);
* axe-core, vendored under ``tests/vendor/`` (pinned, its SHA-256 checked), injected into each checked page with
  ``page.add_script_tag`` from a same-origin URL the route answers (so the page's CSP, ``script-src 'self'``, is
  left as the dashboard sends it); serious and critical violations fail the test, printed readably;
* per checked page also: no ``aria-describedby``/``aria-labelledby``/``aria-controls``/``label[for]`` naming a
  missing id, no sideways scrolling (``document.scrollingElement.scrollWidth`` within the viewport), no CSP
  violation and no 5xx answer, and a screenshot in the git-ignored ``var/artifacts/journeys/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connections

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

ROOT = Path(__file__).resolve().parent.parent
AXE_VERSION = "4.14.1"
AXE_FILE = Path(__file__).resolve().parent / "vendor" / f"axe-core-{AXE_VERSION}" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
# Answered by the request guard's route from AXE_FILE; the dashboard itself has no such URL.
AXE_PATH = "/__browser-tests__/axe.min.js"
AXE_BLOCKING_IMPACTS = ("serious", "critical")
ARTIFACTS = Path(os.environ.get("JOURNEY_ARTIFACTS", ROOT / "var" / "artifacts" / "journeys"))


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")


def is_loopback_url(url: str) -> bool:
    """True for URLs that never leave the machine: loopback hosts, and the browser's own schemes."""
    parts = urlsplit(url)
    if parts.scheme in {"data", "blob", "about", "chrome", "chrome-error", "devtools"}:
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class RequestGuard:
    """Aborts and records every request to a non-loopback host; serves the vendored axe-core at AXE_PATH."""

    blocked: list[str] = field(default_factory=list)
    requests: int = 0

    def install(self, context) -> None:
        # Every HTTP(S) request of every page of the context passes here before it is sent. (Not the "request"
        # event: it also reports requests the page's CSP refused, which never left the browser.)
        context.route("**/*", self._handle)
        context.on("page", lambda page: page.on("websocket", self._websocket))

    def _websocket(self, socket) -> None:
        if not is_loopback_url(socket.url) and socket.url not in self.blocked:
            self.blocked.append(socket.url)

    def _handle(self, route) -> None:
        url = route.request.url
        self.requests += 1
        if not is_loopback_url(url):
            if url not in self.blocked:
                self.blocked.append(url)
            route.abort("blockedbyclient")
            return
        if urlsplit(url).path == AXE_PATH:
            route.fulfill(status=200, path=str(AXE_FILE), content_type="text/javascript")
            return
        route.fallback()

    def assert_clean(self) -> None:
        assert not self.blocked, "requests to non-loopback hosts:\n  " + "\n  ".join(self.blocked)


def axe_source_ok() -> bool:
    return hashlib.sha256(AXE_FILE.read_bytes()).hexdigest() == AXE_SHA256


def format_violations(label: str, violations: list[dict]) -> str:
    lines = [f"axe-core {AXE_VERSION}: {len(violations)} serious/critical violation(s) on {label}"]
    for v in violations:
        lines.append(f"- [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl'].split('?')[0]})")
        for node in v["nodes"][:8]:
            target = " ".join(str(t) for t in node["target"])
            summary = " ".join(node.get("failureSummary", "").split())
            lines.append(f"    at {target}\n      {node['html'][:200]}\n      {summary[:300]}")
        if len(v["nodes"]) > 8:
            lines.append(f"    ... and {len(v['nodes']) - 8} more")
    return "\n".join(lines)


# Ids an attribute refers to that no element of the page carries.
_MISSING_IDREFS_JS = """() => {
  const out = [];
  const attrs = ["aria-describedby", "aria-labelledby", "aria-controls", "aria-owns", "aria-errormessage"];
  for (const el of document.querySelectorAll(attrs.map(a => `[${a}]`).join(","))) {
    for (const a of attrs) {
      for (const id of (el.getAttribute(a) || "").split(/\\s+/).filter(Boolean)) {
        if (!document.getElementById(id)) out.push(`${el.tagName.toLowerCase()}#${el.id || "?"} ${a}="${id}"`);
      }
    }
  }
  for (const el of document.querySelectorAll("label[for]")) {
    if (!document.getElementById(el.htmlFor)) out.push(`label for="${el.htmlFor}" (${el.textContent.trim()})`);
  }
  return out;
}"""


# The innermost elements sticking out past the viewport's right edge (outside any scrolling box), to say why.
_WIDE_ELEMENTS_JS = """() => {
  const vw = window.innerWidth, out = [];
  const clipped = el => { for (let p = el.parentElement; p; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX; if (o === "auto" || o === "scroll" || o === "hidden") return true; }
    return false; };
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.right > vw + 1 && r.width > 0 && !clipped(el)
        && ![...el.children].some(c => c.getBoundingClientRect().right > vw + 1)) {
      const cls = typeof el.className === "string" && el.className.trim()
        ? "." + el.className.trim().split(/\\s+/).join(".") : "";
      out.push(`${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${cls} right edge ${Math.round(r.right)} px`);
      if (out.length >= 5) break;
    }
  }
  return out;
}"""


@contextlib.contextmanager
def _playwright_browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("browser test needs Debian's chromium (apt-get install chromium)", pytrace=False)
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread, which Django's async-safety check
    # mistakes for async code; the live server does its ORM work in its own thread.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
            try:
                yield browser
            finally:
                browser.close()
                # Inside sync_playwright() Django's context-local connection storage hands the test another
                # connection than the one pytest-django closes; left open, the test database cannot be dropped.
                connections.close_all()
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@contextlib.contextmanager
def browser_page(base_url: str) -> Iterator[object]:
    """A page on a fresh context; every request leaving the loopback range fails the test."""
    with _playwright_browser() as browser:
        guard = RequestGuard()
        context = browser.new_context(base_url=base_url, viewport={"width": 1366, "height": 900})
        guard.install(context)
        page = context.new_page()
        page.on("websocket", guard._websocket)
        page.set_default_timeout(15_000)
        yield page
        guard.assert_clean()


def login(page, username: str, password: str = "demo") -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "page"


class Journey:
    """A browser session walking the dashboard as one kind of user, checking every page it stops at.

    ``check(label)`` runs axe-core and the page checks on what is on screen now and saves a screenshot;
    ``goto(path, label)`` navigates and checks. Problems are collected and ``finish()`` fails on them, so one run
    reports every page's problems at once. Native ``confirm()`` dialogs (``data-confirm`` forms) are accepted and
    their questions kept in ``dialogs``.
    """

    def __init__(self, browser, base_url: str, name: str, *, width: int = 1280, height: int = 900):
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.guard = RequestGuard()
        self.context = browser.new_context(base_url=self.base_url, viewport={"width": width, "height": height})
        self.guard.install(self.context)
        self.page = self.context.new_page()
        self.page.on("websocket", self.guard._websocket)
        self.page.set_default_timeout(15_000)
        self.problems: list[str] = []
        self.visited: list[str] = []
        self.dialogs: list[str] = []
        self.server_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.shots = ARTIFACTS / name
        shutil.rmtree(self.shots, ignore_errors=True)
        self.shots.mkdir(parents=True, exist_ok=True)
        self._shot_no = 0
        # Every page the journey lands on (main-frame navigations) and the ones ``check`` looked at: a page visited
        # but never checked fails the journey, so axe-core and the page checks cover every page a journey sees.
        self.navigated: list[str] = []
        self.checked_urls: set[str] = set()
        self.page.on("dialog", self._dialog)
        self.page.on("console", self._console)
        self.page.on("response", self._response)
        self.page.on("framenavigated", self._navigated)

    # --- events --------------------------------------------------------------------------------------------------
    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def _console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(f"{self.page.url}: {message.text}")

    def _navigated(self, frame) -> None:
        # The dashboard's own pages only: another loopback server a journey passes through (the test identity
        # provider's login pages) is not the dashboard's to make accessible.
        if frame.parent_frame is None and frame.url.startswith(self.base_url + "/"):
            self.navigated.append(frame.url.split("#")[0])

    def unchecked_pages(self) -> list[str]:
        """Pages the journey landed on that no ``check`` looked at, in the order first visited."""
        return list(dict.fromkeys(u for u in self.navigated if u not in self.checked_urls))

    def _response(self, response) -> None:
        if response.status >= 500:
            self.server_errors.append(f"{response.status} {response.request.method} {response.url}")

    # --- navigation ----------------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def goto(self, path: str, label: str | None = None, **check) -> object:
        response = self.page.goto(self.url(path))
        assert response is not None and response.status < 400, f"GET {path}: {response and response.status}"
        self.check(label or path, **check)
        return response

    def login(self, username: str, password: str = "demo") -> None:
        self.page.goto(self.url("/login/"))
        self.check(f"login-{username}", screenshot=False)
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("[data-testid=whoami]", state="attached")
        assert username in self.page.inner_text("[data-testid=whoami]")

    def logout(self) -> None:
        self.open_nav()
        self.page.click("button:has-text('Log out')")
        self.page.wait_for_url("**/login/**")

    def open_nav(self) -> None:
        """On a narrow screen the menu is collapsed behind its toggler: open it."""
        # Only once the stylesheet applies is the toggler hidden on a wide screen: before the load event (an element
        # awaited right after a submit can appear first) it shows, then vanishes under the click that waits for it.
        self.page.wait_for_load_state()
        toggler = self.page.locator(".navbar-toggler")
        if toggler.count() and toggler.is_visible() and toggler.get_attribute("aria-expanded") != "true":
            toggler.click()
            self.page.wait_for_selector("#main-nav.show")

    def nav(self, text: str) -> None:
        """Follow a link of the main menu, as a user would (opening it first on a small screen)."""
        self.open_nav()
        self.page.locator("#main-nav").get_by_role("link", name=text, exact=True).click()
        self.page.wait_for_load_state()

    # --- checks --------------------------------------------------------------------------------------------------
    def check(self, label: str, *, screenshot: bool = True, full_page: bool = True) -> None:
        page = self.page
        page.wait_for_load_state()
        self.visited.append(f"{label}: {page.url}")
        self.checked_urls.add(page.url.split("#")[0])
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.add_script_tag(url=AXE_PATH)
        result = page.evaluate(
            """async () => {
              const r = await axe.run(document, {resultTypes: ["violations"]});
              return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                nodes: v.nodes.map(n => ({target: n.target, html: n.html, failureSummary: n.failureSummary}))}));
            }"""
        )
        blocking = [v for v in result if v["impact"] in AXE_BLOCKING_IMPACTS]
        if blocking:
            self.problems.append(format_violations(f"{label} ({page.url})", blocking))
        missing = page.evaluate(_MISSING_IDREFS_JS)
        if missing:
            self.problems.append(f"ids referred to but missing on {label}: " + "; ".join(missing))
        width, viewport = page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")
        if width > viewport:
            culprits = page.evaluate(_WIDE_ELEMENTS_JS)
            self.problems.append(
                f"{label} scrolls sideways: {width} px wide in a {viewport} px viewport"
                + "".join(f"\n    {c}" for c in culprits)
            )
        if screenshot:
            self.screenshot(label, full_page=full_page)

    def screenshot(self, label: str, *, full_page: bool = True, path: Path | None = None) -> Path:
        self._shot_no += 1
        target = path or self.shots / f"{self._shot_no:02d}-{_slug(label)}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(target), full_page=full_page)
        return target

    def finish(self) -> None:
        problems = list(self.problems)
        unchecked = self.unchecked_pages()
        if unchecked:
            problems.append("pages visited but never checked (axe-core, ids, width):\n  " + "\n  ".join(unchecked))
        if self.guard.blocked:
            problems.append("requests to non-loopback hosts:\n  " + "\n  ".join(self.guard.blocked))
        if self.csp_violations:
            problems.append("CSP violations:\n  " + "\n  ".join(self.csp_violations))
        if self.server_errors:
            problems.append("server errors:\n  " + "\n  ".join(self.server_errors))
        assert not problems, f"journey {self.name!r}:\n" + "\n\n".join(problems)


@contextlib.contextmanager
def journeys(base_url: str) -> Iterator[object]:
    """``with journeys(url) as start: j = start("auditor", width=390)``: Journeys on one chromium; each is its own
    browser context (own cookies), checked for problems when the block ends."""
    started: list[Journey] = []
    t0 = time.monotonic()
    with _playwright_browser() as browser:

        def start(name: str, **kwargs) -> Journey:
            journey = Journey(browser, base_url, name, **kwargs)
            started.append(journey)
            return journey

        yield start
        for journey in started:
            journey.context.close()
    for journey in started:
        journey.finish()
    elapsed = time.monotonic() - t0
    if started:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with (ARTIFACTS / "timings.txt").open("a") as out:
            out.write(f"{started[0].name}\t{elapsed:.1f} s\t{sum(len(j.visited) for j in started)} pages checked\n")
