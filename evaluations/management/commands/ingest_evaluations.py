"""``manage.py ingest_evaluations FILE.jsonl``: load run objects (one per line) through the ingest service.

Each batch (500 runs by default) is all or nothing, as through the API; the
command stops at the first bad batch, naming the lines at fault. Batches
before it stay stored, and running the file again is safe: stored runs count
as duplicates.
"""

from __future__ import annotations

import re
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from rollout.context import Actor, acting_as
from rollout.inputs import InputRejected, load_json

from ...errors import ProblemWithFields
from ...schemas import MAX_RUNS_PER_REQUEST
from ...services import ingest_runs


class Command(BaseCommand):
    help = "Ingest evaluation runs from a JSON Lines file (one run object per line), through the ingest service."

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path to a .jsonl file, or - for standard input.")
        parser.add_argument("--batch-size", type=int, default=MAX_RUNS_PER_REQUEST, help="Runs per transaction.")

    def handle(self, *args, file: str, batch_size: int, **options):
        if not 1 <= batch_size <= MAX_RUNS_PER_REQUEST:
            raise CommandError(f"--batch-size must be 1 to {MAX_RUNS_PER_REQUEST}.")
        try:
            stream = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        created = duplicates = lines_read = 0
        started = time.monotonic()
        batch: list[tuple[int, object]] = []
        with stream, acting_as(Actor(kind="system", name="manage.py ingest_evaluations")):
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    batch.append((number, load_json(line)))
                except InputRejected as exc:
                    if exc.code == "malformed-json":
                        raise CommandError(
                            f"Line {number}: not valid JSON ({exc.__cause__}). Nothing of this batch stored."
                        ) from exc
                    where = "; ".join(f"{e['pointer'] or '/'}: {e['message']}" for e in exc.errors)
                    raise CommandError(
                        f"Line {number}: {exc.message}{f' ({where})' if where else ''} Nothing of this batch stored."
                    ) from exc
                lines_read += 1
                if len(batch) == batch_size:
                    c, d = self._ingest(batch)
                    created, duplicates, batch = created + c, duplicates + d, []
                    self._progress(lines_read, created, duplicates, started)
            if batch:
                c, d = self._ingest(batch)
                created, duplicates = created + c, duplicates + d
                self._progress(lines_read, created, duplicates, started)
        self.stderr.write("")
        seconds = time.monotonic() - started
        self.stdout.write(
            self.style.SUCCESS(
                f"{lines_read} run(s) read: {created} created, {duplicates} duplicate(s), in {seconds:.1f} s."
            )
        )

    def _ingest(self, batch: list[tuple[int, object]]) -> tuple[int, int]:
        try:
            result = ingest_runs(payload={"runs": [run for _, run in batch]})
        except ProblemWithFields as exc:
            lines = []
            for error in exc.errors[:20]:
                match = re.match(r"^/runs/(\d+)(.*)$", error["pointer"])
                where = (
                    f"line {batch[int(match.group(1))][0]}{match.group(2) and ' ' + match.group(2)}"
                    if match
                    else "batch"
                )
                lines.append(f"  {where}: {error['message']}")
            more = f"\n  … and {len(exc.errors) - 20} more" if len(exc.errors) > 20 else ""
            raise CommandError(
                f"{exc.title}: {exc.message}\n"
                + "\n".join(lines)
                + more
                + f"\nLines {batch[0][0]}-{batch[-1][0]} not stored."
            ) from exc
        return len(result.created), len(result.duplicates)

    def _progress(self, read: int, created: int, duplicates: int, started: float) -> None:
        rate = read / max(time.monotonic() - started, 1e-9)
        self.stderr.write(
            f"\r{read} read, {created} created, {duplicates} duplicate(s) ({rate:,.0f} runs/s)", ending=""
        )
        self.stderr.flush()
