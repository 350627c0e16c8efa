"""Test data of the fault suite (written in the suite's own database through the services) and the "nothing lost"
checks each scenario ends with."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from .harness import Result

PASSWORD = "faults-pw"  # noqa: S105 - throw-away users of a throw-away database
_names = itertools.count(1)


def make_users() -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group

    from rollout.roles import Role

    # One (slow, PBKDF2) hash for all of them: a throw-away database, seconds saved on a busy machine.
    hashed = make_password(PASSWORD)
    users = {}
    for role in Role:
        user = get_user_model().objects.create_user(username=role.value, email=f"{role.value}@example.com")
        user.password = hashed
        user.save(update_fields=["password"])
        user.groups.add(Group.objects.get(name=role.value))
        users[role.value] = user
    from tests.factories import default_tenants

    default_tenants()
    return users


def make_token() -> str:
    from evaluations.services import api_token_create

    _token, raw = api_token_create(name=f"faults-harness-{next(_names)}", scopes=["ingest", "read"], actor=None)
    return raw


def canary_rollout(label: str, admin: Any) -> Any:
    """A rollout in canary (readiness done), entered now: the harness's runs finish inside its activity period."""
    from rollout.services import rollout_create_from_playbook
    from tests.factories import advance_to, complete_readiness

    rollout = rollout_create_from_playbook(name=f"Faults {label} {next(_names)}", owner=admin)
    complete_readiness(rollout, admin)
    return advance_to(rollout, "canary", admin)


def expired_outputs(rollout: Any, runs: int, per_run: int) -> int:
    """Runs that finished 100 days ago, with raw outputs due for the purge (straight to the tables: test data)."""
    from evaluations.models import EvaluationRun

    finished = timezone.now() - dt.timedelta(days=100)
    phase = rollout.phases.get(kind="preparation")
    made = EvaluationRun.objects.bulk_create(
        [
            EvaluationRun(
                run_id=f"expired-{rollout.pk}-{k:05d}",
                rollout=rollout,
                phase=phase,
                arm="baseline",
                started_at=finished - dt.timedelta(minutes=30),
                finished_at=finished + dt.timedelta(seconds=k),
                conversations=100,
                guardrail_compensations=1,
                harness_version="faults-old",
                content_hash="0" * 64,
                output_count=per_run,
                task_success_rate=0.9,
            )
            for k in range(runs)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO evaluations_runoutput (run_id, conversation_id, data, run_finished_at) "
            "SELECT r.id, 'c' || g, '{\"transcript_excerpt\": \"old\"}'::jsonb, r.finished_at "
            "FROM evaluations_evaluationrun r CROSS JOIN generate_series(1, %s) g WHERE r.id = ANY(%s)",
            [per_run, [r.pk for r in made]],
        )
    return runs * per_run


def expired_left(rollout: Any) -> int:
    from evaluations.models import RunOutput

    cutoff = timezone.now() - dt.timedelta(days=90)
    return RunOutput.objects.filter(run__rollout=rollout, run_finished_at__lt=cutoff).count()


def nothing_lost(
    result: Result,
    *,
    accepted: dict[str, int],
    created_requests: dict[int, int],
    firings: dict[int, int],
) -> None:
    """The issue's checks, at the end of every scenario.

    ``accepted``: run_id -> outputs sent, for every run of a 2xx answer. ``created_requests``: rollout id -> ingest
    requests answered 2xx that created runs (one ledger entry each). ``firings``: rollout id -> rollbacks the data
    calls for.
    """
    from evaluations.models import EvaluationRun, RunOutput, TriggerFiring
    from governance import ledger
    from governance.models import AuditEvent
    from rollout.models import Incident

    from .harness import log

    # Every 2xx-answered run: exactly one row (run_id is unique), with all its outputs.
    stored = dict(
        RunOutput.objects.filter(run__run_id__in=list(accepted))
        .values("run__run_id")
        .annotate(n=Count("id"))
        .values_list("run__run_id", "n")
    )
    rows = EvaluationRun.objects.filter(run_id__in=list(accepted)).count()
    missing_outputs = sum(1 for run_id, n in accepted.items() if stored.get(run_id, 0) != n)
    result.counts["accepted_runs"] = len(accepted)
    result.counts["rows"] = rows
    result.check(rows == len(accepted), f"{len(accepted)} runs answered 2xx but {rows} rows stored")
    result.check(missing_outputs == 0, f"{missing_outputs} accepted runs lack some of their outputs")

    # No output younger than the retention period deleted (in the whole database).
    cutoff = timezone.now() - dt.timedelta(days=90)
    young_expected = EvaluationRun.objects.filter(finished_at__gte=cutoff).aggregate(n=Sum("output_count"))["n"] or 0
    young_stored = RunOutput.objects.filter(run_finished_at__gte=cutoff).count()
    result.check(young_stored == young_expected, f"young outputs: {young_stored} stored of {young_expected}")

    # One ledger entry per committed ingest (answered 2xx or not: a 503 may follow a commit), covering its runs;
    # one per rollback; the chain verifies.
    entries = 0
    for rollout_id, answered in created_requests.items():
        ingests = list(
            AuditEvent.objects.filter(rollout_id=rollout_id, action="evaluations.runs_ingested").values_list(
                "after", flat=True
            )
        )
        entries += len(ingests)
        covered = sum(after["count"] for after in ingests)
        ingested = EvaluationRun.objects.filter(rollout_id=rollout_id, harness_version="faults-1").count()
        result.check(
            covered == ingested, f"rollout {rollout_id}: ledger entries cover {covered} of {ingested} ingested runs"
        )
        result.check(
            len(ingests) >= answered, f"rollout {rollout_id}: {len(ingests)} ingest entries for {answered} 201s"
        )
    result.counts["ingest_ledger_entries"] = entries
    fired_total = 0
    for rollout_id, expected in firings.items():
        fired = TriggerFiring.objects.filter(rollout_id=rollout_id).count()
        incidents = Incident.objects.filter(rollout_id=rollout_id, kind="automatic").count()
        ledgered = AuditEvent.objects.filter(rollout_id=rollout_id, action="rollout.rollback").count()
        fired_total += fired
        result.check(
            (fired, incidents, ledgered) == (expected, expected, expected),
            f"rollout {rollout_id}: {fired} firings, {incidents} incidents, {ledgered} rollback entries; "
            f"expected {expected} of each",
        )
    result.counts["rollbacks"] = fired_total
    verified = ledger.verify_database()
    result.counts["ledger_entries"] = verified.entries
    result.check(verified.ok, f"ledger does not verify: {verified.summary()}")
    log(f"nothing-lost checks: {len(result.failures)} failure(s)")
