"""What the URL patterns reserve: fixed path segments that sit where a slug goes.

``/rollouts/new/`` is the create form, so a rollout whose slug is ``new``
would have an unreachable detail page. Rather than a list kept by hand, the
reserved words are read from the URL patterns themselves, so a fixed segment
added later (``/rollouts/import/``...) is reserved the day it is added.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.urls import URLPattern, URLResolver, get_resolver


def routes(
    resolver: URLResolver | None = None, prefix: str = "", namespace: str = ""
) -> Iterator[tuple[str, str, URLPattern]]:
    """Every URL pattern as (full route, namespaced name or "", pattern), includes flattened.

    ``("rollouts/<slug:slug>/runs/", "evaluations:runs", <URLPattern>)``.
    """
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = ":".join(filter(None, [namespace, entry.namespace or ""]))
            yield from routes(entry, route, inner)
        else:
            name = ":".join(filter(None, [namespace, entry.name])) if entry.name else ""
            yield route, name, entry


def reserved_segments(prefix: str) -> frozenset[str]:
    """The literal segments that follow ``prefix`` in some route (``"rollouts/"`` -> ``{"new"}``)."""
    found = set()
    for route, _name, _pattern in routes():
        if route.startswith(prefix):
            segment = route[len(prefix) :].split("/", 1)[0]
            if segment and "<" not in segment and not segment.startswith("^"):
                found.add(segment)
    return frozenset(found)
