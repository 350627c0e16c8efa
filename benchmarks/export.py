"""Audit-ledger export throughput and memory: 100,000 entries (``--scale`` multiplies).

Figures: rows/s for JSON Lines and CSV straight from the export generator, rows/s
through the export page (StreamingHttpResponse, the client reading it all),
rows/s for ``verify`` over the database, and peak Python memory (tracemalloc)
while exporting a tenth of the rows and all of them: flat memory means the two
peaks are about the same. Run on PostgreSQL for the figures quoted in notes.
"""

from __future__ import annotations

import resource
import time
import tracemalloc
from typing import Any

from django.db import connection


def _entries(n: int):
    for i in range(n):
        yield {
            "action": "update",
            "object_type": "rollout.flagexposure",
            "object_id": i,
            "object_repr": f"react_loop for tenant {i % 500}: on",
            "rollout_id": 1 + i % 3,
            "before": {"enabled": False, "updated_at": "2025-06-01T10:00:00.000000+00:00"},
            "after": {"enabled": True, "updated_at": "2025-06-01T10:00:01.000000+00:00"},
            "reason": f"Transition request #{i % 40} into Canary (internal QA): readiness complete, plan signed",
        }


def _drain(chunks) -> int:
    size = 0
    for chunk in chunks:
        size += len(chunk)
    return size


def _timed(fn) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(args) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from governance import ledger
    from governance.models import AuditEvent
    from governance.selectors import AuditFilter, audit_events

    n = max(1000, int(100_000 * args.scale))
    insert_s, _ = _timed(lambda: ledger.append_many(_entries(n)))
    everything = audit_events(AuditFilter())
    first_tenth = audit_events(AuditFilter()).filter(sequence__lte=n // 10)

    jsonl_s, jsonl_bytes = _timed(lambda: _drain(ledger.export_chunks(everything, "jsonl")))
    csv_s, csv_bytes = _timed(lambda: _drain(ledger.export_chunks(everything, "csv")))
    verify_s, result = _timed(lambda: ledger.verify_database())
    assert result.ok and result.entries == n, result.summary()

    peak_tenth = _peak_bytes(lambda: _drain(ledger.export_chunks(first_tenth, "jsonl")))
    peak_all = _peak_bytes(lambda: _drain(ledger.export_chunks(everything, "jsonl")))

    auditor = get_user_model().objects.create_user("bench-auditor", password="x")  # noqa: S106
    auditor.groups.add(Group.objects.get(name="auditor"))
    client = Client()
    client.force_login(auditor)

    def through_page() -> int:
        response = client.post("/audit/export/", {"format": "jsonl"})
        assert response.status_code == 200, response.status_code
        return sum(len(c) for c in response.streaming_content)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    page_s, page_bytes = _timed(through_page)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert AuditEvent.objects.filter(action="audit.export").count() == 1

    return {
        "database": connection.vendor,
        "entries": n,
        "insert_rows_per_s": round(n / insert_s),
        "export_jsonl_rows_per_s": round(n / jsonl_s),
        "export_jsonl_mb": round(jsonl_bytes / 1e6, 1),
        "export_csv_rows_per_s": round(n / csv_s),
        "export_csv_mb": round(csv_bytes / 1e6, 1),
        "export_page_rows_per_s": round(n / page_s),
        "export_page_mb": round(page_bytes / 1e6, 1),
        "verify_rows_per_s": round(n / verify_s),
        "peak_python_mb_exporting_10pct": round(peak_tenth / 1e6, 2),
        "peak_python_mb_exporting_100pct": round(peak_all / 1e6, 2),
        "max_rss_growth_mb_during_page_export": round((rss_after - rss_before) / 1024, 1),
    }
