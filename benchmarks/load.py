"""The load side of the page benchmarks: a gunicorn of our own and N concurrent clients on loopback."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(database_url: str, *, workers: int = 2) -> Iterator[int]:
    """Our own gunicorn (sync workers, as the issue measures) on a free loopback port; stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        # The throttles stay on (their cache round trip is part of every API request) but never refuse the load.
        "API_THROTTLE_RATE_TOKEN": "100000000/min",
        "API_THROTTLE_RATE_ADDRESS": "100000000/min",
    }
    # Command-line flags win over gunicorn.conf.py: the figures are for the 2 sync workers.
    cmd = [
        str(Path(sys.executable).with_name("gunicorn")),
        "config.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--worker-class=sync",
        "--timeout=600",
        "--access-logfile=/dev/null",
        "--error-logfile=-",
        "--log-level=warning",
    ]
    process = subprocess.Popen(cmd, cwd=ROOT, env=env)  # noqa: S603 - our own binary and arguments
    _masters.append(process.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, _ = request(port, "/login/")
                if status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_masters: list[int] = []


def last_master_pid() -> int:
    """The pid of the gunicorn master started last (to read its workers' memory)."""
    return _masters[-1]


def request(
    port: int, path: str, headers: dict[str, str] | None = None, *, method: str = "GET", body: bytes | None = None
) -> tuple[int, float, int]:
    """(status, seconds until the whole body was read, bytes). A new connection each time (sync workers close it)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        size = 0
        while chunk := response.read(1 << 16):
            size += len(chunk)
        return response.status, time.perf_counter() - started, size
    finally:
        conn.close()


def first_byte(port: int, path: str, headers: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read(1)
        return time.perf_counter() - started
    finally:
        conn.close()


@dataclass
class LoadResult:
    p50_ms: float
    p95_ms: float
    req_per_s: float
    requests: int


def load(port: int, paths: list[str], *, clients: int, requests: int, headers: dict[str, str]) -> LoadResult:
    """``requests`` GETs cycling over ``paths`` from ``clients`` threads at once; every response must be a 200."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            path = paths[i % len(paths)]
            status, seconds, _ = request(port, path, headers)
            with lock:
                latencies.append(seconds)
                if status != 200:
                    errors.append(f"{path}: {status}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return LoadResult(
        p50_ms=round(1000 * statistics.median(latencies), 1),
        p95_ms=round(1000 * p95, 1),
        req_per_s=round(len(latencies) / wall, 1),
        requests=len(latencies),
    )
