"""Evaluation results from the tools teams already run (issue 12): Inspect AI logs and promptfoo results.

Each importer turns a file into run objects exactly as the harness would send them (``{"runs": [...]}``) and
passes them through the input boundary (``rollout.inputs``) and the same ingest service as the API
(``evaluations.services.ingest_runs``): all or nothing, idempotent on the run id the file implies, and the
phase's activity and exposed cohorts checked there. Nothing here writes to the database by itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from rollout.inputs import InputRejected, load_json

from ..errors import ImportRefused, PayloadInvalid
from ..services import IngestResult, ingest_runs

# Keys a mapping file may hold (both importers); anything else is a typo and refused.
MAPPING_KEYS = {
    "rollout",
    "phase",
    "arm",
    "cohort",
    "arms",
    "metrics",
    "latency",
    "compensations",
    "outputs",
}


@dataclass
class ImportOutcome:
    """What an import stored (or, for a dry run, would store): the ingest result and the runs it sent."""

    result: IngestResult
    runs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.result.as_dict(),
            "dry_run": self.dry_run,
            "runs": [summary(run) for run in self.runs],
            "notes": self.notes,
        }


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """A run without its outputs: what an import reports back."""
    return {
        **{k: v for k, v in run.items() if k != "outputs"},
        "outputs": len(run.get("outputs") or []),
    }


class _DryRun(Exception):
    pass


def ingest(runs: list[dict[str, Any]], *, actor: Any = None, dry_run: bool = False) -> IngestResult:
    """Send ``runs`` through the input boundary and ``ingest_runs``; a dry run does the same and rolls back.

    The boundary is the one every API body passes: a NUL or lone surrogate that a tool wrote into an output
    is a 422 naming its pointer, not a database error.
    """
    payload = {"runs": runs}
    try:
        payload = load_json(json.dumps(payload, ensure_ascii=False, allow_nan=False))
    except InputRejected as exc:
        raise PayloadInvalid(exc.message, errors=exc.errors) from exc
    except ValueError as exc:  # NaN or infinity in a number the tool wrote
        raise ImportRefused(f"The file holds a number JSON cannot carry: {exc}.") from exc
    if not dry_run:
        return ingest_runs(payload=payload, actor=actor)
    outcome: list[IngestResult] = []
    try:
        with transaction.atomic():
            outcome.append(ingest_runs(payload=payload, actor=actor))
            raise _DryRun
    except _DryRun:
        pass
    return outcome[0]


def load_mapping(source: str | Path | dict | None) -> dict[str, Any]:
    """A mapping: a JSON file's path, an already parsed object, or None (the defaults)."""
    if source is None:
        return {}
    if isinstance(source, dict):
        mapping = source
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ImportRefused(f"Cannot read the mapping file {source}: {exc.strerror}.") from exc
        try:
            mapping = load_json(text)
        except InputRejected as exc:
            raise ImportRefused(f"The mapping file {source} is not valid JSON: {exc.message}") from exc
    if not isinstance(mapping, dict):
        raise ImportRefused("A mapping must be a JSON object.")
    unknown = sorted(set(mapping) - MAPPING_KEYS)
    if unknown:
        raise ImportRefused(
            f"Unknown mapping key(s): {', '.join(unknown)}; a mapping may hold {', '.join(sorted(MAPPING_KEYS))}.",
            errors=[{"pointer": f"/{key}", "message": "Unknown mapping key."} for key in unknown],
        )
    for key in ("arms", "metrics", "latency", "compensations", "outputs"):
        if key in mapping and not isinstance(mapping[key], dict):
            raise ImportRefused(
                f"The mapping's {key!r} must be an object.",
                errors=[{"pointer": f"/{key}", "message": "Not an object."}],
            )
    for key in ("rollout", "phase", "arm", "cohort"):
        if key in mapping and not isinstance(mapping[key], str):
            raise ImportRefused(
                f"The mapping's {key!r} must be a string.", errors=[{"pointer": f"/{key}", "message": "Not a string."}]
            )
    return mapping


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between closest ranks (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
