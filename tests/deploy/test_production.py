"""The production path of the README's "Deploying" section, run for real on this checkout.

collectstatic under ``DJANGO_ENV=production``, gunicorn started with the shipped ``gunicorn.conf.py``
behind a (simulated) TLS proxy, the demo data, a login and a GET of every page the demo data has;
and Celery beat (alone and inside a worker) on a checkout without ``var/``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import environ
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEMO_USERS = [
    "rollout-admin",
    "product-lead",
    "support-lead",
    "compliance-lead",
    "sre-lead",
    "compliance-reviewer",
    "auditor",
]

pytestmark = pytest.mark.production


def _production_env(**extra: str) -> dict[str, str]:
    """The environment the README documents for every process of a deployment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_", "GUNICORN_", "PYTEST_"))}
    env.update(
        DJANGO_ENV="production",
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY="production-path-test-" + uuid.uuid4().hex,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        EMAIL_URL="consolemail://",
        CELERY_BROKER_URL=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        REDIS_URL=os.environ.get("REDIS_URL", ""),
        PYTHONUNBUFFERED="1",
        # Its own API throttle budgets in the shared Redis (token ids repeat across fresh databases).
        API_THROTTLE_KEY_PREFIX=f"rgd-production-test-{uuid.uuid4().hex}",
        # The walks log the demo users in with their password alone. Production enforces the second factor by
        # default (tests/rollout/test_mfa.py checks that default and the enforcement itself).
        MFA_ENFORCED="false",
    )
    env.update(extra)
    return env


