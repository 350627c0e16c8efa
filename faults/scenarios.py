"""The fault scenarios of issue 11. Each returns a ``Result`` with its counts; every loop is bounded in count and
time."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import random
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .data import PASSWORD, canary_rollout, expired_left, expired_outputs, make_token, nothing_lost
from .harness import Result, Suite, log, problem_503, run_payload, wait_until


@dataclass
class Ctx:
    suite: Suite
    users: dict[str, Any]
    token: str = ""
    accepted: dict[str, int] = field(default_factory=dict)
    created_requests: dict[int, int] = field(default_factory=lambda: collections.defaultdict(int))
    statuses: collections.Counter = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def admin(self) -> Any:
        return self.users["rollout-admin"]

    def reset(self) -> None:
        self.accepted, self.created_requests, self.statuses = {}, collections.defaultdict(int), collections.Counter()

    def ingest(self, rollout: Any, runs: list[dict], client=None) -> tuple[int, dict, Any]:
        """POST runs; record what a 2xx answer accepted."""
        client = client or self.suite.http()
        status, headers, data = client.api("POST", "/api/v1/evaluation-runs/", self.token, {"runs": runs})
        with self.lock:
            self.statuses[status] += 1
            if 200 <= status < 300:
                for run in runs:
                    self.accepted[run["run_id"]] = len(run.get("outputs", []))
                if data.get("created"):
                    self.created_requests[rollout.pk] += 1
        return status, headers, data

    def finish(self, result: Result, firings: dict[int, int]) -> Result:
        result.counts["http"] = dict(sorted(self.statuses.items()))
        nothing_lost(result, accepted=self.accepted, created_requests=dict(self.created_requests), firings=firings)
        return result


def breaching_pair(rollout: Any, prefix: str) -> list[dict]:
    """Two consecutive candidate runs with 11% compensations, both finished inside the canary's activity period
    (waiting, if need be, until it is 2.5 s old): the guardrail trigger must fire once."""
    entered = rollout.phases.get(kind="canary").entered_at
    young = (entered + dt.timedelta(seconds=2.5) - dt.datetime.now(dt.UTC)).total_seconds()
    if young > 0:
        time.sleep(young)
    now = dt.datetime.now(dt.UTC)
    return [
        run_payload(
            rollout.slug, prefix=prefix, arm="candidate", compensations=11, finished=now - dt.timedelta(seconds=2 - i)
        )
        for i in range(2)
    ]


def fired(rollout: Any) -> int:
    from evaluations.models import TriggerFiring

    return TriggerFiring.objects.filter(rollout=rollout).count()


def job_run(pk: int) -> Any:
    from governance.models import JobRun

    return JobRun.objects.get(pk=pk)


def start_purge() -> int:
    from governance.jobs import job_request
    from governance.models import Job, JobTrigger

    return job_request(job=Job.ENFORCE_RETENTION, actor=None, trigger=JobTrigger.MANUAL).pk


def purge_effect(result: Result, run_pk: int, expired: int, rollout: Any) -> None:
    """The purge happened once: nothing expired left, every batch counted once, one ledger entry, succeeded."""
    from governance.models import AuditEvent, RetentionReceipt

    run = job_run(run_pk)
    left = expired_left(rollout)
    counted = sum(RetentionReceipt.objects.filter(job_run_id=run_pk).values_list("rows_deleted", flat=True))
    receipts = [str(pk) for pk in RetentionReceipt.objects.filter(job_run_id=run_pk).values_list("pk", flat=True)]
    entries = AuditEvent.objects.filter(action="retention.purge", object_id__in=receipts).count()
    result.counts.update(purge_status=run.status, expired=expired, expired_left=left)
    result.counts.update(rows_deleted_receipts=counted, purge_entries=entries)
    result.check(run.status == "succeeded", f"purge run ended {run.status}")
    result.check(left == 0, f"{left} expired outputs left")
    result.check(counted == expired, f"receipts count {counted} deletions of {expired}")
    result.check(entries == 1, f"{entries} retention.purge ledger entries for the run, expected 1")


# --- 3. Redis stopped for 15 s during ingestion ---------------------------------------------------------------------


def redis_outage(ctx: Ctx) -> Result:
    result = Result("3 redis stopped 15 s during ingestion")
    suite = ctx.suite
    load, trig = canary_rollout("s3 load", ctx.admin), canary_rollout("s3 trigger", ctx.admin)
    time.sleep(1.0)
    pages = suite.http()
    result.check(pages.login("auditor", PASSWORD), "could not log in")
    page_statuses: collections.Counter = collections.Counter()
    bad: list[str] = []
    total, threads = 200, 4
    done = threading.Semaphore(0)
    deadline = time.monotonic() + 90

    def harness(n: int) -> None:
        client = suite.http()
        for _ in range(n):
            if time.monotonic() > deadline:
                return
            status, headers, data = ctx.ingest(load, [run_payload(load.slug, prefix="s3", outputs=3) for _ in range(2)])
            if status != 201 and not problem_503(status, headers, data):
                bad.append(f"ingest {status} {str(data)[:120]}")
            done.release()
            time.sleep(0.5)
        del client

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(harness, total // threads) for _ in range(threads)]
        for _ in range(40):  # the outage starts after 40 answers
            done.acquire(timeout=30)
        suite.stop_redis()
        down_at = time.monotonic()
        log("redis stopped")
        status, _h, _data = ctx.ingest(trig, breaching_pair(trig, "s3-breach"))
        result.check(status == 201, f"breaching ingest during the outage answered {status}")
        while time.monotonic() - down_at < 15:
            for path in ("/", f"/rollouts/{load.slug}/", "/evaluations/"):
                code = pages.request("GET", path)[0]
                page_statuses[code] += 1
            time.sleep(1.0)
        from rollout.models import OutboxMessage

        pending_during = OutboxMessage.objects.count()
        suite.start_redis()
        up_at = time.monotonic()
        log(f"redis back after {up_at - down_at:.1f} s; {pending_during} task(s) waiting in the outbox")
        for future in futures:
            future.result(timeout=120)
    ok = wait_until(lambda: fired(trig) >= 1, 120, 1.0)
    lag = time.monotonic() - up_at
    result.check(bool(ok), "the trigger did not fire within 2 minutes of Redis coming back")
    wait_until(lambda: OutboxMessage.objects.count() == 0, 60, 1.0)
    time.sleep(3)  # a second evaluation, if any, would have fired by now
    result.counts.update(
        requests=sum(ctx.statuses.values()),
        outbox_pending_during_outage=pending_during,
        outbox_left=OutboxMessage.objects.count(),
        trigger_lag_after_redis_s=round(lag, 1),
        pages=dict(page_statuses),
        bad=len(bad),
    )
    result.check(not bad, f"unexpected answers: {bad[:3]}")
    result.check(set(page_statuses) <= {200}, f"pages during the outage answered {dict(page_statuses)}")
    result.check(ctx.statuses.get(201, 0) > 0, "no ingest answered 201")
    return ctx.finish(result, {trig.pk: 1, load.pk: 0})


# --- 1. Worker children killed during trigger evaluation and a purge ------------------------------------------------


def child_kills(ctx: Ctx) -> Result:
    result = Result("1 worker child kill -9 during trigger evaluation and purge")
    suite = ctx.suite
    old = canary_rollout("s1 purge", ctx.admin)
    expired = expired_outputs(old, runs=40, per_run=500)
    triggers = [canary_rollout(f"s1 trigger {i}", ctx.admin) for i in range(4)]
    for i in range(5):
        ctx.ingest(old, [run_payload(old.slug, prefix=f"s1-young-{i}", outputs=4) for _ in range(2)])
    kills = purge_kills = 0
    # During the purge: both pool children killed while it deletes, until it is done (at most 4 times).
    run_pk = start_purge()
    wait_until(lambda: expired_left(old) < expired, 60, 0.05)
    while purge_kills < 4 and job_run(run_pk).status in ("queued", "running"):
        purge_kills += suite.kill_pool()
        time.sleep(1.0)
    # During trigger evaluation: each breaching pair is ingested, and both children are killed as its evaluation
    # is taken (the first two rollouts twice in a row).
    eval_kills = 0
    for i, rollout in enumerate(triggers):
        ctx.ingest(rollout, breaching_pair(rollout, "s1-breach"))
        for _ in range(2 if i < 2 else 1):
            time.sleep(0.2)
            eval_kills += suite.kill_pool()
    kills = purge_kills + eval_kills
    log(f"{kills} worker children killed ({purge_kills} during the purge, {eval_kills} during evaluations)")
    done = wait_until(
        lambda: job_run(run_pk).status not in ("queued", "running") and all(fired(r) for r in triggers), 150, 1.0
    )
    result.check(bool(done), "purge or trigger evaluations not done 150 s after the last kill")
    time.sleep(3)  # a second firing, if any, would show by now
    result.counts.update(child_kills=kills, kills_during_purge=purge_kills, kills_during_evaluation=eval_kills)
    purge_effect(result, run_pk, expired, old)
    result.check(purge_kills >= 2, f"only {purge_kills} kills during the purge")
    result.check(eval_kills >= 8, f"only {eval_kills} kills during evaluations")
    return ctx.finish(result, {**{r.pk: 1 for r in triggers}, old.pk: 0})


# --- 2. Worker main process killed and restarted with queued work ---------------------------------------------------


def main_kill(ctx: Ctx) -> Result:
    result = Result("2 worker main killed and restarted with tasks queued")
    suite = ctx.suite
    old = canary_rollout("s2 purge", ctx.admin)
    expired = expired_outputs(old, runs=60, per_run=1000)
    triggers = [canary_rollout(f"s2 trigger {i}", ctx.admin) for i in range(2)]
    time.sleep(1.0)
    run_pk = start_purge()
    wait_until(lambda: expired_left(old) < expired, 60, 0.1)
    worker = suite.worker
    main_pid = worker.pid
    suite.kill_worker_main()
    killed_at = time.monotonic()
    left_at_kill = expired_left(old)
    log(f"worker main {main_pid} and its children killed; {left_at_kill} of {expired} expired outputs left")
    # Work queued while no worker runs.
    for rollout in triggers:
        ctx.ingest(rollout, breaching_pair(rollout, "s2-breach"))
    time.sleep(2)
    suite.start_worker()
    restarted = time.monotonic()
    ok = wait_until(
        lambda: job_run(run_pk).status not in ("queued", "running") and all(fired(r) for r in triggers), 240, 1.0
    )
    recovered = time.monotonic() - restarted
    time.sleep(3)
    result.counts.update(
        kill_to_restart_s=round(restarted - killed_at, 1),
        left_at_kill=left_at_kill,
        recovered_after_restart_s=round(recovered, 1),
    )
    result.check(bool(ok), f"work not done {recovered:.0f} s after the restart")
    purge_effect(result, run_pk, expired, old)
    return ctx.finish(result, {**{r.pk: 1 for r in triggers}, old.pk: 0})


# --- 5. Two beats ---------------------------------------------------------------------------------------------------


_SENT = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Scheduler: Sending due task \S+ \((\S+)\)"
)


def _sends(beats: list[Any]) -> dict[str, list[dt.datetime]]:
    """Every task each beat sent, from their logs: task name -> send times, in order."""
    sends: dict[str, list[dt.datetime]] = collections.defaultdict(list)
    for beat in beats:
        for line in beat.logfile.read_text(errors="replace").splitlines():
            match = _SENT.match(line)
            if match:
                sends[match.group(2)].append(dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
    return {task: sorted(times) for task, times in sends.items()}


def two_beats(ctx: Ctx) -> Result:
    from governance.models import JobRun

    result = Result("5 two beats on a 5 s test schedule")
    suite = ctx.suite
    period, half = 5.0, 14.0
    suite.beat.stop()
    suite.procs.remove(suite.beat)
    started = dt.datetime.now(dt.UTC)
    beats = [suite.start_beat(f"beat-{k}", "faults.settings") for k in "ab"]

    def leading() -> list[Any]:
        return [b for b in beats if "holds the beat lock" in b.logfile.read_text(errors="replace")]

    # The first to start takes the lock; both then run side by side for a while.
    leader = wait_until(leading, 60, 0.5)
    time.sleep(half)
    result.check(len(leading()) == 1, f"{len(leading())} beats held the lock at once")
    if leader:
        leader[0].kill_group(signal.SIGKILL)
        log(f"leader beat {leader[0].name} killed; the other takes over")
    wait_until(lambda: len(leading()) == 2, 30, 0.5)
    time.sleep(half)
    for beat in beats:
        beat.stop()
        if beat in suite.procs:
            suite.procs.remove(beat)
    suite.start_beat()
    # The worker records each run when it takes the task: let it drain the queue.
    wait_until(lambda: suite.queue_length() == 0, 90, 1.0)
    time.sleep(3)
    sends = _sends(beats)
    counts, gaps = {}, {}
    for job in ("check_scheduled_reviews", "verify_audit_log"):
        times = sends.get(f"governance.tasks.{job}", [])
        runs = JobRun.objects.filter(job=job, trigger="schedule", queued_at__gte=started).count()
        counts[job] = {"sent": len(times), "runs": runs}
        gaps[job] = round(min(((b - a).total_seconds() for a, b in itertools.pairwise(times)), default=0), 1)
        # Once per period: never two sends of a job closer than half a period (two beats would send together).
        result.check(len(times) >= 3, f"{job}: only {len(times)} sends")
        result.check(gaps[job] >= period / 2, f"{job}: two sends {gaps[job]} s apart")
        result.check(runs == len(times), f"{job}: {runs} runs for {len(times)} sends")
    taken_over = len(leading())
    result.counts.update(jobs=counts, min_gap_s=gaps, beats_that_led=taken_over, beat_kills=1)
    result.check(taken_over == 2, f"{taken_over} beat(s) held the lock; expected the second to take over")
    return ctx.finish(result, {})


# --- 7. Idempotency storm -------------------------------------------------------------------------------------------


def idempotency_storm(ctx: Ctx) -> Result:
    result = Result("7 idempotency storm (1,000 runs)")
    rollout = canary_rollout("s7", ctx.admin)
    time.sleep(1.0)
    unique = [run_payload(rollout.slug, prefix="s7", outputs=2) for _ in range(300)]
    batches = [unique[i : i + 10] for i in range(0, 300, 10)]
    changed = [
        [{**run, "conversations": run["conversations"] + 1} for run in unique[i : i + 10]] for i in range(0, 100, 10)
    ]
    answers: list[tuple[int, Any]] = []

    def send(batch: list[dict]) -> None:
        status, _h, data = ctx.ingest(rollout, batch)
        answers.append((status, data))

    with ThreadPoolExecutor(6) as pool:
        # Every batch twice at once (concurrent duplicates), then once more (a client retry).
        list(pool.map(send, [b for b in batches for _ in range(2)]))
        list(pool.map(send, batches))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, changed))
    from evaluations.models import EvaluationRun

    created = sum(d["created"] for s, d in answers if s == 201)
    duplicates = sum(d["duplicates"] for s, d in answers if s == 201)
    conflicts = sum(1 for s, d in answers if s == 409 and d.get("code") == "run-conflict")
    rows = EvaluationRun.objects.filter(rollout=rollout).count()
    sent = sum(len(b) for b in batches) * 3 + sum(len(b) for b in changed)
    result.counts.update(runs_sent=sent, created=created, duplicates=duplicates, conflicts_409=conflicts)
    result.check(rows == 300 == created, f"{rows} rows, {created} created, for 300 distinct runs")
    result.check(duplicates == 600, f"{duplicates} duplicates counted, expected 600")
    result.check(conflicts == len(changed), f"{conflicts} conflicts of {len(changed)} changed batches")
    result.check(
        all(s in (201, 409) for s, _ in answers), f"other answers: {collections.Counter(s for s, _ in answers)}"
    )
    for run_id in [r["run_id"] for b in changed for r in b]:
        ctx.accepted[run_id] = 2  # the original content stays, whole
    return ctx.finish(result, {rollout.pk: 0})


# --- 4. PostgreSQL connections terminated -----------------------------------------------------------------------


def pg_terminate(ctx: Ctx) -> Result:
    result = Result("4 pg_terminate_backend every 2 s")
    suite = ctx.suite
    load, trig = canary_rollout("s4 load", ctx.admin), canary_rollout("s4 trigger", ctx.admin)
    time.sleep(1.0)
    stop = threading.Event()
    terminated = [0]
    first_failures, retried_duplicates, gave_up = [0], [0], []
    page_statuses: collections.Counter = collections.Counter()
    bad: list[str] = []

    def killer() -> None:
        for _ in range(30):
            if stop.wait(2.0):
                return
            out = suite.psql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{suite.db}' AND pid <> pg_backend_pid() AND application_name <> 'faults-runner'"
            )
            terminated[0] += int(out or 0)

    def harness(n: int) -> None:
        client = suite.http()
        for _ in range(n):
            if stop.is_set():
                return
            runs = [run_payload(load.slug, prefix="s4", outputs=3) for _ in range(2)]
            for attempt in range(8):  # the client retries the same request until it is answered 201
                status, headers, data = ctx.ingest(load, runs, client)
                if status == 201:
                    if attempt and data["duplicates"]:
                        retried_duplicates[0] += 1
                    break
                if attempt == 0:
                    first_failures[0] += 1
                if status not in (0, 503) or (status == 503 and not problem_503(status, headers, data)):
                    bad.append(f"ingest {status} {str(data)[:120]}")
                time.sleep(0.5)
            else:
                gave_up.append(runs[0]["run_id"])
            time.sleep(0.2)

    logins: collections.Counter = collections.Counter()

    # Logged in before the terminations start (a login takes seconds on a busy machine: it would rarely finish
    # between two of them).
    reading = suite.http()
    result.check(reading.login("auditor", PASSWORD), "the reader could not log in")

    def reader() -> None:
        # A login may meet a terminated connection (503) and is tried again; a page answering 302 while the
        # session was good is a lost login (the checks below fail on it).
        client, logged_in = reading, True
        while not stop.wait(0.5):
            if not logged_in:
                logged_in = client.login("auditor", PASSWORD)
                logins["ok" if logged_in else "failed"] += 1
                continue
            for path in ("/", f"/rollouts/{load.slug}/"):
                code = client.request("GET", path)[0]
                page_statuses[code] += 1
                if code == 302:
                    logged_in = False
                    break

    threads = [threading.Thread(target=killer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(harness, 40) for _ in range(3)]
        time.sleep(8)
        for _ in range(8):
            status, _h, _d = ctx.ingest(trig, breaching_pair(trig, "s4-breach"))
            if status == 201:
                break
            time.sleep(0.5)
        for future in futures:
            future.result(timeout=180)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    ok = wait_until(lambda: fired(trig) >= 1, 120, 1.0)
    result.check(bool(ok), "the trigger did not fire")
    time.sleep(3)
    result.counts.update(
        backends_terminated=terminated[0],
        first_attempt_failures=first_failures[0],
        retries_answered_duplicate=retried_duplicates[0],
        gave_up=len(gave_up),
        pages=dict(page_statuses),
        logins=dict(logins),
    )
    result.check(terminated[0] >= 10, f"only {terminated[0]} backends terminated")
    result.check(not bad, f"unexpected answers: {bad[:3]}")
    result.check(not gave_up, f"{len(gave_up)} ingests never answered 201 after 8 tries")
    result.check(set(page_statuses) <= {200, 503}, f"pages answered {dict(page_statuses)}")
    result.check(page_statuses[200] >= 5, f"only {page_statuses[200]} pages answered 200")
    # Web and workers recovered without a restart: a fresh ingest and a page answer now.
    status, _h, _d = ctx.ingest(load, [run_payload(load.slug, prefix="s4-after", outputs=1)])
    result.check(status == 201, f"ingest after the kills answered {status}")
    return ctx.finish(result, {trig.pk: 1, load.pk: 0})


# --- 9. Webhook receiver down, slow, answering 500 -----------------------------------------------------------------


def webhooks(ctx: Ctx) -> Result:
    import http.server

    from rollout import notifications
    from rollout.models import Rollout, WebhookDelivery

    result = Result("9 webhook receiver down, slow, 500")
    seen: collections.Counter = collections.Counter()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen[self.path] += 1
            if self.path == "/slow":
                time.sleep(3)  # beyond the suite's WEBHOOK_TIMEOUT_SECONDS (2)
            code = 500 if self.path == "/error" or (self.path == "/flaky" and seen[self.path] < 3) else 200
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    from .harness import free_port

    rollout = canary_rollout("s9", ctx.admin)
    urls = {"down": f"http://127.0.0.1:{free_port()}/down", "slow": f"{base}/slow", "error": f"{base}/error"}
    urls["flaky"] = f"{base}/flaky"
    for name, url in urls.items():
        notifications.webhook_endpoint_create(rollout=rollout, name=name, url=url, actor=None)
    time.sleep(1.0)
    try:
        sent = time.monotonic()
        status, _h, _d = ctx.ingest(rollout, breaching_pair(rollout, "s9-breach"))
        result.check(status == 201, f"breaching ingest answered {status}")
        wait_until(lambda: Rollout.objects.get(pk=rollout.pk).status == "rolled_back", 60, 0.2)
        rolled_back_after = time.monotonic() - sent
        deliveries = WebhookDelivery.objects.filter(incident__rollout=rollout)
        # The deliveries are recorded by the worker right after the rollback commits, then attempted.
        wait_until(lambda: deliveries.count() == len(urls), 30, 0.2)
        done = wait_until(lambda: not deliveries.filter(status="pending").exists(), 150, 1.0)
        result.check(bool(done), "deliveries still pending after 150 s")
    finally:
        server.shutdown()
        server.server_close()
    outcome = {}
    for delivery in WebhookDelivery.objects.filter(incident__rollout=rollout).select_related("endpoint"):
        attempts = list(delivery.attempts.order_by("number"))
        outcome[delivery.endpoint.name] = (delivery.status, delivery.attempt_count)
        result.check(
            [a.number for a in attempts] == list(range(1, delivery.attempt_count + 1)),
            f"{delivery.endpoint.name}: attempts {[a.number for a in attempts]}, count {delivery.attempt_count}",
        )
        gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(attempts)]
        # Backoff base 1 s in the suite: 1, 2, 4 s (the relay may add up to its period).
        result.check(all(gap >= 2**k * 0.9 for k, gap in enumerate(gaps)), f"{delivery.endpoint.name}: gaps {gaps}")
    expected = {"down": ("failed", 4), "slow": ("failed", 4), "error": ("failed", 4), "flaky": ("delivered", 3)}
    result.counts.update(rolled_back_after_s=round(rolled_back_after, 1), deliveries=outcome, posts=dict(seen))
    result.check(outcome == expected, f"deliveries {outcome}, expected {expected}")
    result.check(rolled_back_after < 30, f"the rollback took {rolled_back_after:.0f} s")
    return ctx.finish(result, {rollout.pk: 1})


def fresh_token(ctx: Ctx) -> None:
    ctx.token = make_token()


# --- 6. 50 concurrent approve/apply calls over HTTP ----------------------------------------------------------------

_VERSION = re.compile(rb'name="version" value="([^"]+)"')


def approvals(ctx: Ctx) -> Result:
    """Six transition requests into canary (four whose gates pass, two with readiness left open), decided and
    applied by 50 concurrent HTTP clients: every required role approves three times at once, applies are pressed
    five times at once before and after the approvals are complete."""
    from governance import services as gov
    from governance.models import AuditEvent, TransitionApproval, TransitionRequest
    from governance.selectors import approver_config
    from rollout.models import Phase
    from rollout.services import rollout_create_from_playbook
    from tests.factories import complete_readiness
    from tests.governance.helpers import sign_all

    result = Result("6 50 concurrent approve/apply calls over HTTP")
    suite, admin = ctx.suite, ctx.admin
    deadlocks_before = int(suite.psql(f"SELECT deadlocks FROM pg_stat_database WHERE datname = '{suite.db}'") or 0)
    requests, ready = [], set()
    for i in range(6):
        rollout = rollout_create_from_playbook(name=f"Faults s6 {i}", owner=admin)
        if i < 4:
            complete_readiness(rollout, admin)
            ready.add(rollout.pk)
        sign_all(rollout, ctx.users)
        requests.append(gov.transition_request_create(rollout=rollout, justification="Faults s6", actor=admin))
    required = {r.pk: approver_config(r.rollout)["canary"] for r in requests}
    sessions: dict[str, Any] = {}
    for role in {role for roles in required.values() for role in roles} | {"rollout-admin"}:
        client = suite.http()
        result.check(client.login(role, PASSWORD), f"{role} could not log in")
        sessions[role] = client
    statuses: collections.Counter = collections.Counter()
    slow: list[float] = []

    def call(method: str, client: Any, path: str, data: dict | None = None) -> tuple[int, bytes]:
        started = time.monotonic()
        if method == "GET":
            status, _h, body = client.request("GET", path)
        else:
            status, _h, body = client.post_form(path, data or {})
        slow.append(time.monotonic() - started)
        with ctx.lock:
            statuses[f"{method} {status}"] += 1
        return status, body

    def base(request: Any) -> str:
        return f"/rollouts/{request.rollout.slug}/transitions/{request.pk}/"

    def approve(request: Any, role: str) -> None:
        client = sessions[role]
        status, body = call("GET", client, base(request))
        match = _VERSION.search(body) if status == 200 else None
        data = {"version": match.group(1).decode() if match else "", "role": role, "decision": "approve"}
        call("POST", client, base(request) + "decide/", {**data, "comment": ""})

    def apply(request: Any) -> None:
        client = sessions["rollout-admin"]
        status, body = call("GET", client, base(request) + "apply/")
        match = _VERSION.search(body) if status == 200 else None
        call("POST", client, base(request) + "apply/", {"version": match.group(1).decode() if match else ""})

    def undecided() -> list[tuple[Any, str]]:
        done = set(TransitionApproval.objects.values_list("request_id", "role"))
        return [(r, role) for r in requests for role in required[r.pk] if (r.pk, role) not in done]

    calls = 0
    with ThreadPoolExecutor(50) as pool:
        # Round 1: every approval three times at once, mixed with applies pressed too early.
        work = [(approve, (r, role)) for r in requests for role in required[r.pk] for _ in range(3)]
        work += [(apply, (r,)) for r in requests for _ in range(4)]
        random.Random(6).shuffle(work)
        list(pool.map(lambda w: w[0](*w[1]), work))
        calls += len(work)
        # Approvals refused as stale (another role decided in between) are sent again, from a fresh page.
        for _ in range(6):
            left = undecided()
            if not left:
                break
            work = [(r, role) for r, role in left for _ in range(2)]
            list(pool.map(lambda w: approve(*w), work))
            calls += len(work)
        # Round 2: five applies at once per request.
        work = [r for r in requests for _ in range(5)]
        list(pool.map(apply, work))
        calls += len(work)
    deadlocks = int(suite.psql(f"SELECT deadlocks FROM pg_stat_database WHERE datname = '{suite.db}'") or 0)
    applied = 0
    for request in requests:
        request = TransitionRequest.objects.get(pk=request.pk)
        approvals_of = list(TransitionApproval.objects.filter(request=request))
        roles = sorted(a.role for a in approvals_of)
        apply_entries = AuditEvent.objects.filter(action="transition.apply", object_id=str(request.pk)).count()
        active = Phase.objects.get(rollout_id=request.rollout_id, status="active").kind
        result.check(
            roles == sorted(required[request.pk]), f"request {request.pk}: approvals {roles}, required {required}"
        )
        if request.rollout_id in ready:
            applied += request.status == "applied"
            result.check(
                (request.status, apply_entries, active) == ("applied", 1, "canary"),
                f"request {request.pk} (gates pass): {request.status}, {apply_entries} apply entries, in {active}",
            )
            last_approval = max(a.decided_at for a in approvals_of)
            result.check(
                request.closed_at is not None and last_approval <= request.closed_at,
                f"request {request.pk} applied before its last approval",
            )
        else:
            result.check(
                (request.status, apply_entries, active) == ("approved", 0, "preparation"),
                f"request {request.pk} (readiness open): {request.status}, {apply_entries} apply entries, in {active}",
            )
    bad = {k: v for k, v in statuses.items() if not k.endswith((" 200", " 302"))}
    slow.sort()
    result.counts.update(
        requests=len(requests),
        http_calls=sum(statuses.values()),
        actions=calls,
        answers=dict(sorted(statuses.items())),
        applied=applied,
        approvals=TransitionApproval.objects.filter(request__in=requests).count(),
        deadlocks=deadlocks - deadlocks_before,
        p95_s=round(slow[int(len(slow) * 0.95)], 2) if slow else None,
    )
    result.check(not bad, f"answers other than 200/302: {bad}")
    result.check(applied == len(ready), f"{applied} of {len(ready)} requests applied")
    result.check(deadlocks == deadlocks_before, f"{deadlocks - deadlocks_before} deadlock(s) in PostgreSQL")
    return ctx.finish(result, {})


# --- 8. Mixed load with abusive requests ---------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


_abuse_numbers = itertools.count(1)


def _abuse(suite: Suite, token: str, slug: str) -> list[tuple[str, Any]]:
    """One round of abusive requests: (label, callable returning the status the server answered)."""
    huge = b'{"runs": [' + b" " * (33 * 1024 * 1024) + b"]}"
    nested = b'{"runs": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    ingest = "/api/v1/evaluation-runs/"

    def post(body: bytes, headers: dict[str, str], path: str = ingest) -> int:
        # A marker in the query string finds the request in gunicorn's access log when the client saw no answer.
        marker = f"abuse={next(_abuse_numbers)}"
        status = suite.http().request("POST", f"{path}?{marker}", body, headers)[0]
        return status or (suite.access_status(marker) or 0)

    def many_headers() -> int:
        return suite.http().request("GET", "/login/", None, {f"X-Flood-{k}": "x" for k in range(150)})[0]

    big_batch = {"runs": [run_payload(slug, prefix="s8-big", outputs=0) for _ in range(501)]}
    return [
        ("huge body", lambda: post(huge, bearer)),
        ("huge form", lambda: post(b"a=" + b"x" * (5 * 1024 * 1024), form, "/login/")),
        ("malformed json", lambda: post(b'{"runs": [{"run_id": ', bearer)),
        ("not utf-8", lambda: post(b'{"runs": ["\xff\xfe"]}', bearer)),
        ("deeply nested json", lambda: post(nested, bearer)),
        ("wrong shape", lambda: post(json.dumps({"runs": "all of them"}).encode(), bearer)),
        ("501 runs", lambda: post(json.dumps(big_batch).encode(), bearer)),
        ("bad token", lambda: post(b'{"runs": []}', {**bearer, "Authorization": "Bearer not-a-token"})),
        ("no token", lambda: suite.http().request("GET", "/api/v1/rollouts/")[0]),
        ("long url", lambda: suite.http().request("GET", "/rollouts/" + "a" * 10000 + "/")[0]),
        ("many headers", many_headers),
        ("unknown page", lambda: suite.http().request("GET", "/no/such/page/")[0]),
        ("bad method", lambda: suite.http().request("DELETE", "/api/v1/rollouts/", None, bearer)[0]),
    ]


def mixed_load(ctx: Ctx, seconds: float = 45.0) -> Result:
    result = Result(f"8 mixed load for {seconds:.0f} s with abusive requests")
    suite = ctx.suite
    load = canary_rollout("s8 load", ctx.admin)
    burst_token = make_token()
    time.sleep(1.0)
    stop = threading.Event()
    pages = ["/", f"/rollouts/{load.slug}/", "/evaluations/", "/audit/", "/compliance/jobs/"]
    pages += ["/compliance/retention/", f"/rollouts/{load.slug}/transitions/", "/static/js/confirm.js"]
    latencies: list[float] = []
    page_statuses: collections.Counter = collections.Counter()
    abuse_statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    burst_statuses: collections.Counter = collections.Counter()
    rss: dict[int, int] = {}
    bad_ingest: list[str] = []

    probes: collections.Counter = collections.Counter()

    def browser(username: str) -> None:
        client = suite.http()
        if not client.login(username, PASSWORD):
            page_statuses["login failed"] += 1
            return
        # A user browses the pages their roles open (a 403 for the others is the access matrix, not a fault).
        mine = []
        for path in pages:
            status = client.request("GET", path)[0]
            with ctx.lock:
                probes[status] += 1
            if status == 200:
                mine.append(path)
        for path in itertools.cycle(mine or ["/"]):
            if stop.is_set():
                return
            started = time.monotonic()
            status = client.request("GET", path)[0]
            with ctx.lock:
                latencies.append(time.monotonic() - started)
                page_statuses[status] += 1
            time.sleep(0.2)

    def harness() -> None:
        client = suite.http()
        while not stop.wait(0.4):
            status, _h, data = ctx.ingest(
                load, [run_payload(load.slug, prefix="s8", outputs=3) for _ in range(2)], client
            )
            if status != 201:
                bad_ingest.append(f"{status} {str(data)[:120]}")

    def abuser() -> None:
        while not stop.is_set():
            for label, send in _abuse(suite, ctx.token, load.slug):
                if stop.is_set():
                    return
                status = send()
                with ctx.lock:
                    abuse_statuses[label][status] += 1
                time.sleep(0.3)
            # A burst: 60 reads at once on one token.
            burst = suite.http()

            def read(_: int, client: Any = burst) -> int:
                return client.api("GET", "/api/v1/rollouts/", burst_token)[0]

            with ThreadPoolExecutor(12) as pool:
                for status in pool.map(read, range(60)):
                    burst_statuses[status] += 1

    def memory() -> None:
        while not stop.wait(2.0):
            for pid in suite.web.children():
                rss[pid] = max(rss.get(pid, 0), _rss_kib(pid))

    users = ["auditor", "rollout-admin", "product-lead", "compliance-reviewer"]
    threads = [threading.Thread(target=browser, args=(u,)) for u in users]
    threads += [threading.Thread(target=harness) for _ in range(2)]
    threads += [threading.Thread(target=abuser), threading.Thread(target=memory)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    result.check(not any(t.is_alive() for t in threads), "a load thread did not stop within 120 s")
    latencies.sort()
    abuse_5xx = {label: dict(c) for label, c in abuse_statuses.items() if any(s >= 500 or s == 0 for s in c)}
    all_abuse = collections.Counter()
    for counter in abuse_statuses.values():
        all_abuse.update(counter)
    result.counts.update(
        page_requests=len(latencies),
        pages=dict(page_statuses),
        p50_read_s=round(latencies[len(latencies) // 2], 3) if latencies else None,
        p95_read_s=round(latencies[int(len(latencies) * 0.95)], 3) if latencies else None,
        abusive=sum(all_abuse.values()),
        abusive_answers=dict(sorted(all_abuse.items())),
        burst_answers=dict(burst_statuses),
        web_workers=len(rss),
        web_worker_rss_max_mib=round(max(rss.values(), default=0) / 1024, 1),
    )
    result.check(set(page_statuses) <= {200}, f"pages answered {dict(page_statuses)}")
    result.check(set(probes) <= {200, 403}, f"the first look at each page answered {dict(probes)}")
    result.check(not bad_ingest, f"ingests not answered 201: {bad_ingest[:3]}")
    result.check(not abuse_5xx, f"abusive requests answered 5xx or no answer: {abuse_5xx}")
    result.check(all(s < 500 and s != 0 for s in burst_statuses), f"burst answered {dict(burst_statuses)}")
    result.check(len(latencies) > 50, f"only {len(latencies)} page reads")
    return ctx.finish(result, {load.pk: 0})
