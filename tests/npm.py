"""``npm ci`` of a folder of the test suite from its committed ``package-lock.json``, once per checkout.

Under a file lock in the folder, so pytest-xdist's workers install once; a ``node_modules`` stamped with the lock
file's digest is reused, and installed again when the lock file changes. The tools it installs (promptfoo for the
import tests, oidc-provider for the sign-in tests) live in the git-ignored ``<folder>/node_modules``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path


def npm_ci(folder: Path, *, installed: Path, what: str, args: tuple[str, ...] = (), timeout: int = 600) -> bool:
    """Install ``folder``'s lock file unless ``installed`` (a path the install creates) is there from the same lock.

    Returns whether it ran ``npm ci``."""
    stamp = folder / "node_modules" / ".rgd-lock-sha256"
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
        if installed.exists() and stamp.exists() and stamp.read_text() == digest:
            return False
        npm = shutil.which("npm")
        assert npm, f"npm (Node.js 20) is needed to install {what}"
        result = subprocess.run(
            [npm, "ci", *args, "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"],
            cwd=folder,
            env={**os.environ, "npm_config_update_notifier": "false"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        stamp.write_text(digest)
        return True
