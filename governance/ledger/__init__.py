"""The audit ledger: appending hash-chained entries, verifying the chain, exporting it.

One package, a module each: ``canonical`` (the fields, the actions and the canonical form), ``chain``
(appending, tracked models' history), ``verifying`` and ``exporting``. Callers use the names below.

Every entry's ``hash`` is SHA-256 over the previous entry's hash followed by the
canonical JSON (sorted keys, no spaces, ASCII) of the entry's payload. The same
functions hash an entry when it is appended, when ``verify_audit_log`` walks the
database, and when it checks an exported file offline, so the three agree by
construction.

Appends are serialized: on PostgreSQL with a transaction-scoped advisory lock
taken before the last entry is read, so two writers can never both extend the
same entry (a fork). The lock is held until the writer's transaction ends,
because the entry commits or rolls back with the change it records. Services
take their row locks before their first tracked write, which keeps the lock
order "rows, then ledger" and avoids deadlocks. SQLite runs one write
transaction at a time (``transaction_mode=IMMEDIATE``), which serializes
appends on its own.
"""

from .canonical import (
    ADVISORY_LOCK_KEY,
    EVENT_ACTIONS,
    GENESIS_HASH,
    HISTORY_ACTIONS,
    INT_FIELDS,
    JSON_FIELDS,
    KNOWN_ACTIONS,
    PAYLOAD_FIELDS,
    RECORD_FIELDS,
    TRACKED_APPS,
    canonical_json,
    entry_hash,
    format_at,
    jsonable,
    parse_at,
    payload_of,
    record_of,
)
from .chain import append, append_many, lock_ledger, object_type_of, record_history
from .exporting import (
    CSV_DANGEROUS_PREFIXES,
    CSV_HEADER,
    csv_escape,
    csv_row,
    csv_unescape,
    export_bytes,
    export_chunks,
    file_records,
)
from .verifying import VerifyResult, database_records, verify, verify_database

__all__ = [
    "ADVISORY_LOCK_KEY",
    "CSV_DANGEROUS_PREFIXES",
    "CSV_HEADER",
    "EVENT_ACTIONS",
    "GENESIS_HASH",
    "HISTORY_ACTIONS",
    "INT_FIELDS",
    "JSON_FIELDS",
    "KNOWN_ACTIONS",
    "PAYLOAD_FIELDS",
    "RECORD_FIELDS",
    "TRACKED_APPS",
    "VerifyResult",
    "append",
    "append_many",
    "canonical_json",
    "csv_escape",
    "csv_row",
    "csv_unescape",
    "database_records",
    "entry_hash",
    "export_bytes",
    "export_chunks",
    "file_records",
    "format_at",
    "jsonable",
    "lock_ledger",
    "object_type_of",
    "parse_at",
    "payload_of",
    "record_history",
    "record_of",
    "verify",
    "verify_database",
]
