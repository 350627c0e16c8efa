"""Keyset ("seek") pagination for the lists that grow without bound (runs, the audit ledger).

A page is found from the last (or first) row of the page before it, through the list's index, never with
``OFFSET``; nothing is counted, so a page costs the same at a million rows as at ten. The links are newest,
newer, older and oldest. A cursor that does not parse is ignored (the first page), never a 500.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest, QueryDict

Key = tuple[Any, ...]


@dataclass
class KeysetPage:
    object_list: list[Any]
    has_next: bool  # older rows exist
    has_previous: bool  # newer rows exist
    query: QueryDict
    next_cursor: str = ""
    previous_cursor: str = ""
    # The links' words: a time-ordered list reads newest/newer/older/oldest, a sorted one first/previous/next/last.
    labels: tuple[str, str, str, str] = ("Newest", "Newer", "Older", "Oldest")

    keyset = True

    @property
    def has_other_pages(self) -> bool:
        return self.has_next or self.has_previous

    def _url(self, **params: str) -> str:
        query = self.query.copy()
        for name in ("page", "after", "before"):
            query.pop(name, None)
        query.update(params)
        return "?" + query.urlencode()

    @property
    def first_url(self) -> str:
        return self._url()

    @property
    def last_url(self) -> str:
        return self._url(before="")

    @property
    def next_url(self) -> str:
        return self._url(after=self.next_cursor)

    @property
    def previous_url(self) -> str:
        return self._url(before=self.previous_cursor)

    def __iter__(self):
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)


def _after(fields: Sequence[str], key: Key) -> Q:
    """Rows strictly after ``key`` in descending order of ``fields`` (lexicographic)."""
    # The leading ``<=`` lets the database start its index scan at the cursor instead of filtering up to it.
    q = Q()
    for i in range(len(fields)):
        q |= Q(**{f"{f}": v for f, v in zip(fields[:i], key[:i], strict=True)}, **{f"{fields[i]}__lt": key[i]})
    return Q(**{f"{fields[0]}__lte": key[0]}) & q


def _before(fields: Sequence[str], key: Key) -> Q:
    q = Q()
    for i in range(len(fields)):
        q |= Q(**{f"{f}": v for f, v in zip(fields[:i], key[:i], strict=True)}, **{f"{fields[i]}__gt": key[i]})
    return Q(**{f"{fields[0]}__gte": key[0]}) & q


def keyset_page(
    request: HttpRequest,
    queryset: QuerySet,
    *,
    fields: Sequence[str],
    per_page: int,
    encode: Callable[[Key], str],
    decode: Callable[[str], Key],
    descending: bool = True,
    labels: tuple[str, str, str, str] | None = None,
) -> KeysetPage:
    """The page of ``queryset`` (in the order of ``fields``, unique together, descending unless told otherwise)
    that ``?after=`` or ``?before=`` names; ``?before=`` with no value is the last page. One query."""

    def parse(name: str) -> Key | None:
        raw = request.GET.get(name)
        if not raw:
            return None
        try:
            return decode(raw)
        except (ValueError, TypeError, IndexError):
            return None

    def key_of(obj: Any) -> Key:
        return tuple(getattr(obj, f) for f in fields)

    forward = [f"-{f}" for f in fields] if descending else list(fields)
    backward = list(fields) if descending else [f"-{f}" for f in fields]
    seek_after, seek_before = (_after, _before) if descending else (_before, _after)
    after, before = parse("after"), parse("before")
    oldest = "before" in request.GET and not request.GET.get("before")
    if before is not None or oldest:
        rows = queryset.order_by(*backward)
        if before is not None:
            rows = rows.filter(seek_before(fields, before))
        rows = list(rows[: per_page + 1])
        more = len(rows) > per_page
        rows = rows[:per_page][::-1]
        has_previous, has_next = more, not oldest
    else:
        rows = queryset.order_by(*forward)
        if after is not None:
            rows = rows.filter(seek_after(fields, after))
        rows = list(rows[: per_page + 1])
        has_next = len(rows) > per_page
        rows = rows[:per_page]
        has_previous = after is not None
    return KeysetPage(
        object_list=rows,
        has_next=has_next and bool(rows),
        has_previous=has_previous and bool(rows),
        query=request.GET,
        next_cursor=encode(key_of(rows[-1])) if rows else "",
        previous_cursor=encode(key_of(rows[0])) if rows else "",
        **({"labels": labels} if labels else {}),
    )


BIGINT_MAX = 2**63 - 1


def _bigint(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= BIGINT_MAX:
        raise ValueError("out of range")
    return value


def encode_time_id(key: Key) -> str:
    return f"{key[0].isoformat()}_{key[1]}"


def decode_time_id(raw: str) -> Key:
    at, pk = raw.rsplit("_", 1)
    when = dt.datetime.fromisoformat(at.replace(" ", "+"))
    if when.tzinfo is None:
        raise ValueError("a cursor carries its offset")
    return when, _bigint(pk)


def encode_int(key: Key) -> str:
    return str(key[0])


def decode_int(raw: str) -> Key:
    return (_bigint(raw),)
