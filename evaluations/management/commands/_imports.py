"""What the import commands print: one line per run, the notes, a summary; a refusal with its pointers."""

from __future__ import annotations

from ...errors import ProblemWithFields
from ...importers import ImportOutcome


def describe_problem(exc: ProblemWithFields) -> str:
    lines = [f"{exc.title}: {exc.message}"]
    lines += [f"  {e['pointer'] or '/'}: {e['message']}" for e in exc.errors[:20]]
    if len(exc.errors) > 20:
        lines.append(f"  … and {len(exc.errors) - 20} more")
    lines.append("Nothing was stored.")
    return "\n".join(lines)


def report(command, outcome: ImportOutcome) -> None:
    for run in outcome.runs:
        metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(run["metrics"].items()))
        command.stdout.write(
            f"{run['run_id']}: {run['rollout']}/{run['phase']}/{run['arm']}"
            f"{'/' + run['cohort'] if run.get('cohort') else ''}, {run['conversations']} conversation(s), "
            f"{run['guardrail_compensations']} compensation(s), {len(run['outputs'])} output(s)"
            f"{'; ' + metrics if metrics else ''}"
        )
    for note in outcome.notes:
        command.stdout.write(f"note: {note}")
    result = outcome.result
    verb = "would be" if outcome.dry_run else "were"
    command.stdout.write(
        command.style.SUCCESS(
            f"{len(outcome.runs)} run(s): {len(result.created)} {verb} created, {len(result.duplicates)} "
            f"duplicate(s){' (dry run: nothing stored)' if outcome.dry_run else ''}."
        )
    )
