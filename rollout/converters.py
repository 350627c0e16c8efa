"""Path converters: the input boundary for path parameters.

Django's ``str`` converter takes any character but ``/`` (a NUL included,
which PostgreSQL refuses: a 500). Every URL of the project uses ``slug``,
``int`` or ``ident`` instead; a test fails on a pattern using ``str`` or ``path``.
"""

from __future__ import annotations

from django.urls import register_converter

# Run ids (``evaluations.schemas.RUN_ID_PATTERN``), phase kinds, job names, ISO dates.
IDENT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}"


class IdentConverter:
    regex = IDENT_PATTERN

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return str(value)


def register() -> None:
    register_converter(IdentConverter, "ident")
