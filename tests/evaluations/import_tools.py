"""The real tools behind the import tests (issue 12): Inspect AI's ``inspect eval`` and the promptfoo CLI.

Both run offline on suites of our own: ``inspect_task/support_eval.py`` (no model: the agent calls
``mockllm/model`` with custom outputs) and ``promptfoo/promptfooconfig.yaml`` (a local JavaScript provider).
promptfoo comes from npm, pinned by ``promptfoo/package.json`` and ``package-lock.json``, installed by
``npm ci --omit=optional`` into the git-ignored ``promptfoo/node_modules`` the first time a session needs it
(under a file lock, so pytest-xdist's workers install it once); a checkout whose install matches the lock file
reuses it. Optional dependencies are promptfoo's provider SDKs (1.4 GB with them, 276 MB without); the one
optional package it needs offline, libsql's linux-x64 binding, is a direct dependency in ``package.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from django.utils import timezone

from tests.npm import npm_ci

HERE = Path(__file__).parent
TASK_DIR = HERE / "inspect_task"
PROMPTFOO_DIR = HERE / "promptfoo"
PROMPTFOO_BIN = PROMPTFOO_DIR / "node_modules" / ".bin" / "promptfoo"


# --- Inspect AI -------------------------------------------------------------------------------------------------


def inspect_env() -> dict[str, str]:
    """Nothing calls home: no control server, no telemetry hook, hubs offline, no colour. Without
    PYTEST_CURRENT_TEST: Inspect leaves the git revision out of logs made while it is set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSPECT_", "PYTEST_"))}
    env.update(
        INSPECT_EVAL_CTL_SERVER="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        NO_COLOR="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def inspect_eval(log_dir: Path, *args: str) -> subprocess.Popen:
    """``inspect eval support_eval.py --model none ...`` in the background. The task file is given relative to
    the working directory: inspect 0.3.285 refuses an absolute path ("Non-relative patterns are unsupported")."""
    command = [
        str(Path(sys.executable).with_name("inspect")),
        "eval",
        "support_eval.py",
        "--model",
        "none",
        "--display",
        "none",
        "--log-dir",
        str(log_dir),
        *args,
    ]
    return subprocess.Popen(
        command, cwd=TASK_DIR, env=inspect_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, log_dir: Path, what: str) -> Path:
    out, _ = proc.communicate(timeout=600)
    files = sorted(log_dir.glob("*.eval")) + sorted(log_dir.glob("*.json"))
    assert len(files) == 1, f"{what}: inspect eval exited {proc.returncode}\n{out[-3000:]}"
    return files[0]


# --- promptfoo -------------------------------------------------------------------------------------------------


def install_promptfoo() -> Path:
    """``npm ci --omit=optional`` from the committed lock file, once per checkout (again when it changes)."""
    started = time.monotonic()
    if npm_ci(
        PROMPTFOO_DIR,
        installed=PROMPTFOO_BIN,
        what="promptfoo for the import tests",
        args=("--omit=optional",),
        timeout=1200,
    ):
        print(f"promptfoo installed by npm ci in {time.monotonic() - started:.1f} s")
    return PROMPTFOO_BIN


def promptfoo_env(config_dir: Path) -> dict[str, str]:
    """Offline: no telemetry, no update check, no sharing, no remote generation; its database in a temp dir."""
    return {
        **os.environ,
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_DISABLE_SHARING": "1",
        "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
        "PROMPTFOO_DISABLE_REDTEAM_REMOTE_GENERATION": "1",
        "PROMPTFOO_CONFIG_DIR": str(config_dir),
        "NO_COLOR": "1",
        "FORCE_COLOR": "0",
    }


def promptfoo_eval(output: Path, *, config: Path | None = None) -> Path:
    """``promptfoo eval -c promptfooconfig.yaml -o OUTPUT`` on our suite: a real results file."""
    binary = install_promptfoo()
    result = subprocess.run(
        [
            str(binary),
            "eval",
            "-c",
            str(config or PROMPTFOO_DIR / "promptfooconfig.yaml"),
            "-o",
            str(output),
            "--no-cache",
            "--no-progress-bar",
            "--no-table",
        ],
        cwd=PROMPTFOO_DIR,
        env=promptfoo_env(output.parent / "promptfoo-home"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # promptfoo exits 100 when some test failed (ours has failing tests on purpose), 0 when all passed.
    assert result.returncode in (0, 100) and output.exists(), f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return output


# --- The canary the files land in ---------------------------------------------------------------------------------


def backdate_phase(rollout, kind: str, since: dt.datetime | None = None) -> None:
    """Make the phase's current activity start ``since`` (a day ago by default): files the tools wrote earlier
    in the session then end inside it, as a harness's results do."""
    since = since or timezone.now() - dt.timedelta(days=1)
    phase = rollout.phases.get(kind=kind)
    type(phase).objects.filter(pk=phase.pk).update(entered_at=since)
    if hasattr(phase, "periods"):  # activity periods: the open one
        phase.periods.filter(exited_at__isnull=True).update(entered_at=since)


def results_document(path: Path) -> dict:
    return json.loads(path.read_text())
