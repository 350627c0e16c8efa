"""promptfoo results (``promptfoo eval -o results.json``, results format version 3) as evaluation runs.

One run per provider. Where each field comes from:

- ``rollout``, ``phase`` (and an optional ``cohort``): the command's options (the API's query parameters), else
  the mapping.
- ``arm``: the mapping's ``arms`` by the provider's label, else by its id (``{"arms": {"legacy": "baseline"}}``),
  else the label or id itself when it is ``baseline`` or ``candidate``.
- ``run_id``: ``promptfoo-<evalId>-<provider label or id>``, so importing the same file again counts duplicates.
- ``started_at``: ``results.timestamp``; ``finished_at``: that plus ``results.stats.durationMs`` (else the file's
  ``metadata.exportedAt``).
- ``conversations``: the provider's results; ``task_success_rate``: the share with ``success``;
  ``latency_p95_ms``: the 95th percentile of their ``latencyMs``; ``cost_per_conversation_usd``: their mean
  ``cost``; other catalogue metrics from the mean of a named score (``{"metrics": {"tool_call_accuracy":
  "tool_accuracy"}}``).
- ``guardrail_compensations``: results whose named score reaches ``at_least`` (``{"compensations":
  {"named_score": "guardrail_compensation", "at_least": 1}}``, the default when the file has that score), or
  whose assertion with that ``metric`` (or ``type``) passed (``{"compensations": {"assertion": "handoff",
  "when": "pass"}}``).
- ``outputs``: one per result: its id, test and prompt index, vars, success, score, named scores, latency, cost,
  token usage, the output, the failure reason and error.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from ..errors import ImportRefused
from ..models import METRICS
from ..schemas import MAX_OUTPUTS_PER_RUN
from . import ImportOutcome, ingest, is_number, load_mapping, percentile, truncate

RESULTS_VERSION = 3
DEFAULT_COMPENSATION_SCORE = "guardrail_compensation"
ARMS = ("baseline", "candidate")


def _refuse(message: str, pointer: str, why: str) -> ImportRefused:
    return ImportRefused(message, errors=[{"pointer": pointer, "message": why}])


def _parse_time(value: Any, pointer: str) -> dt.datetime:
    if not isinstance(value, str):
        raise _refuse("The results file does not say when the evaluation ran.", pointer, "Missing or not a string.")
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _refuse(f"Cannot read the time {value!r}.", pointer, "Not an ISO 8601 time.") from exc
    if moment.tzinfo is None:
        raise _refuse(f"The time {value!r} has no UTC offset.", pointer, "No UTC offset.")
    return moment.astimezone(dt.UTC)


def _provider_key(result: dict[str, Any]) -> tuple[str, str | None]:
    provider = result.get("provider")
    if isinstance(provider, str):
        return provider, None
    if isinstance(provider, dict):
        label = provider.get("label") if isinstance(provider.get("label"), str) else None
        pid = provider.get("id") if isinstance(provider.get("id"), str) else None
        return (label or pid or ""), pid
    return "", None


def _run_id_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]+", "_", text).strip("_") or "provider"


def _compensated(result: dict[str, Any], comp: dict[str, Any]) -> bool:
    if "assertion" in comp:
        when = comp.get("when", "pass")
        for component in (result.get("gradingResult") or {}).get("componentResults") or []:
            assertion = component.get("assertion") or {}
            if comp["assertion"] in (assertion.get("metric"), assertion.get("type")):
                return bool(component.get("pass")) == (when == "pass")
        return False
    score = (result.get("namedScores") or {}).get(comp.get("named_score", DEFAULT_COMPENSATION_SCORE))
    return is_number(score) and score >= comp.get("at_least", 1)


def _output(index: int, result: dict[str, Any]) -> dict[str, Any]:
    response = result.get("response") or {}
    rid = result.get("id")
    out = {
        "conversation_id": str(rid)[:200] if rid else f"test-{result.get('testIdx')}-prompt-{result.get('promptIdx')}",
        "test_idx": result.get("testIdx"),
        "prompt_idx": result.get("promptIdx"),
        "vars": result.get("vars"),
        "success": result.get("success"),
        "score": result.get("score"),
        "named_scores": result.get("namedScores") or {},
        "latency_ms": result.get("latencyMs"),
        "cost": result.get("cost"),
        "token_usage": result.get("tokenUsage"),
        "output": response.get("output"),
        "failure_reason": result.get("failureReason"),
        "reason": (result.get("gradingResult") or {}).get("reason"),
        "error": result.get("error"),
    }
    return {k: v for k, v in out.items() if v is not None}


def runs_from_results(
    document: Any, *, options: dict[str, Any], mapping: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs (one per provider) a promptfoo results file stands for, and notes. Raises ``ImportRefused``."""
    if not isinstance(document, dict) or not isinstance(document.get("results"), dict):
        raise _refuse(
            "Not a promptfoo results file: expected an object with a 'results' object (promptfoo eval -o FILE.json).",
            "/results",
            "Missing or not an object.",
        )
    results = document["results"]
    if results.get("version") != RESULTS_VERSION:
        raise _refuse(
            f"promptfoo results format version {results.get('version')!r}; this import reads version "
            f"{RESULTS_VERSION} (promptfoo 0.121 and later).",
            "/results/version",
            f"Not {RESULTS_VERSION}.",
        )
    rows = results.get("results")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise _refuse("The results file has no test results.", "/results/results", "Missing, empty or not objects.")
    eval_id = document.get("evalId")
    if not isinstance(eval_id, str) or not eval_id:
        raise _refuse("The results file has no evalId.", "/evalId", "Missing.")

    picked: dict[str, Any] = {}
    missing = []
    for key in ("rollout", "phase", "cohort"):
        picked[key] = options.get(key) or mapping.get(key)
        if picked[key] is None and key != "cohort":
            missing.append({"pointer": f"/{key}", "message": f"No {key}: give --{key} (or ?{key}=) or the mapping's."})
    if missing:
        raise ImportRefused("The import needs a rollout and a phase; nothing was stored.", errors=missing)

    started = _parse_time(results.get("timestamp"), "/results/timestamp")
    duration = (results.get("stats") or {}).get("durationMs")
    if is_number(duration):
        finished = started + dt.timedelta(milliseconds=duration)
    else:
        finished = _parse_time((document.get("metadata") or {}).get("exportedAt"), "/metadata/exportedAt")
    version = (document.get("metadata") or {}).get("promptfooVersion") or "?"
    description = ((document.get("config") or {}).get("description")) or ""

    groups: dict[str, list[tuple[int, dict]]] = {}
    ids: dict[str, str | None] = {}
    for index, row in enumerate(rows):
        key, pid = _provider_key(row)
        if not key:
            raise _refuse("A result names no provider.", f"/results/results/{index}/provider", "Missing.")
        groups.setdefault(key, []).append((index, row))
        ids.setdefault(key, pid)

    arms = mapping.get("arms") or {}
    metric_map = mapping.get("metrics") or {}
    for key in metric_map:
        if key not in METRICS:
            raise _refuse(f"The mapping names {key!r}, not a catalogue metric.", f"/metrics/{key}", "Unknown metric.")
    comp = mapping.get("compensations") or {}
    explicit_comp = bool(comp)
    if not explicit_comp and any(DEFAULT_COMPENSATION_SCORE in (r.get("namedScores") or {}) for r in rows):
        comp = {"named_score": DEFAULT_COMPENSATION_SCORE}
    notes: list[str] = []
    if not comp:
        notes.append(f"No {DEFAULT_COMPENSATION_SCORE!r} named score; 0 guardrail compensations recorded.")
    elif explicit_comp:
        wanted = comp.get("assertion") or comp.get("named_score")
        known = {
            name
            for r in rows
            for component in (r.get("gradingResult") or {}).get("componentResults") or []
            for name in (
                (component.get("assertion") or {}).get("metric"),
                (component.get("assertion") or {}).get("type"),
            )
        } | {name for r in rows for name in (r.get("namedScores") or {})}
        if wanted not in known:
            raise _refuse(
                f"No result has the {'assertion' if 'assertion' in comp else 'named score'} {wanted!r} that the "
                "mapping counts compensations by.",
                "/results/results",
                f"No {wanted!r}.",
            )

    runs = []
    for key, members in groups.items():
        arm = arms.get(key) or arms.get(ids[key] or "") or (key if key in ARMS else None)
        if arm is None:
            raise _refuse(
                f'Provider {key!r} has no arm: map it in the mapping\'s arms ({{"arms": {{"{key}": '
                '"candidate"}}) or label it baseline or candidate.',
                f"/results/results/{members[0][0]}/provider",
                "No arm for this provider.",
            )
        if len(members) > MAX_OUTPUTS_PER_RUN:
            raise _refuse(
                f"Provider {key!r} has {len(members)} results; a run holds at most {MAX_OUTPUTS_PER_RUN} outputs.",
                "/results/results",
                "Too many results for one run.",
            )
        rows_of = [row for _, row in members]
        n = len(rows_of)
        metrics: dict[str, float] = {"task_success_rate": sum(1 for r in rows_of if r.get("success") is True) / n}
        latencies = [r["latencyMs"] for r in rows_of if is_number(r.get("latencyMs"))]
        if latencies:
            metrics["latency_p95_ms"] = float(percentile(latencies, 95))
        costs = [r["cost"] for r in rows_of if is_number(r.get("cost"))]
        if costs:
            metrics["cost_per_conversation_usd"] = sum(costs) / n
        for metric, score_name in metric_map.items():
            values = [
                (r.get("namedScores") or {}).get(score_name)
                for r in rows_of
                if is_number((r.get("namedScores") or {}).get(score_name))
            ]
            if not values:
                raise _refuse(
                    f"Provider {key!r} has no named score {score_name!r} for {metric}.",
                    "/results/results",
                    f"No {score_name!r}.",
                )
            metrics[metric] = sum(values) / len(values)
        compensations = sum(1 for r in rows_of if comp and _compensated(r, comp))
        if comp:
            metrics.setdefault("guardrail_compensation_rate", compensations / n)
        run = {
            "run_id": truncate(f"promptfoo-{_run_id_part(eval_id)}-{_run_id_part(key)}", 200),
            "rollout": picked["rollout"],
            "phase": picked["phase"],
            "arm": arm,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "conversations": n,
            "guardrail_compensations": compensations,
            "metrics": metrics,
            "harness_version": truncate(f"promptfoo {version}{'; ' + description if description else ''}", 100),
            "outputs": [_output(index, row) for index, row in members],
        }
        if picked["cohort"]:
            run["cohort"] = picked["cohort"]
        runs.append(run)
    return runs, notes


def import_promptfoo_results(
    document: Any,
    *,
    options: dict[str, Any] | None = None,
    mapping: str | Path | dict | None = None,
    dry_run: bool = False,
    actor: Any = None,
) -> ImportOutcome:
    """Import a parsed promptfoo results file: one run per provider, all or nothing in one ingest."""
    options = {k: v for k, v in (options or {}).items() if v not in (None, "")}
    runs, notes = runs_from_results(document, options=options, mapping=load_mapping(mapping))
    result = ingest(runs, actor=actor, dry_run=dry_run)
    return ImportOutcome(result=result, runs=runs, notes=notes, dry_run=dry_run)
