"""Helpers for the sortable, searchable list pages (rollout.tables): walk a list page by page, compare orders."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from django.db import connection
from django.test.utils import CaptureQueriesContext


def walk(client, url: str, params: dict | None = None, *, key=lambda row: row.pk) -> list:
    """Every row of a list, following its "next" links from the first page (each page one keyset query)."""
    params = dict(params or {})
    seen: list = []
    for _ in range(1000):
        response = client.get(url, params)
        assert response.status_code == 200, (url, params, response.status_code)
        page = response.context["page"]
        seen += [key(row) for row in page.object_list]
        if not page.has_next:
            return seen
        query = parse_qs(urlsplit(page.next_url).query)
        params = {k: v[0] for k, v in query.items()}
    raise AssertionError("the list never ended")


def queries(client, url: str, params: dict | None = None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(ctx.captured_queries)


def sort_links(html: str) -> dict[str, str]:
    """The sortable headers' links, by column (``data-sort``)."""
    links = re.finditer(r'data-sort="(\w+)" href="([^"]*)"', html)
    return {m.group(1): m.group(2).replace("&amp;", "&") for m in links}


def expected(queryset, fields: tuple[str, ...], descending: bool, key=lambda row: row.pk) -> list:
    order = [f"-{f}" for f in fields] if descending else list(fields)
    return [key(row) for row in queryset.order_by(*order)]
