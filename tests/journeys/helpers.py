"""What the journeys share: the demo's slugs, read-only assertions, verifying an export with the real command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from rollout.demo import MAIN_SLUG, SECOND_SLUG

ROOT = Path(__file__).resolve().parents[2]
MAIN = f"/rollouts/{MAIN_SLUG}/"
SECOND = f"/rollouts/{SECOND_SLUG}/"

# Paths of pages or endpoints that change something: a read-only user is never offered a link to one.
WRITE_PATH = re.compile(
    r"/(new|edit|kill-switch|rollback|decide|apply|withdraw|tick|reopen|close|release|run|reassign|sign-off"
    r"|approvers|plan|escalation|success-criteria|steps/\d+)/(\?|$)"
)


def write_controls(page) -> list[str]:
    """Forms that post (other than logging out and exporting the ledger) and links to write pages, on this page."""
    found = page.evaluate(
        """() => {
          const out = [];
          for (const f of document.querySelectorAll("form")) {
            if ((f.getAttribute("method") || "get").toLowerCase() !== "post") continue;
            const action = new URL(f.getAttribute("action") || location.href, location.href).pathname;
            if (action === "/logout/" || action === "/audit/export/") continue;
            out.push(`form posting to ${action}: ${f.innerText.trim().slice(0, 80)}`);
          }
          for (const a of document.querySelectorAll("a[href]")) out.push(`link ${new URL(a.href).pathname}`);
          return out;
        }"""
    )
    return [f for f in found if not f.startswith("link ") or WRITE_PATH.search(f.removeprefix("link "))]


def verify_export(path: Path) -> subprocess.CompletedProcess:
    """``manage.py verify_audit_log --file PATH``, no flag, in its own process as an auditor would run it offline.

    It reads only the file; the database it is pointed at (the journey's environment) is never queried."""
    return subprocess.run(
        [sys.executable, "manage.py", "verify_audit_log", "--file", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        check=False,
    )
