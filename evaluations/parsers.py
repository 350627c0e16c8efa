"""The API's JSON parser: the input boundary (``rollout.inputs``) applied to every body before a view sees it."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from rollout.inputs import InputRejected, load_json

from .errors import JsonTooDeep, PayloadInvalid


class BoundaryJSONParser(parsers.JSONParser):
    """JSON nested at most ``MAX_JSON_DEPTH`` levels (checked on the raw bytes, before any recursion: a 400),
    with no NUL or lone surrogate in any string or key (a 422 naming each JSON Pointer)."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        raw = stream.read() if stream is not None else b""
        try:
            return load_json(raw)
        except InputRejected as exc:
            if exc.code == "invalid-text":
                raise PayloadInvalid(exc.message, errors=exc.errors) from exc
            if exc.code == "json-too-deep":
                raise JsonTooDeep(exc.message) from exc
            raise ParseError(exc.message) from exc


class _RawFileParser(parsers.BaseParser):
    """The body as bytes, for the import endpoints: the file a tool wrote (read by the tool's own reader)."""

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        return stream.read() if stream is not None else b""


class ZipFileParser(_RawFileParser):
    media_type = "application/zip"


class OctetStreamParser(_RawFileParser):
    media_type = "application/octet-stream"


class JSONFileParser(_RawFileParser):
    """A JSON file taken as it is (an Inspect ``--log-format json`` log); its reader parses it."""

    media_type = "application/json"
