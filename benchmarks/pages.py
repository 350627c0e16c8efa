"""Pages and API under load (P1-P5): ``seed_bench`` at 1M runs / 1M ledger entries / 3M outputs (x --scale), our own
gunicorn with 2 sync workers, 8 concurrent clients on loopback. Each figure is the p95 of a burst of requests,
measured ``--repeats`` times alternately with the same burst on a trivial page (the login form) of the same gunicorn;
the row shows both medians."""

from __future__ import annotations

from django.db import connection

from .load import gunicorn, load
from .rows import Row, alternate, row

CLIENTS = 8
SLUG = "react-multi-agent"


def database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def seed(scale: float) -> dict:
    from governance.benchdata import seed_bench

    result = seed_bench(
        runs=max(200, int(1_000_000 * scale)),
        ledger_entries=max(200, int(1_000_000 * scale)),
        outputs=max(600, int(3_000_000 * scale)),
    )
    return {"runs": result.runs, "ledger": result.ledger, "outputs": result.outputs, "seed_seconds": result.seconds}


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


def run(args) -> dict:
    figures: dict = {"database": connection.vendor, **seed(args.scale)}
    session = session_headers()
    api = {**token_headers()}
    pages = [
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
    rows: list[Row] = []
    connection.close()  # gunicorn's workers are the only clients while measuring
    with gunicorn(database_url()) as port:
        for key, what, paths, headers, target, limit_ms, limit_ratio in pages:
            for path in paths:  # warm up every worker's caches and the database's buffers
                load(port, [path], clients=2, requests=4, headers=headers)

            def figure(paths=paths, headers=headers):
                return load(port, paths, clients=CLIENTS, requests=args.requests, headers=headers).p95_ms

            def reference():
                return load(port, ["/login/"], clients=CLIENTS, requests=args.requests, headers={}).p95_ms

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
    figures["rows"] = [r.as_dict() for r in rows]
    return figures
