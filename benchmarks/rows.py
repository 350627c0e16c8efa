"""One row per benchmark: the figure's median over repeats, the reference's median measured alternately in the same
run, their ratio, the target, PASS/FAIL."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Row:
    key: str
    what: str
    figure: float
    reference: float | None
    unit: str
    target: str
    passed: bool
    ratio: float | None = None
    reference_what: str = ""
    samples: list[float] | None = None
    reference_samples: list[float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def alternate(repeats: int, figure: Callable[[], float], reference: Callable[[], float]) -> tuple[list, list]:
    """Reference, figure, reference, figure...: both see the same machine state (other load, caches)."""
    figures, references = [], []
    for _ in range(repeats):
        references.append(reference())
        figures.append(figure())
    return figures, references


def row(
    key: str,
    what: str,
    figures: list[float],
    references: list[float] | None,
    *,
    unit: str,
    target: str,
    check: Callable[[float, float | None, float | None], bool],
    reference_what: str = "",
) -> Row:
    # Four decimals: a smoke run's reference (milliseconds of work, in seconds) must not round to zero.
    figure = round(statistics.median(figures), 4)
    reference = round(statistics.median(references), 4) if references else None
    ratio = round(figure / reference, 2) if reference else None
    return Row(
        key=key,
        what=what,
        figure=figure,
        reference=reference,
        unit=unit,
        target=target,
        passed=bool(check(figure, reference, ratio)),
        ratio=ratio,
        reference_what=reference_what,
        samples=[round(f, 4) for f in figures],
        reference_samples=[round(r, 4) for r in references] if references else None,
    )


def table(rows: list[Row]) -> str:
    head = ["#", "measured", "figure (median)", "reference (median)", "ratio", "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        reference = f"{r.reference:g} {r.unit} ({r.reference_what})" if r.reference is not None else "—"
        ratio = f"{r.ratio:g}x" if r.ratio is not None else "—"
        lines.append(
            f"| {r.key} | {r.what} | {r.figure:g} {r.unit} | {reference} | {ratio} | {r.target} | "
            f"{'PASS' if r.passed else 'FAIL'} |"
        )
    return "\n".join(lines)
