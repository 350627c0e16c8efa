"""Inspect AI logs (``.eval``, a zip that may use zstd, and ``--log-format json``) as evaluation runs.

One log is one run. Read with Inspect's own reader (``inspect_ai.log.read_eval_log``): the optional extra
``pip install '.[inspect]'``. Where each field comes from:

- ``rollout``, ``phase``, ``arm``, ``cohort``: the command's options (the API's query parameters), else the
  mapping, else the log's ``eval.metadata`` (``inspect eval --metadata phase=canary``), else its
  ``eval.task_args`` (``-T arm=candidate``).
- ``run_id``: ``inspect-<eval.eval_id>``, so importing the same log again counts a duplicate.
- ``started_at``/``finished_at``: ``stats.started_at``/``stats.completed_at``.
- ``conversations``: the samples without an error.
- metrics: named scorer metrics, ``{"metrics": {"task_success_rate": "task_success.accuracy"}}`` (that one is the
  default, used when the log has it); ``cost_per_conversation_usd``: the sum of
  ``stats.model_usage[*].total_cost`` over the conversations (absent when the log has no cost);
  ``latency_p95_ms``: a named scorer metric (``{"latency": {"metric": "latency.p95", "unit": "s"}}``) or, by
  default, the 95th percentile of the conversations' ``total_time``.
- ``guardrail_compensations``: conversations whose named score (``{"compensations": {"score": ...,
  "values": [...]}}``, default ``guardrail_compensation`` marked by 1, true or "C") marks a compensation.
- ``outputs``: one per sample (id, epoch, scores, metadata, times, usage, the final completion, the error if
  any); the message history only with ``{"outputs": {"messages": true}}``.
- ``harness_version``: the Inspect version, the task's name and version, and its git revision when present.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from ..errors import ImporterUnavailable, ImportRefused
from ..models import METRICS
from ..schemas import MAX_OUTPUTS_PER_RUN
from . import ImportOutcome, ingest, is_number, load_mapping, percentile, truncate

INSTALL_HINT = (
    "Reading Inspect logs needs Inspect AI's own reader: pip install '.[inspect]' in the dashboard's checkout "
    "(or pip install 'inspect-ai>=0.3.285,<0.4')."
)
DEFAULT_METRICS = {"task_success_rate": "task_success.accuracy"}
DEFAULT_COMPENSATION_SCORE = "guardrail_compensation"
DEFAULT_COMPENSATION_VALUES = [1, True, "C"]
LATENCY_UNITS = {"ms": 1.0, "s": 1000.0}


def _reader():
    try:
        from inspect_ai.log import read_eval_log
    except ImportError as exc:
        raise ImporterUnavailable(INSTALL_HINT) from exc
    return read_eval_log


def read_log(data: bytes, name: str):
    """An ``EvalLog`` from a file's bytes: a zip is the ``.eval`` format, anything else must be a JSON log."""
    read_eval_log = _reader()
    fmt = "eval" if data[:4] == b"PK\x03\x04" else "json"
    try:
        return read_eval_log(io.BytesIO(data), format=fmt)
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"{name} is not an Inspect log: {exc}") from exc
    except Exception as exc:
        # Inspect raises pydantic's ValidationError, ValueError, json errors... for what is not one of its logs.
        if type(exc).__module__.startswith(("pydantic", "json", "inspect_ai")) or isinstance(exc, ValueError):
            raise ImportRefused(f"{name} is not an Inspect log: {str(exc).splitlines()[0][:300]}") from exc
        raise


def _pick(key: str, options: dict[str, Any], mapping: dict[str, Any], log) -> tuple[Any, str]:
    for where, source in (
        ("option", options),
        ("mapping", mapping),
        ("eval.metadata", log.eval.metadata or {}),
        ("eval.task_args", log.eval.task_args or {}),
    ):
        value = source.get(key)
        if value not in (None, ""):
            return value, where
    return None, ""


def _scorer_metrics(log) -> dict[str, float]:
    found: dict[str, float] = {}
    for score in (log.results.scores if log.results else None) or []:
        for metric_name, metric in (score.metrics or {}).items():
            found[f"{score.name}.{metric_name}"] = metric.value
    return found


