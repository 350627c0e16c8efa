"""`make run`'s process trio: web app, Celery worker and beat start together and Ctrl-C stops all three."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.processes
def test_run_script_serves_and_ctrl_c_leaves_no_process(tmp_path):
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_ENV"}
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="config.settings",
        PORT=str(port),
    )
    (ROOT / "var" / "celery" / "queue").mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "celery" / "processed").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    proc = subprocess.Popen(
        ["scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    pgid = os.getpgid(proc.pid)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)
    reader.start()

    def output() -> str:
        return b"".join(lines).decode(errors="replace")

    def wait_for(predicate, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what} did not happen; output so far:\n{output()}"
            time.sleep(0.3)

    def login_page() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as response:
                return "Log in" in response.read().decode()
        except OSError:
            return False

    try:
        wait_for(login_page, "the login page answering")
        wait_for(lambda: " ready." in output(), "the Celery worker starting")
        wait_for(lambda: "beat: Starting" in output(), "Celery beat starting")
        assert f"http://127.0.0.1:{port}/" in output()
        children = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 4  # the script, worker (with its pool), beat, runserver
        os.killpg(pgid, signal.SIGINT)  # what Ctrl-C does
        proc.wait(timeout=30)
        wait_for(lambda: not _group_alive(pgid), "every process exiting", timeout=20)
        assert "Stopping web app, worker and beat" in output()
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