class Process:
    """A child process whose merged output is collected as it runs; always stopped at the end."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._lines: list[bytes] = []
        threading.Thread(target=lambda: self._lines.extend(iter(self.proc.stdout.readline, b"")), daemon=True).start()

    @property
    def output(self) -> str:
        return b"".join(self._lines).decode(errors="replace")

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 90) -> object:
        deadline = time.monotonic() + timeout
        while True:
            found = predicate()
            if found:
                return found
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}) before {what}:\n{self.output[-6000:]}"
            assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s:\n{self.output[-6000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)


def _run(args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: int = 300) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
    )
    return done.stdout


# --- collectstatic ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("staticfiles")
    _run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], _production_env(STATIC_ROOT=str(root)))
    return root


def test_collectstatic_under_production_settings_writes_a_complete_manifest(static_root):
    manifest = json.loads((static_root / "staticfiles.json").read_text())["paths"]
    for name in [
        "favicon.svg",
        "vendor/bootstrap-5.3.9/bootstrap.min.css",
        "vendor/bootstrap-5.3.9/bootstrap.min.css.map",
        "vendor/bootstrap-5.3.9/bootstrap.bundle.min.js",
        "vendor/bootstrap-5.3.9/bootstrap.bundle.min.js.map",
        "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js",
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    ]:
        assert (static_root / manifest[name]).is_file(), name
    # The hashed CSS points at its hashed map, so a browser's devtools find it behind WhiteNoise.
    css = (static_root / manifest["vendor/bootstrap-5.3.9/bootstrap.min.css"]).read_text()
    assert css.rstrip().endswith(
        f"/*# sourceMappingURL={Path(manifest['vendor/bootstrap-5.3.9/bootstrap.min.css.map']).name} */"
    )


def test_vendored_bootstrap_is_the_pinned_release():
    folder = ROOT / "static" / "vendor" / "bootstrap-5.3.9"
    done = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {line.split()[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
    assert listed == {p.name for p in folder.iterdir()} - {"SHA256SUMS", "SOURCE", "LICENSE"}


# --- gunicorn + demo data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_database_url() -> Iterator[str]:
    """A database of its own for the deployment (dropped afterwards), migrated and seeded as the README says."""
    import psycopg

    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        pytest.skip("the production path runs on PostgreSQL (set DATABASE_URL=postgres://...)")
    config = environ.Env.db_url_config(base)
    name = f"test_{config['NAME']}_prodpath_{uuid.uuid4().hex[:8]}"
    admin = dict(host=config["HOST"], port=config["PORT"] or 5432, user=config["USER"], dbname="postgres")
    if config.get("PASSWORD"):
        admin["password"] = config["PASSWORD"]
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(base)
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    try:
        env = _production_env(DATABASE_URL=url)
        _run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
        _run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env)
        # Seeding is set-up, not the path under test: its follow-up tasks run in-process.
        _run([sys.executable, "manage.py", "seed_demo"], {**env, "CELERY_TASK_ALWAYS_EAGER": "true"})
        yield url
    finally:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def gunicorn_port(static_root, demo_database_url) -> Iterator[int]:
    env = _production_env(
        DATABASE_URL=demo_database_url,
        STATIC_ROOT=str(static_root),
        GUNICORN_BIND="127.0.0.1:0",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="2",
    )
    server = Process([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "config.wsgi:application"], cwd=ROOT, env=env)
    try:
        listening = server.wait_for(
            lambda: re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", server.output), "gunicorn listening"
        )
        server.wait_for(lambda: server.output.count("Booting worker") >= 2, "two workers booting")
        yield int(listening.group(1))
    finally:
        server.stop()
    errors = re.findall(r'^.*"[A-Z]+ [^"]*" 5\d\d .*$', server.output, flags=re.MULTILINE)
    assert errors == [], server.output[-6000:]


class Browser:
    """A cookie-keeping HTTP client that talks to gunicorn as the TLS proxy would (X-Forwarded-Proto: https)."""

    def __init__(self, port: int):
        self.port = port
        self.origin = f"https://127.0.0.1:{port}"
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, *, form: dict | None = None, headers: dict | None = None, proxied: bool = True
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        sent = {"Host": f"127.0.0.1:{self.port}"}
        if proxied:
            sent["X-Forwarded-Proto"] = "https"
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent.update(
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Origin": self.origin,
                    "Referer": self.origin + path,
                }
            )
        sent.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            content = response.read()
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            for morsel in SimpleCookie(header).values():
                self.cookies[morsel.key] = morsel.value
        return response.status, response.headers, content

    def login(self, username: str, password: str = "demo") -> None:
        status, _, _ = self.request("GET", "/login/")
        assert status == 200
        form = {"username": username, "password": password, "csrfmiddlewaretoken": self.cookies["csrftoken"]}
        status, headers, content = self.request("POST", "/login/", form=form)
        assert (status, headers.get("Location")) == (302, "/"), (status, content[:2000])


def test_gunicorn_serves_the_login_page_with_its_static_files(gunicorn_port):
    browser = Browser(gunicorn_port)
    status, headers, content = browser.request("GET", "/login/")
    assert status == 200
    html = content.decode()
    css = re.search(r'href="(/static/vendor/bootstrap-5\.3\.9/bootstrap\.min\.[0-9a-f]{12}\.css)"', html)
    assert css, html[:2000]
    status, headers, _ = browser.request("GET", css.group(1))
    assert status == 200
    assert headers["Cache-Control"] == "max-age=315360000, public, immutable"
    # Plain http (no proxy in front) is sent to https, as SECURE_SSL_REDIRECT promises.
    status, headers, _ = browser.request("GET", "/login/", proxied=False)
    assert (status, headers["Location"]) == (301, f"https://127.0.0.1:{gunicorn_port}/login/")


def _header_problems(headers: http.client.HTTPMessage) -> list[str]:
    """What a logged-in 200 lacks of the headers every authenticated response carries."""
    problems = []
    if "no-store" not in (headers.get("Cache-Control") or ""):
        problems.append("no Cache-Control: no-store")
    if (headers.get("Content-Type") or "").startswith("text/html"):
        csp = {
            d.split()[0]: d.split()[1:] for d in (headers.get("Content-Security-Policy") or "").split(";") if d.strip()
        }
        if csp.get("script-src") != ["'self'"]:
            problems.append(f"script-src {csp.get('script-src')}")
        if not headers.get("Permissions-Policy"):
            problems.append("no Permissions-Policy")
    return problems


def test_every_page_of_the_demo_data_answers_200_through_gunicorn(gunicorn_port, demo_database_url, static_root):
    listing = json.loads(
        _run(
            [sys.executable, "-m", "tests.deploy.demo_urls"],
            _production_env(DATABASE_URL=demo_database_url, STATIC_ROOT=str(static_root)),
        )
    )
    assert listing["unresolved"] == [], "URL patterns the walk cannot fill in from the demo data"
    # The demo data has no incident yet; every other pattern has at least one demo object.
    assert set(listing["empty"]) <= {"rollout:incident", "rollout:incident_step", "rollout:incident_close"}
    admin = Browser(gunicorn_port)
    admin.login("admin")
    by_role: dict[str, Browser] = {}
    api_auth = {"Authorization": f"Bearer {listing['token']}"}
    outcomes: dict[str, list[str]] = {"200": [], "post-only": [], "failed": []}
    for url in listing["urls"]:
        name, path = url["name"], url["path"]
        tokened = name.startswith(("api:", "ofrep:")) or name == "metrics"
        extra = api_auth if tokened and name not in {"api:docs", "api:redoc"} else {}
        status, headers, _ = admin.request("GET", path, headers=extra)
        who = "admin"
        if status == 403:
            # Some pages belong to one role (the superuser holds none): one of the demo roles must see it.
            for username in DEMO_USERS:
                if username not in by_role:
                    by_role[username] = Browser(gunicorn_port)
                    by_role[username].login(username)
                status, headers, _ = by_role[username].request("GET", path, headers=extra)
                who = username
                if status != 403:
                    break
        if status == 200:
            outcomes["200"].append(path)
            problems = _header_problems(headers)
            if problems:
                outcomes["failed"].append(f"{name} {path}: {problems}")
        elif status == 405 and "GET" not in headers.get("Allow", ""):
            outcomes["post-only"].append(path)
        else:
            outcomes["failed"].append(f"{status} {name} {path} (as {who})")
    assert outcomes["failed"] == []
    assert len(outcomes["200"]) >= 150, outcomes


# --- Celery beat on a fresh checkout ------------------------------------------------------------


@pytest.fixture
def fresh_checkout(tmp_path) -> Path:
    """The application as a new deployment has it: no var/ folder (only the Makefile creates one)."""
    copy = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "staticfiles", "tests", "benchmarks", "__pycache__", ".pytest_cache", "*.egg-info"
        ),
    )
    assert not (copy / "var").exists()
    return copy


def _celery(checkout: Path, *args: str, **env: str) -> Process:
    # PYTHONPATH puts the copy's code ahead of the editable install of this checkout.
    environment = _production_env(DATABASE_URL=os.environ.get("DATABASE_URL", ""), PYTHONPATH=str(checkout), **env)
    return Process([str(BIN / "celery"), "-A", "config", *args], cwd=checkout, env=environment)


def _schedule_files(folder: Path, stem: str) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{stem}*")) if folder.is_dir() else []


@pytest.mark.redis
def test_beat_runs_on_a_checkout_without_var(fresh_checkout):
    beat = _celery(fresh_checkout, "beat", "--loglevel=DEBUG")
    try:
        beat.wait_for(lambda: "beat: Starting..." in beat.output, "beat starting")
        # Ticking: the scheduler has loaded its entries and sleeps until the next one is due.
        beat.wait_for(lambda: "beat: Waking up in" in beat.output, "beat ticking")
        assert _schedule_files(fresh_checkout / "var", "celerybeat-schedule"), beat.output
        assert "evaluations-sweep-triggers" in beat.output
        assert beat.proc.poll() is None
    finally:
        beat.stop()
    assert "Traceback" not in beat.output, beat.output


@pytest.mark.redis
def test_worker_with_embedded_beat_writes_the_schedule_where_the_setting_says(fresh_checkout, tmp_path):
    schedule = tmp_path / "not" / "yet" / "there" / "beat-schedule"
    queue = f"rgd-production-test-{uuid.uuid4().hex[:8]}"
    worker = _celery(
        fresh_checkout,
        "worker",
        "-B",
        "--loglevel=INFO",
        "--concurrency=1",
        "--pool=solo",
        f"--queues={queue}",
        f"--hostname={queue}@%h",
        CELERY_BEAT_SCHEDULE_FILENAME=str(schedule),
    )
    try:
        worker.wait_for(lambda: " ready." in worker.output, "the worker ready")
        worker.wait_for(lambda: "beat: Starting..." in worker.output, "the embedded beat starting")
        worker.wait_for(lambda: _schedule_files(schedule.parent, schedule.name), "the schedule file written")
        assert not (fresh_checkout / "var").exists() or not _schedule_files(fresh_checkout / "var", "celerybeat")
        assert worker.proc.poll() is None
    finally:
        worker.stop()
    assert "Traceback" not in worker.output, worker.output
