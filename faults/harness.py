"""The fault suite's plumbing: its own Redis, a throw-away PostgreSQL database, gunicorn, Celery worker and beat,
an HTTP client, and the "nothing lost" checks every scenario ends with.

Everything listens on 127.0.0.1 only, on ports picked free at start. Every
process is started in its own session and killed (its whole group) at the end,
whatever happens; the database is dropped. A watchdog ends the suite after
``FAULTS_DEADLINE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.cookiejar
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``predicate`` until truthy or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    logfile: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        handle = self.logfile.open("ab")
        self.popen = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def children(self) -> list[int]:
        """Live child processes (a killed child not yet reaped is a zombie: not counted)."""
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split() if _alive(int(p))]

    def kill_group(self, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=wait)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self, wait: float = 15.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL for what is left."""
        self.kill_group(signal.SIGTERM, wait)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@dataclass
class Http:
    """A tiny client for gunicorn: JSON to the API, and a logged-in session for the pages."""

    base: str
    timeout: float = 30.0
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})  # noqa: S310
        try:
            with self.opener.open(req, timeout=self.timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
        except (urllib.error.URLError, OSError) as exc:
            return 0, {}, str(exc).encode()

    def api(self, method: str, path: str, token: str, payload: Any = None) -> tuple[int, dict[str, str], Any]:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        status, headers_out, raw = self.request(method, path, body, headers)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw[:200]
        return status, headers_out, data

    def csrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "csrftoken"), "")

    def login(self, username: str, password: str) -> bool:
        status, _h, raw = self.request("GET", "/login/")
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', raw)
        if status != 200 or not match:
            return False
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1).decode()}
        ).encode()
        status, _h, _raw = self.request(
            "POST", "/login/", form, {"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base}
        )
        return status == 302

    def post_form(self, path: str, data: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        form = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": self.csrf()}).encode()
        return self.request(
            "POST", path, form, {"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + path}
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def problem_503(status: int, headers: dict[str, str], data: Any) -> bool:
    """A well-formed 503: problem+json with Retry-After."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return (
        status == 503
        and lowered.get("content-type", "").startswith("application/problem+json")
        and lowered.get("retry-after", "").isdigit()
        and isinstance(data, dict)
        and data.get("status") == 503
    )


_run_numbers = itertools.count(1)


def run_payload(
    slug: str,
    *,
    prefix: str,
    outputs: int = 3,
    arm: str = "baseline",
    compensations: int = 2,
    finished: dt.datetime | None = None,
    conversations: int = 100,
) -> dict[str, Any]:
    """A run as the harness sends it, finished a moment ago (inside the canary's current activity period)."""
    finished = finished or dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=500)
    return {
        "run_id": f"{prefix}-{next(_run_numbers):06d}",
        "rollout": slug,
        "phase": "canary",
        "arm": arm,
        "started_at": (finished - dt.timedelta(minutes=30)).isoformat(),
        "finished_at": finished.isoformat(),
        "conversations": conversations,
        "guardrail_compensations": compensations,
        "metrics": {"task_success_rate": 0.9, "latency_p95_ms": 1500.0},
        "harness_version": "faults-1",
        "outputs": [{"conversation_id": f"c{k}", "transcript_excerpt": "hello"} for k in range(outputs)],
    }


class Suite:
    """Owns every process and the database; ``close`` undoes everything."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="rgd-faults-"))
        self.db = f"rgd_faults_{os.getpid()}_{int(time.time())}"
        self.redis_port = free_port()
        self.web_port = free_port()
        self.procs: list[Proc] = []
        self.redis: Proc | None = None
        self.web: Proc | None = None
        self.worker: Proc | None = None
        self.beat: Proc | None = None
        self._worker_names = itertools.count(1)
        self._closed = False
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))},
            "DJANGO_ENV": "development",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{self.db}",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/1",
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "EMAIL_URL": "dummymail://",
            "LOG_LEVEL": "WARNING",
            # Short enough for a ten-minute suite; production defaults are in the README.
            "CELERY_VISIBILITY_TIMEOUT": "30",
            "OUTBOX_RELAY_SECONDS": "5",
            "WEBHOOK_RETRY_BASE_SECONDS": "1",
            "WEBHOOK_MAX_ATTEMPTS": "4",
            "WEBHOOK_TIMEOUT_SECONDS": "2",
            "RETENTION_BATCH_SIZE": "1000",
            "RETENTION_BATCH_PAUSE_SECONDS": "0.05",
            "PYTHONUNBUFFERED": "1",
        }

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            ["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", db, "-Atc", sql],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.strip()

    def setup(self) -> None:
        log(f"database {self.db}, own redis-server on 127.0.0.1:{self.redis_port}, gunicorn on :{self.web_port}")
        self.start_redis()
        os.environ.update(self.env)
        # The suite's own connections (checks, seeding) are spared by the pg_terminate_backend scenario.
        os.environ["PGAPPNAME"] = "faults-runner"
        self.create_database()
        import django

        django.setup()
        self.start_web()
        log("gunicorn answers")
        self.start_worker()
        self.start_beat()
        log("worker answers, beat started")

    def template_name(self) -> str:
        """A migrated copy of the schema is kept between runs, named after everything that shapes it."""
        digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
        for path in sorted(ROOT.glob("*/migrations/*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
        return f"rgd_faults_template_{digest.hexdigest()[:16]}"

    def create_database(self) -> None:
        """The suite's database: a copy of the migrated template when one exists (seconds), else created and
        migrated (minutes on a busy machine), then kept as the template for the next run; older templates go."""
        createdb = ["createdb", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"]]
        template = self.template_name()
        use_template = os.environ.get("FAULTS_TEMPLATE", "1") != "0"
        if use_template and self.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{template}'") == "1":
            copied = subprocess.run([*createdb, "-T", template, self.db], capture_output=True, timeout=120)
            if copied.returncode == 0:
                log(f"database copied from {template}")
                return
        subprocess.run([*createdb, self.db], check=True, timeout=60)
        subprocess.run(
            [str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env, check=True
        )
        log("database migrated")
        if not use_template:
            return
        for old in self.psql(
            "SELECT datname FROM pg_database WHERE datname LIKE 'rgd\\_faults\\_template\\_%'"
        ).split():
            if old != template:
                subprocess.run(["dropdb", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "--if-exists", old])
        # Fails harmlessly when another run made it meanwhile.
        subprocess.run([*createdb, "-T", self.db, template], capture_output=True, timeout=120)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self.procs):
            proc.kill_group(signal.SIGKILL, wait=5)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            self.psql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.db}' "
                "AND pid <> pg_backend_pid()"
            )
        with contextlib.suppress(Exception):
            subprocess.run(
                ["dropdb", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "--if-exists", self.db],
                check=False,
                timeout=60,
            )
        # The processes' logs stay under var/faults-logs/ for a look after a FAIL.
        keep = ROOT / "var" / "faults-logs"
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        for logfile in self.tmp.glob("*.log"):
            shutil.copy(logfile, keep / logfile.name)
        shutil.rmtree(self.tmp, ignore_errors=True)
        log(f"cleaned up: {len(self.procs)} processes killed, database {self.db} dropped")

    def _proc(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, args, env or self.env, self.tmp / f"{name}.log").start()
        self.procs.append(proc)
        return proc

    def start_redis(self) -> None:
        (self.tmp / "redis").mkdir(exist_ok=True)
        self.redis = self._proc(
            "redis",
            [
                "/usr/bin/redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--dir",
                str(self.tmp / "redis"),
                "--save",
                "",
                # The broker's queues survive a restart, as on a production Redis with AOF.
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "yes",
            ],
        )
        ok = wait_until(lambda: self.redis_ping(), 20, 0.2)
        if not ok:
            raise RuntimeError("redis-server did not start")

    def redis_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def queue_length(self) -> int:
        """Messages waiting in the broker's default queue."""
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as s:
                s.sendall(b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*2\r\n$4\r\nLLEN\r\n$6\r\ncelery\r\n")
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    reply += chunk
            return int(reply.split(b"\r\n")[1].lstrip(b":"))
        except (OSError, ValueError, IndexError):
            return -1

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.stop()  # SIGTERM: Redis flushes its append-only file and exits
        self.procs.remove(self.redis)

    def start_web(self) -> None:
        # The deployment's own gunicorn.conf.py (gthread workers), on a loopback port, two workers.
        self.web = self._proc(
            "gunicorn",
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "config.wsgi:application"],
            {
                **self.env,
                "GUNICORN_BIND": f"127.0.0.1:{self.web_port}",
                "GUNICORN_WORKERS": "2",
                "GUNICORN_THREADS": "4",
                "GUNICORN_TIMEOUT": "60",
            },
        )
        client = self.http()
        if not wait_until(lambda: client.request("GET", "/login/")[0] == 200, 60, 0.5):
            raise RuntimeError("gunicorn did not answer")

    def start_worker(self, concurrency: int = 2) -> Proc:
        name = f"faults{next(self._worker_names)}@localhost"
        self.worker = self._proc(
            f"worker-{name.split('@')[0]}",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "WARNING",
                "--hostname",
                name,
                "--without-gossip",
                "--without-mingle",
            ],
        )
        from config.celery_app import app

        def answers() -> bool:
            try:
                return bool(app.control.ping(destination=[name], timeout=1.0))
            except Exception:  # a connection the broker's restart closed: the next try opens a new one
                return False

        if not wait_until(answers, 60, 0.5):
            raise RuntimeError("the Celery worker did not answer")
        return self.worker

    def start_beat(self, name: str = "beat", settings_module: str = "config.settings") -> Proc:
        proc = self._proc(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.tmp / f"{name}-schedule"),
                "--pidfile",
                "",
            ],
            {**self.env, "DJANGO_SETTINGS_MODULE": settings_module},
        )
        if name == "beat":
            self.beat = proc
        return proc

    def worker_kill(self, pid: int) -> bool:
        """kill -9 one process of the worker (a pool child); whether it was alive to be killed."""
        if not _alive(pid):
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def kill_pool(self, concurrency: int = 2, timeout: float = 30.0) -> int:
        """kill -9 every live pool child of the worker, then wait (bounded) until the pool has replaced them.
        Returns the number of children killed."""
        worker = self.worker
        assert worker is not None
        before = worker.children()
        killed = sum(self.worker_kill(pid) for pid in before)
        wait_until(lambda: len(set(worker.children()) - set(before)) >= concurrency, timeout, 0.2)
        return killed

    def kill_worker_main(self) -> None:
        """kill -9 the worker's main process, then its orphaned children (as a service manager would)."""
        worker = self.worker
        assert worker is not None
        children = worker.children()
        self.worker_kill(worker.pid)
        worker.popen.wait(timeout=10)
        time.sleep(0.5)
        for pid in children:
            self.worker_kill(pid)
        worker.kill_group(signal.SIGKILL, wait=5)
        self.procs.remove(worker)

    def access_status(self, marker: str, timeout: float = 5.0) -> int | None:
        """The status gunicorn logged for the request whose URL contains ``marker`` (the client may have seen no
        answer: a server refusing a huge body closes the connection before the client finished sending it)."""
        pattern = re.compile(rf'"[A-Z]+ [^" ]*{re.escape(marker)}[^" ]* HTTP/[0-9.]+" (\d{{3}}) ')

        def find() -> int | None:
            assert self.web is not None
            match = pattern.search(self.web.logfile.read_text(errors="replace"))
            return int(match.group(1)) if match else None

        return wait_until(find, timeout, 0.2)

    def http(self) -> Http:
        return Http(f"http://127.0.0.1:{self.web_port}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Result:
    name: str
    counts: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)

    @property
    def passed(self) -> bool:
        return not self.failures

    def report(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{verdict} {self.name} ({self.seconds:.0f} s): {counts}"]
        lines += [f"    - {f}" for f in self.failures]
        return "\n".join(lines)


class Watchdog:
    """Ends the whole suite (cleaning up) if it runs past its deadline."""

    def __init__(self, suite: Suite, seconds: float) -> None:
        self.suite, self.seconds = suite, seconds
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        log(f"FAIL: the suite ran past its deadline of {self.seconds:.0f} s; stopping")
        self.suite.close()
        os._exit(2)

    def __enter__(self) -> Watchdog:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()
