"""The input boundary: what every API body, form field, query parameter and path parameter must satisfy.

One set of rules, applied where input enters (the API's JSON parser, a
middleware for query strings and form bodies, the form fields for dates,
the URL converters for paths), so no field has to remember them and nothing
unrepresentable reaches PostgreSQL or datetime arithmetic:

- JSON nests at most ``MAX_JSON_DEPTH`` levels, checked on the raw bytes
  before the parser recurses;
- text holds no NUL character and no lone surrogate (PostgreSQL stores
  neither; UTF-8 cannot encode the second), in values and in keys;
- integers fit the column they go to (``column_range``);
- datetimes lie in ``[MIN_DATETIME, MAX_DATETIME]``, dates in
  ``[MIN_DATE, MAX_DATE]``: a day inside Python's range with room for any
  UTC offset and a day of arithmetic either side.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from django.db.backends.base.operations import BaseDatabaseOperations

MAX_JSON_DEPTH = 64
MIN_DATE = dt.date(1, 1, 2)
MAX_DATE = dt.date(9999, 12, 30)
MIN_DATETIME = dt.datetime.combine(MIN_DATE, dt.time.min, tzinfo=dt.UTC)
MAX_DATETIME = dt.datetime.combine(MAX_DATE, dt.time.max, tzinfo=dt.UTC)

# JSON strings (escapes included) and everything that is not a bracket, for the depth scan.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
# After json.loads a valid surrogate pair is one character: any surrogate left is a lone one.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


class InputRejected(ValueError):
    """Input the boundary refuses: ``errors`` is a list of ``{"pointer", "message"}`` (RFC 6901 pointers)."""

    def __init__(self, message: str, *, code: str, errors: list[dict[str, str]] | None = None, status: int = 422):
        super().__init__(message)
        self.message = message
        self.code = code
        self.errors = errors or []
        self.status = status


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    match = _BAD_TEXT.search(value)
    if match is None:
        return None
    return "Contains a NUL character." if match.group() == "\x00" else "Contains a lone surrogate (not valid Unicode)."


def _pointer_token(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def json_text_problems(document: Any, limit: int = 20) -> list[dict[str, str]]:
    """Every string or key of a parsed JSON document that cannot be stored (at most ``limit``)."""
    problems: list[dict[str, str]] = []
    stack: list[tuple[str, Any]] = [("", document)]
    while stack and len(problems) < limit:
        pointer, value = stack.pop()
        if isinstance(value, str):
            why = text_problem(value)
            if why:
                problems.append({"pointer": pointer, "message": why})
        elif isinstance(value, dict):
            for key, item in value.items():
                why = text_problem(key)
                # A bad key is named by the pointer of its object: the key itself is not printable.
                child = f"{pointer}/{_pointer_token(key)}" if why is None else pointer
                if why:
                    problems.append({"pointer": child, "message": f"A key: {why[0].lower()}{why[1:]}"})
                else:
                    stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{pointer}/{index}", item) for index, item in enumerate(value))
    return sorted(problems, key=lambda p: p["pointer"])


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, without parsing it (so without recursing)."""
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b'""', raw))
    if not brackets:
        return 0
    return max(accumulate(1 if c in b"[{" else -1 for c in brackets))


def _may_hold_bad_text(data: bytes) -> bool:
    """Whether a JSON text can decode to a string holding NUL or a surrogate: only through a ``\\u`` escape, a raw
    NUL byte (also in UTF-16/32 text) or a UTF-8-encoded surrogate (lead byte 0xED). Most bodies have none, and
    scanning the bytes is far cheaper than walking every string of the parsed document."""
    return b"\\u" in data or b"\x00" in data or b"\xed" in data


def load_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON text through the boundary.

    Raises ``InputRejected``: status 400 for text that is not JSON or nests
    deeper than ``max_depth``, 422 naming the pointers of strings or keys that
    cannot be stored.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth = json_depth(data)
    if depth > max_depth:
        raise InputRejected(
            f"The JSON nests {depth} levels deep; at most {max_depth} are accepted.", code="json-too-deep", status=400
        )
    try:
        document = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InputRejected(f"The body is not valid JSON: {exc}", code="malformed-json", status=400) from exc
    problems = json_text_problems(document) if _may_hold_bad_text(data) else []
    if problems:
        raise InputRejected(
            f"{len(problems)} invalid string(s); nothing was stored.", code="invalid-text", errors=problems
        )
    return document


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def column_range(model: type, field_name: str) -> tuple[int, int]:
    """The integers a model's integer column holds (PostgreSQL's ranges: the strictest supported backend)."""
    internal_type = model._meta.get_field(field_name).get_internal_type()
    low, high = BaseDatabaseOperations.integer_field_ranges[internal_type]
    return low, high


def datetime_problem(value: dt.datetime) -> str | None:
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.UTC)
        except OverflowError:
            return _RANGE_MESSAGE
        inside = MIN_DATETIME <= value <= MAX_DATETIME
    else:
        inside = MIN_DATETIME.replace(tzinfo=None) <= value <= MAX_DATETIME.replace(tzinfo=None)
    return None if inside else _RANGE_MESSAGE


def date_problem(value: dt.date) -> str | None:
    return None if MIN_DATE <= value <= MAX_DATE else _RANGE_MESSAGE


_RANGE_MESSAGE = f"Out of the supported range ({MIN_DATE.isoformat()} to {MAX_DATE.isoformat()}, UTC)."


def query_problems(params: Any, where: str) -> Iterator[dict[str, str]]:
    """Bad text in a QueryDict (``where`` is "query" or "form"): each name and every value of it.

    The pointer is empty (no JSON body is at fault); the message names the parameter.
    """
    for key, values in params.lists():
        why = text_problem(key)
        if why:
            yield {"pointer": "", "message": f"A {where} parameter name: {why[0].lower()}{why[1:]}"}
            continue
        for value in values:
            why = text_problem(value) if isinstance(value, str) else None
            if why:
                yield {"pointer": "", "message": f"The {where} parameter {key!r}: {why[0].lower()}{why[1:]}"}
                break
