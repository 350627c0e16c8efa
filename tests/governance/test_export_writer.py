"""The CSV writer builds its rows from the database tuples: byte for byte what ``csv_row`` over the records gives."""

from __future__ import annotations

import csv
import io

import pytest

from governance import ledger
from governance.models import AuditEvent

pytestmark = pytest.mark.django_db

TRICKY = ["=SUM(A1)", "+1", "-2", "@cmd", "\tx", "\rx", "'quoted", "plain", "", 'multi\nline, with "quotes"']


def test_csv_export_equals_csv_row_over_the_records():
    ledger.append_many(
        {
            "action": "update",
            "object_type": "rollout.rollout",
            "object_id": text[:60],
            "object_repr": text,
            "reason": text,
            "before": {"v": text, "n": -1.5} if i % 2 else None,
            "after": [-1, text] if i % 3 else {"ok": True},
            "rollout_id": i if i % 4 else None,
        }
        for i, text in enumerate(TRICKY * 3)
    )
    queryset = AuditEvent.objects.all()
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(ledger.RECORD_FIELDS)
    writer.writerows(ledger.csv_row(r) for r in ledger._records(queryset, 100))
    got = "".join(ledger.export_chunks(queryset, "csv", chunk_size=7))
    assert got == expected.getvalue()
