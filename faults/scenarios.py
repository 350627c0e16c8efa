"""The fault scenarios of issue 11. Each returns a ``Result`` with its counts; every loop is bounded in count and
time."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
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


def breaching_pair(slug: str, prefix: str) -> list[dict]:
    """Two consecutive candidate runs with 11% compensations: the guardrail trigger must fire once."""
    now = dt.datetime.now(dt.UTC)
    return [
        run_payload(slug, prefix=prefix, arm="candidate", compensations=11, finished=now - dt.timedelta(seconds=2 - i))
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
        status, _h, _data = ctx.ingest(trig, breaching_pair(trig.slug, "s3-breach"))
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
    triggers = [canary_rollout(f"s1 trigger {i}", ctx.admin) for i in range(3)]
    time.sleep(1.0)
    for i in range(10):
        ctx.ingest(old, [run_payload(old.slug, prefix=f"s1-young-{i}", outputs=4) for _ in range(2)])
    kills = 0
    run_pk = start_purge()
    wait_until(lambda: job_run(run_pk).status == "running", 30, 0.1)
    deadline = time.monotonic() + 60
    pending = list(triggers)
    while time.monotonic() < deadline and kills < 12:
        if pending:
            rollout = pending.pop()
            ctx.ingest(rollout, breaching_pair(rollout.slug, "s1-breach"))
            time.sleep(0.15)  # the evaluation is being worked on
        children = suite.worker.children()
        if children:
            suite.worker_kill(children[0])
            kills += 1
        time.sleep(0.8)
        if not pending and job_run(run_pk).status not in ("queued", "running"):
            break
    log(f"{kills} worker children killed")
    wait_until(lambda: job_run(run_pk).status not in ("queued", "running"), 120, 1.0)
    wait_until(lambda: all(fired(r) for r in triggers), 90, 1.0)
    time.sleep(3)
    result.counts["child_kills"] = kills
    purge_effect(result, run_pk, expired, old)
    result.check(kills >= 3, f"only {kills} kills happened")
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
        ctx.ingest(rollout, breaching_pair(rollout.slug, "s2-breach"))
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


def two_beats(ctx: Ctx) -> Result:
    from governance.models import JobRun

    result = Result("5 two beats on a 5 s test schedule")
    suite = ctx.suite
    period, window = 5.0, 44.0
    suite.beat.stop()
    suite.procs.remove(suite.beat)
    started = dt.datetime.now(dt.UTC)
    beats = [suite.start_beat(f"beat-{k}", "faults.settings") for k in "ab"]
    time.sleep(window / 2)
    leader = next((b for b in beats if "holds the beat lock" in b.logfile.read_text(errors="replace")), None)
    result.check(leader is not None, "no beat took the lock")
    if leader is not None:
        leader.kill_group(signal.SIGKILL)
        log(f"leader beat {leader.name} killed; the other takes over")
    time.sleep(window / 2)
    for beat in beats:
        beat.stop()
        if beat in suite.procs:
            suite.procs.remove(beat)
    ended = dt.datetime.now(dt.UTC)
    suite.start_beat()
    # The worker records each run when it takes the task: let it drain the queue.
    wait_until(lambda: suite.queue_length() == 0, 90, 1.0)
    time.sleep(3)
    counts = {}
    for job in ("check_scheduled_reviews", "verify_audit_log"):
        counts[job] = JobRun.objects.filter(job=job, trigger="schedule", queued_at__gte=started).count()
    expected = (ended - started).total_seconds() / period
    taken_over = sum(1 for b in beats if "holds the beat lock" in b.logfile.read_text(errors="replace"))
    result.counts.update(periods=round(expected, 1), runs=counts, beats_that_led=taken_over)
    for job, n in counts.items():
        # One beat sends one per period (less a few around start-up and the take-over); two would send twice that.
        result.check(expected - 4 <= n <= expected + 1, f"{job} ran {n} times in {expected:.1f} periods")
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

    def reader() -> None:
        client = suite.http()
        client.login("auditor", PASSWORD)
        while not stop.wait(0.5):
            for path in ("/", f"/rollouts/{load.slug}/"):
                code = client.request("GET", path)[0]
                page_statuses[code] += 1
                if code == 302:  # the session was fine; a 503 during login is possible
                    client.login("auditor", PASSWORD)

    threads = [threading.Thread(target=killer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(harness, 40) for _ in range(3)]
        time.sleep(8)
        for _ in range(8):
            status, _h, _d = ctx.ingest(trig, breaching_pair(trig.slug, "s4-breach"))
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
    )
    result.check(terminated[0] >= 10, f"only {terminated[0]} backends terminated")
    result.check(not bad, f"unexpected answers: {bad[:3]}")
    result.check(not gave_up, f"{len(gave_up)} ingests never answered 201 after 8 tries")
    result.check(set(page_statuses) <= {200, 503}, f"pages answered {dict(page_statuses)}")
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
        status, _h, _d = ctx.ingest(rollout, breaching_pair(rollout.slug, "s9-breach"))
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
