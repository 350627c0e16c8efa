"""Builders for the compliance tests: runs with raw outputs at chosen finish times, tampering, jobs."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable

from django.db import connection

from evaluations.models import EvaluationRun, RunOutput
from governance.models import AuditEvent
from rollout.models import Rollout

_ids = itertools.count(1)


def runs_with_outputs(
    rollout: Rollout, finished: Iterable[dt.datetime], *, outputs: int = 2, arm: str = "candidate", phase=None
) -> list[EvaluationRun]:
    """One run per finish time, each with ``outputs`` raw outputs (written straight to the tables: test data)."""
    phase = phase or rollout.phases.get(kind="preparation")
    runs = EvaluationRun.objects.bulk_create(
        [
            EvaluationRun(
                run_id=f"ret-{next(_ids):06d}",
                rollout=rollout,
                phase=phase,
                arm=arm,
                started_at=at - dt.timedelta(minutes=30),
                finished_at=at,
                conversations=100,
                guardrail_compensations=1,
                harness_version="h-1",
                content_hash="0" * 64,
                output_count=outputs,
                task_success_rate=0.9,
            )
            for at in finished
        ]
    )
    RunOutput.objects.bulk_create(
        [
            RunOutput(
                run=run,
                conversation_id=f"c{k}",
                data={"transcript_excerpt": "hi", "k": k},
                run_finished_at=run.finished_at,
            )
            for run in runs
            for k in range(outputs)
        ]
    )
    return runs


def surviving(runs: Iterable[EvaluationRun]) -> set[str]:
    """The run_ids among ``runs`` that still have outputs."""
    ids = {r.pk: r.run_id for r in runs}
    return {ids[pk] for pk in RunOutput.objects.filter(run_id__in=ids).values_list("run_id", flat=True).distinct()}


def tamper_with_ledger(sequence: int) -> None:
    """Alter one entry behind the application's back (on PostgreSQL with the append-only trigger off)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE governance_auditevent DISABLE TRIGGER audit_ledger_append_only")
            cursor.execute("UPDATE governance_auditevent SET reason = 'nothing to see' WHERE sequence = %s", [sequence])
            cursor.execute("ALTER TABLE governance_auditevent ENABLE TRIGGER audit_ledger_append_only")
    else:
        AuditEvent.objects.filter(sequence=sequence).update(reason="nothing to see")


def database_url() -> str:
    """The URL of the test database, for a subprocess that must see the same data."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
