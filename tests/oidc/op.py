"""The test identity provider (issue 13): ``provider.mjs`` (panva's oidc-provider, pinned by ``package-lock.json``)
as its own Node process on a free loopback port, and a small client for its admin endpoints.

``npm ci`` installs it into the git-ignored ``tests/oidc/node_modules`` (``.ci/run`` does that before the tests; a
checkout without it installs on first use, under a file lock so pytest-xdist's workers install once; a checkout
whose install matches the lock file reuses it). The tests reach the provider over loopback only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.npm import npm_ci

HERE = Path(__file__).parent
PROVIDER_JS = HERE / "provider.mjs"
MODULES = HERE / "node_modules"


def install() -> None:
    """``npm ci`` from the committed lock file, once per checkout (again when the lock file changes)."""
    npm_ci(HERE, installed=MODULES / "oidc-provider", what="the test identity provider (tests/oidc/)")


@dataclass
class TestProvider:
    """A running ``provider.mjs``: its issuer URL and its admin endpoints."""

    issuer: str
    admin_token: str
    process: subprocess.Popen
    log_path: Path
    clients: list[dict] = field(default_factory=list)

    __test__ = False  # not a test class for pytest

    def _call(self, method: str, path: str, body=None) -> object:
        response = requests.request(
            method,
            f"{self.issuer}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    def set_users(self, *users: dict) -> None:
        """Replace the provider's users: dicts with login, password, sub, name, email, groups, amr."""
        self._call("PUT", "/_admin/users", list(users))

    def spoil_id_tokens(self, how: str | None) -> None:
        """``"tampered"``, ``"expired"``, ``"wrong_aud"``, or None for honest ID tokens again."""
        self._call("PUT", "/_admin/switches", {"id_token": how})

    def events(self, type_: str | None = None) -> list[dict]:
        return [e for e in self._call("GET", "/_admin/events") if type_ is None or e["type"] == type_]

    def clear_events(self) -> None:
        self._call("DELETE", "/_admin/events")

    def register_client(self, *, redirect_uris: list[str], post_logout_redirect_uris: list[str] = ()) -> dict:
        """Dynamic client registration (RFC 7591) with the admin token as initial access token: a confidential
        web client with client_secret_basic, PKCE (the provider requires it of every client). Returns the
        provider's answer (client_id, client_secret, ...)."""
        client = self._call(
            "POST",
            "/reg",
            {
                "client_name": "Rollout Governance Dashboard",
                "redirect_uris": list(redirect_uris),
                "post_logout_redirect_uris": list(post_logout_redirect_uris),
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
                "scope": "openid profile email groups",
            },
        )
        self.clients.append(client)
        return client

    def discovery(self) -> dict:
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=30).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process.stdout.close()

    def log(self) -> str:
        return self.log_path.read_text()


def start(*, timeout: float = 60.0) -> TestProvider:
    """Start ``node provider.mjs`` on a free loopback port and wait for its discovery document."""
    install()
    node = shutil.which("node")
    assert node, "node (Node.js 20) is needed to run the test identity provider (tests/oidc/)"
    token = secrets.token_urlsafe(24)
    # The provider's warnings and errors go to a file (a pipe nobody reads could fill up and stall it).
    log = tempfile.NamedTemporaryFile(prefix="rgd-oidc-provider-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [node, str(PROVIDER_JS)],
        cwd=HERE,
        env={**os.environ, "OIDC_TEST_ADMIN_TOKEN": token, "PORT": "0", "NODE_ENV": "test"},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()  # the provider prints one JSON line once it listens
    if not line:
        process.wait(timeout=10)
        raise AssertionError(f"the test identity provider did not start: {Path(log.name).read_text()[-3000:]}")
    provider = TestProvider(
        issuer=json.loads(line)["issuer"], admin_token=token, process=process, log_path=Path(log.name)
    )
    while True:
        try:
            assert provider.discovery()["issuer"] == provider.issuer
            return provider
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                provider.stop()
                raise
            time.sleep(0.2)