def _marks(value: Any, values: list[Any]) -> bool:
    # 1 == True in Python; keep booleans and numbers apart so that "values": [true] does not count a 1.0 score.
    return any(type(value) is type(v) and value == v for v in values) or (
        is_number(value) and any(is_number(v) and value == v for v in values)
    )


def _json(model) -> Any:
    return json.loads(model.model_dump_json(exclude_none=True))


def _output(sample, with_messages: bool) -> dict[str, Any]:
    cid = str(sample.id) if sample.epoch == 1 else f"{sample.id}#{sample.epoch}"
    out: dict[str, Any] = {
        "conversation_id": cid[:200],
        "sample_id": sample.id,
        "epoch": sample.epoch,
        "scores": {name: _json(score) for name, score in (sample.scores or {}).items()},
        "metadata": sample.metadata or {},
        "started_at": sample.started_at,
        "completed_at": sample.completed_at,
        "total_time": sample.total_time,
        "working_time": sample.working_time,
        "model_usage": {model: _json(usage) for model, usage in (sample.model_usage or {}).items()},
        "completion": sample.output.completion if sample.output else "",
    }
    for score in out["scores"].values():
        score.pop("history", None)
    if sample.error is not None:
        out["error"] = sample.error.message
    if with_messages:
        out["messages"] = [_json(message) for message in sample.messages]
    return {k: v for k, v in out.items() if v is not None}


