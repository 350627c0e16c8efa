"""The audit ledger at 1M entries (x --scale) (P6, P7, P10): exports over HTTP from our own gunicorn (2 sync
workers), each alternated with PostgreSQL's own COPY of the same rows, and ``verify`` against a plain scan.

P6: the CSV export page, drained by a client; reference ``psql \\copy (SELECT ...) TO STDOUT WITH CSV``; also the
first row's latency and the serving worker's RSS growth. P7: JSON Lines; reference ``COPY (SELECT row_to_json(...))``.
P10: ``verify_audit_log``'s chain check over the database; reference a plain scan of the table (COPY to nowhere).
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

from django.db import connection

from .load import gunicorn
from .pages import database_url, session_headers
from .rows import Row, alternate, row

SELECT = (
    "SELECT sequence, at, actor_kind, actor_name, actor_user_id, actor_token_id, action, object_type, object_id, "
    "object_repr, rollout_id, before, after, reason, request_id, prev_hash, hash FROM governance_auditevent "
    "ORDER BY sequence"
)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _export(port: int, headers: dict[str, str], csrf: str, fmt: str) -> tuple[float, float, int]:
    """(seconds to the last byte, seconds to the first, bytes)."""
    body = urlencode({"format": fmt, "csrfmiddlewaretoken": csrf})
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1800)
    try:
        conn.request(
            "POST",
            "/audit/export/",
            body=body,
            headers={
                **headers,
                "Content-Type": "application/x-www-form-urlencoded",
                "Referer": f"http://127.0.0.1:{port}/audit/",
            },
        )
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"export {fmt}: {response.status} {response.read(500)!r}")
        first = response.read(1)
        first_s = time.perf_counter() - started
        size = len(first)
        while chunk := response.read(1 << 16):
            size += len(chunk)
        return time.perf_counter() - started, first_s, size
    finally:
        conn.close()


def _csrf(port: int, headers: dict[str, str]) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/audit/", headers=headers)
        response = conn.getresponse()
        html = response.read().decode()
        cookie = next(
            (v.split(";")[0] for k, v in response.getheaders() if k.lower() == "set-cookie" and "csrftoken" in v), ""
        )
    finally:
        conn.close()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    if not token or not cookie:
        raise RuntimeError("no CSRF token on the audit page")
    return {"Cookie": f"{headers['Cookie']}; {cookie}", "token": token.group(1)}


def _psql_copy(sql: str) -> float:
    s = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": s["PASSWORD"] or ""}
    cmd = [
        "psql",
        "-X",
        "-q",
        "-h",
        s["HOST"] or "127.0.0.1",
        "-p",
        str(s["PORT"] or 5432),
        "-U",
        s["USER"],
        "-d",
        s["NAME"],
        "-c",
        rf"\copy ({sql}) TO STDOUT WITH CSV HEADER",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - psql with our own SQL
    return time.perf_counter() - started


def _copy_scan(sql: str) -> float:
    started = time.perf_counter()
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT") as copy:
        for _ in copy:
            pass
    return time.perf_counter() - started


def run(args) -> dict:
    from governance import ledger
    from governance.benchdata import seed_bench

    entries = max(1000, int(1_000_000 * args.scale))
    seeded = seed_bench(runs=0, ledger_entries=entries, outputs=0)
    figures: dict = {"database": connection.vendor, "ledger_entries": seeded.ledger, "seed_seconds": seeded.seconds}
    session = session_headers()
    rows: list[Row] = []
    connection.close()
    with gunicorn(database_url()) as port:
        csrf = _csrf(port, session)
        headers = {"Cookie": csrf["Cookie"]}
        _export(port, headers, csrf["token"], "csv")  # warm up
        firsts, growth = [], []

        def csv_export() -> float:
            master = _gunicorn_master(port)
            before = {pid: _rss_kb(pid) for pid in _workers(master)}
            total, first, _size = _export(port, headers, csrf["token"], "csv")
            after = {pid: _rss_kb(pid) for pid in _workers(master)}
            growth.append(max((after.get(p, 0) - kb) / 1024 for p, kb in before.items()) if before else 0.0)
            firsts.append(first * 1000)
            return total

        measured, references = alternate(args.repeats, csv_export, lambda: _psql_copy(SELECT + " "))
        rows.append(
            row(
                "P6",
                "ledger CSV export over HTTP",
                measured,
                references,
                unit="s",
                target="<= 2.0x; worker memory growth < 64 MB; first row < 300 ms",
                reference_what="psql \\copy of the same SELECT",
                check=lambda _f, _r, ratio: (
                    ratio is not None and ratio <= 2.0 and max(growth) < 64 and max(firsts) < 300
                ),
            )
        )
        figures["csv_first_row_ms"] = [round(f, 1) for f in firsts]
        figures["csv_worker_rss_growth_mb"] = [round(g, 1) for g in growth]

        json_select = f"SELECT row_to_json(t) FROM ({SELECT}) t"  # noqa: S608 - constant SQL
        measured, references = alternate(
            args.repeats, lambda: _export(port, headers, csrf["token"], "jsonl")[0], lambda: _copy_scan(json_select)
        )
        rows.append(
            row(
                "P7",
                "ledger JSONL export over HTTP",
                measured,
                references,
                unit="s",
                target="<= 2.0x",
                reference_what="COPY (SELECT row_to_json(...))",
                check=lambda _f, _r, ratio: ratio is not None and ratio <= 2.0,
            )
        )

    def verify() -> float:
        started = time.perf_counter()
        result = ledger.verify_database()
        assert result.ok, result.summary()
        return time.perf_counter() - started

    measured, references = alternate(args.repeats, verify, lambda: _copy_scan("SELECT * FROM governance_auditevent"))
    rows.append(
        row(
            "P10",
            "verify_audit_log over the database",
            measured,
            references,
            unit="s",
            target="<= 4x",
            reference_what="a plain scan of the table",
            check=lambda _f, _r, ratio: ratio is not None and ratio <= 4.0,
        )
    )
    figures["rows"] = [r.as_dict() for r in rows]
    return figures


def _gunicorn_master(port: int) -> int:
    """The gunicorn listening on ``port`` (ours): found through /proc, as the context manager keeps its Popen."""
    from . import load

    return load.last_master_pid()
