"""Pages and API under load (P1-P5): ``seed_bench`` at 1M runs / 1M ledger entries / 3M outputs (x --scale), our own
gunicorn with 2 sync workers, 8 concurrent clients on loopback. Each figure is the p95 of a burst of requests,
measured ``--repeats`` times alternately with the same burst on a trivial page (the login form) of the same gunicorn;
the row shows both medians.

P12: the same pages at 1k runs (1k ledger entries, 3k outputs) against the full size: a copy of the benchmark's
database is taken (``CREATE DATABASE ... TEMPLATE``) after seeding 1k rows, before seeding the rest; a second
gunicorn serves the copy, and each burst on the full data alternates with the same burst on the copy. The query
count of every page (Django's test client in this process, second request) must be the same at both sizes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection

from .load import gunicorn, load
from .rows import Row, alternate, row

CLIENTS = 8
SLUG = "react-multi-agent"


def database_url(name: str | None = None) -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{name or s['NAME']}"


def sizes(scale: float) -> tuple[dict[str, int], dict[str, int]]:
    """(the small data set P12 compares with, the full one): 1k rows and 1M rows (x --scale), 3 outputs a run.
    At a scale below 0.01 (a smoke run) the small set is a tenth of the full one."""
    large = {
        "runs": max(200, int(1_000_000 * scale)),
        "ledger_entries": max(200, int(1_000_000 * scale)),
        "outputs": max(600, int(3_000_000 * scale)),
    }
    small_runs = min(1000, large["runs"] // 10)
    return {"runs": small_runs, "ledger_entries": small_runs, "outputs": 3 * small_runs}, large


def seed(**sizes: int) -> dict:
    from governance.benchdata import seed_bench

    result = seed_bench(**sizes)
    return {"runs": result.runs, "ledger": result.ledger, "outputs": result.outputs, "seed_seconds": result.seconds}


def maintenance(sql: str) -> None:
    """CREATE/DROP DATABASE, from the server's maintenance database (autocommit)."""
    import psycopg

    s = connection.settings_dict
    with psycopg.connect(
        host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
        user=s["USER"],
        password=s["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def copy_of_database() -> Iterator[str]:
    """A copy of the benchmark's database as it is now (``CREATE DATABASE ... TEMPLATE``); dropped on exit."""
    source = connection.settings_dict["NAME"]
    name = f"{source}_small"
    connection.close()  # a template database must have no other connection
    maintenance(f'DROP DATABASE IF EXISTS "{name}"')
    maintenance(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    try:
        yield name
    finally:
        maintenance(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query_counts(paths: list[str], headers: dict[str, str]) -> list[int]:
    """Queries each path makes in this process (Django's test client), on its second request: the first warms up."""
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(headers=headers)
    counts = []
    for path in paths:
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")
        with CaptureQueriesContext(connection) as queries:
            client.get(path)
        counts.append(len(queries))
    return counts


def session_headers() -> dict[str, str]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="auditor"))
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"}


def token_headers() -> dict[str, str]:
    from evaluations.services import api_token_create

    _token, raw = api_token_create(name="bench-pages-read", scopes=["read"], actor=None)
    return {"Authorization": f"Bearer {raw}"}


def runs_pages() -> list[str]:
    """The runs list's newest page, a page in the middle (its "Older" cursor) and the oldest page."""
    from urllib.parse import quote

    from evaluations.models import EvaluationRun
    from rollout.pagination import encode_time_id

    runs = EvaluationRun.objects.filter(rollout__slug=SLUG).order_by("-finished_at", "-id")
    middle = runs.values_list("finished_at", "id")[runs.count() // 2]  # once, to find the cursor (the bench's OFFSET)
    base = f"/rollouts/{SLUG}/runs/"
    return [base, f"{base}?after={quote(encode_time_id(middle))}", f"{base}?before="]


def page_groups(session: dict[str, str], api: dict[str, str]) -> list[tuple]:
    """(key, what, paths, headers, target, limit in ms, limit of the ratio) of P1-P5, for the data as it is now."""
    return [
        ("P1", "rollout detail page p95", [f"/rollouts/{SLUG}/"], session, "<= 150 ms and <= 3x", 150, 3.0),
        ("P2", "deltas page p95 (with charts)", [f"/rollouts/{SLUG}/deltas/"], session, "<= 200 ms", 200, None),
        ("P3", "runs list first/middle/last page p95", runs_pages(), session, "<= 150 ms", 150, None),
        (
            "P4",
            "audit list first and filtered page p95",
            ["/audit/", "/audit/?action=update"],
            session,
            "<= 150 ms",
            150,
            None,
        ),
        (
            "P5",
            "API rollout detail and deltas p95",
            [f"/api/v1/rollouts/{SLUG}/", f"/api/v1/rollouts/{SLUG}/deltas/"],
            api,
            "<= 100 ms",
            100,
            None,
        ),
    ]


def run(args) -> dict:
    """P1-P5 on the full data set; P12 the same pages on a copy of the database taken at 1k rows, alternated."""
    small_sizes, large_sizes = sizes(args.scale)
    small = seed(**small_sizes)
    session = session_headers()
    api = {**token_headers()}
    small_groups = page_groups(session, api)
    small_counts = [query_counts(paths, headers) for _k, _w, paths, headers, *_ in small_groups]
    figures: dict = {"database": connection.vendor, "small": small}
    with copy_of_database() as small_name:
        # The rest of the full size (seed_bench adds to what is there: runs, outputs, ledger entries).
        large = seed(**{k: v - small_sizes[k] for k, v in large_sizes.items()})
        figures.update(runs=small["runs"] + large["runs"], ledger=small["ledger"] + large["ledger"])
        figures.update(outputs=small["outputs"] + large["outputs"], seed_seconds=large["seed_seconds"])
        groups = page_groups(session, api)
        counts = [query_counts(paths, headers) for _k, _w, paths, headers, *_ in groups]
        figures["query_counts"] = {
            key: {"small": a, "large": b} for (key, *_), a, b in zip(groups, small_counts, counts, strict=True)
        }
        rows: list[Row] = []
        scaling: list[Row] = []
        connection.close()  # gunicorn's workers are the only clients while measuring
        with gunicorn(database_url()) as port, gunicorn(database_url(small_name)) as small_port:
            for group, small_group, count, small_count in zip(groups, small_groups, counts, small_counts, strict=True):
                key, what, paths, headers, target, limit_ms, limit_ratio = group
                small_paths = small_group[2]
                for path in paths:  # warm up every worker's caches and the database's buffers
                    load(port, [path], clients=2, requests=4, headers=headers)
                for path in small_paths:
                    load(small_port, [path], clients=2, requests=4, headers=headers)

                def figure(paths=paths, headers=headers):
                    return load(port, paths, clients=CLIENTS, requests=args.requests, headers=headers).p95_ms

                def reference():
                    return load(port, ["/login/"], clients=CLIENTS, requests=args.requests, headers={}).p95_ms

                def small_figure(paths=small_paths, headers=headers):
                    return load(small_port, paths, clients=CLIENTS, requests=args.requests, headers=headers).p95_ms

                measured, references = alternate(args.repeats, figure, reference)
                rows.append(
                    row(
                        key,
                        what,
                        measured,
                        references,
                        unit="ms",
                        target=target,
                        reference_what="login page p95",
                        check=lambda f, _r, ratio, limit_ms=limit_ms, limit_ratio=limit_ratio: (
                            f <= limit_ms and (limit_ratio is None or (ratio is not None and ratio <= limit_ratio))
                        ),
                    )
                )
                measured, references = alternate(args.repeats, figure, small_figure)
                queries = "=" if count == small_count else "!="
                scaling.append(
                    row(
                        "P12",
                        f"{key} at {figures['runs']:,} vs {small['runs']:,} runs p95; queries "
                        f"{'/'.join(map(str, count))} {queries} {'/'.join(map(str, small_count))}",
                        measured,
                        references,
                        unit="ms",
                        target="same query count; p95 within 1.5x",
                        reference_what=f"the same pages at {small['runs']:,} runs",
                        check=lambda _f, _r, ratio, same=count == small_count: (
                            same and ratio is not None and ratio <= 1.5
                        ),
                    )
                )
    figures["rows"] = [r.as_dict() for r in rows + scaling]
    return figures