def run_from_log(log, name: str, *, options: dict[str, Any], mapping: dict[str, Any]) -> tuple[dict, list[str]]:
    """The run object one Inspect log stands for, and notes on defaults taken. Raises ``ImportRefused``."""
    notes: list[str] = []
    if log.status != "success":
        why = f": {log.error.message}" if getattr(log, "error", None) else ""
        raise ImportRefused(
            f"{name}: the evaluation's status is {log.status!r}{why}. Only a log whose evaluation succeeded "
            "is imported.",
            errors=[{"pointer": "/status", "message": f"Status {log.status!r}, not 'success'."}],
        )
    missing: list[dict[str, str]] = []
    picked: dict[str, Any] = {}
    for key in ("rollout", "phase", "arm", "cohort"):
        value, _where = _pick(key, options, mapping, log)
        if value is None and key != "cohort":
            missing.append(
                {
                    "pointer": f"/eval/metadata/{key}",
                    "message": f"No {key}: give --{key} (or ?{key}=), the mapping's {key!r}, "
                    f"inspect eval --metadata {key}=..., or a task argument -T {key}=....",
                }
            )
        picked[key] = value
    stats = log.stats
    for pointer, value in (("/stats/started_at", stats.started_at), ("/stats/completed_at", stats.completed_at)):
        if not value:
            missing.append({"pointer": pointer, "message": "The log does not say when the evaluation ran."})
    samples = log.samples
    if samples is None:
        missing.append({"pointer": "/samples", "message": "The log has no samples (run without --no-log-samples)."})
    if missing:
        raise ImportRefused(f"{name} lacks what the import needs; nothing was stored.", errors=missing)

    good = [s for s in samples if s.error is None]
    errored = len(samples) - len(good)
    if errored:
        notes.append(f"{name}: {errored} sample(s) with an error are not counted as conversations.")
    if not good:
        raise ImportRefused(
            f"{name}: no sample finished without an error; there is no conversation to count.",
            errors=[{"pointer": "/samples", "message": f"{len(samples)} sample(s), all with an error."}],
        )
    if len(samples) > MAX_OUTPUTS_PER_RUN:
        raise ImportRefused(
            f"{name} has {len(samples)} samples; a run holds at most {MAX_OUTPUTS_PER_RUN} outputs.",
            errors=[{"pointer": "/samples", "message": f"More than {MAX_OUTPUTS_PER_RUN} samples."}],
        )

    scorer_metrics = _scorer_metrics(log)
    metrics: dict[str, float] = {}
    wanted = mapping.get("metrics")
    for key, source in (wanted if wanted is not None else DEFAULT_METRICS).items():
        if key not in METRICS:
            raise ImportRefused(
                f"The mapping names {key!r}, which is not a metric of the catalogue ({', '.join(METRICS)}).",
                errors=[{"pointer": f"/metrics/{key}", "message": "Unknown metric."}],
            )
        if source in scorer_metrics and is_number(scorer_metrics[source]):
            metrics[key] = float(scorer_metrics[source])
        elif wanted is not None:
            raise ImportRefused(
                f"{name} has no scorer metric {source!r} (it has {', '.join(sorted(scorer_metrics)) or 'none'}).",
                errors=[{"pointer": "/results/scores", "message": f"No {source!r}."}],
            )

    latency = mapping.get("latency") or {}
    if "latency_p95_ms" not in metrics:
        if latency.get("metric"):
            unit = latency.get("unit", "ms")
            if unit not in LATENCY_UNITS or not is_number(scorer_metrics.get(latency["metric"])):
                raise ImportRefused(
                    f"{name}: the latency metric {latency['metric']!r} (unit {unit!r}) is not in the log "
                    "or its unit is not ms or s.",
                    errors=[{"pointer": "/results/scores", "message": f"No {latency['metric']!r}."}],
                )
            metrics["latency_p95_ms"] = float(scorer_metrics[latency["metric"]]) * LATENCY_UNITS[unit]
        else:
            times = [s.total_time for s in good if is_number(s.total_time)]
            if len(times) == len(good):
                metrics["latency_p95_ms"] = round(percentile(times, 95) * 1000, 3)
            else:
                notes.append(f"{name}: some samples have no total_time; latency_p95_ms left out.")

    costs = [u.total_cost for u in (stats.model_usage or {}).values() if is_number(u.total_cost)]
    if costs and "cost_per_conversation_usd" not in metrics:
        metrics["cost_per_conversation_usd"] = sum(costs) / len(good)

    comp = mapping.get("compensations") or {}
    score_name = comp.get("score", DEFAULT_COMPENSATION_SCORE)
    values = comp.get("values", DEFAULT_COMPENSATION_VALUES)
    if not isinstance(values, list):
        raise ImportRefused("The mapping's compensations.values must be a list.")
    scored = [s for s in good if score_name in (s.scores or {})]
    if scored:
        compensations = sum(1 for s in scored if _marks(s.scores[score_name].value, values))
        metrics.setdefault("guardrail_compensation_rate", compensations / len(good))
    elif "score" in comp:
        raise ImportRefused(
            f"{name}: no sample has the score {score_name!r} that the mapping counts compensations by.",
            errors=[{"pointer": "/samples", "message": f"No {score_name!r} score."}],
        )
    else:
        compensations = 0
        notes.append(f"{name}: no {score_name!r} score; 0 guardrail compensations recorded.")

    ev = log.eval
    parts = [f"inspect_ai {(ev.packages or {}).get('inspect_ai', '?')}", f"{ev.task} v{ev.task_version}"]
    if ev.revision is not None and ev.revision.commit:
        parts.append(f"git {ev.revision.commit[:12]}{'+dirty' if ev.revision.dirty else ''}")
    with_messages = bool((mapping.get("outputs") or {}).get("messages"))
    run = {
        "run_id": f"inspect-{ev.eval_id}",
        "rollout": picked["rollout"],
        "phase": picked["phase"],
        "arm": picked["arm"],
        "started_at": stats.started_at,
        "finished_at": stats.completed_at,
        "conversations": len(good),
        "guardrail_compensations": compensations,
        "metrics": metrics,
        "harness_version": truncate("; ".join(parts), 100),
        "outputs": [_output(s, with_messages) for s in samples],
    }
    if picked["cohort"] is not None:
        run["cohort"] = picked["cohort"]
    return run, notes


def import_inspect_logs(
    files: list[tuple[str, bytes]],
    *,
    options: dict[str, Any] | None = None,
    mapping: str | Path | dict | None = None,
    dry_run: bool = False,
    actor: Any = None,
) -> ImportOutcome:
    """Import Inspect logs (``(name, bytes)`` pairs) as one run each, all or nothing in one ingest."""
    options = {k: v for k, v in (options or {}).items() if v not in (None, "")}
    parsed = load_mapping(mapping)
    runs, notes = [], []
    for name, data in files:
        run, run_notes = run_from_log(read_log(data, name), name, options=options, mapping=parsed)
        runs.append(run)
        notes += run_notes
    result = ingest(runs, actor=actor, dry_run=dry_run)
    return ImportOutcome(result=result, runs=runs, notes=notes, dry_run=dry_run)
