"""A sample-variance aggregate that is correct on PostgreSQL and SQLite.

PostgreSQL has ``var_samp``. SQLite has none, and the one Django registers
raises on groups with fewer than two values or with NULLs; so on SQLite an
aggregate of our own (Welford's algorithm, numerically stable) is registered
on each new connection. Both return NULL below two values.
"""

from __future__ import annotations

from django.db.backends.signals import connection_created
from django.db.models import Aggregate, FloatField

SQLITE_FUNCTION = "RGD_VAR_SAMP"


class SampleVariance(Aggregate):
    function = "VAR_SAMP"
    name = "SampleVariance"
    output_field = FloatField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function=SQLITE_FUNCTION, **extra_context)


class _Welford:
    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def step(self, value: float | None) -> None:
        if value is None:
            return
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    def finalize(self) -> float | None:
        return self.m2 / (self.n - 1) if self.n >= 2 else None


def register_sqlite_functions(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate(SQLITE_FUNCTION, 1, _Welford)


def connect() -> None:
    connection_created.connect(register_sqlite_functions, dispatch_uid="evaluations.sqlite_var_samp")
    # A connection opened before the app was ready (e.g. by a check) gets the function too.
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            register_sqlite_functions(None, conn)
