"""The streak logic of the rollback triggers (design section 4), free of the database.

Items arrive in order (runs by ``finished_at``, intervals by ``interval_start``).
A breach adds one to the streak; a clean item resets it, and so does a gap
between two intervals. A trigger fires when a streak reaches ``required``, once
per streak: the item at which it reached ``required`` is the firing point (a
``TriggerFiring`` is unique on it), and the first ``required`` items are the
evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import TypeVar

T = TypeVar("T")


def guardrail_breached(compensations: int, conversations: int, threshold: Decimal | float | str) -> bool:
    """Strictly above the threshold, compared exactly: 5/100 at 0.05 is no breach, 501/10000 is."""
    return Fraction(compensations, conversations) > Fraction(str(threshold))


def latency_breached(latency_p95_ms: float, sla_ms: float) -> bool:
    return latency_p95_ms > sla_ms


def streaks(
    items: Iterable[T],
    *,
    breached: Callable[[T], bool],
    contiguous: Callable[[T, T], bool] | None = None,
) -> Iterator[list[T]]:
    """The maximal runs of consecutive breaching items, in order."""
    current: list[T] = []
    previous: T | None = None
    for item in items:
        if current and contiguous is not None and previous is not None and not contiguous(previous, item):
            yield current
            current = []
        if breached(item):
            current.append(item)
        elif current:
            yield current
            current = []
        previous = item
    if current:
        yield current


def current_streak(
    items: Sequence[T], *, breached: Callable[[T], bool], contiguous: Callable[[T, T], bool] | None = None
) -> list[T]:
    """The streak still running at the last item (empty when the last item is clean)."""
    if not items or not breached(items[-1]):
        return []
    last: list[T] = []
    for streak in streaks(items, breached=breached, contiguous=contiguous):
        last = streak
    return last if last and last[-1] is items[-1] else []


def firing_points(
    items: Iterable[T],
    *,
    breached: Callable[[T], bool],
    required: int,
    contiguous: Callable[[T, T], bool] | None = None,
) -> Iterator[list[T]]:
    """For every streak that reached ``required``: its first ``required`` items (the last is the firing point)."""
    for streak in streaks(items, breached=breached, contiguous=contiguous):
        if len(streak) >= required:
            yield streak[:required]
