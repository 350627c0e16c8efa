"""On PostgreSQL, triggers make the audit ledger append-only: UPDATE, DELETE and TRUNCATE are refused.

SQLite (the embedded development default) has no TRUNCATE and is not where the
ledger's guarantees are claimed; the hash chain still detects any edit there.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION governance_audit_ledger_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'governance_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'The audit ledger can only be appended to.';
END;
$$;

CREATE TRIGGER audit_ledger_append_only
    BEFORE UPDATE OR DELETE ON governance_auditevent
    FOR EACH ROW EXECUTE FUNCTION governance_audit_ledger_refuse();

CREATE TRIGGER audit_ledger_no_truncate
    BEFORE TRUNCATE ON governance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION governance_audit_ledger_refuse();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS audit_ledger_no_truncate ON governance_auditevent;
DROP TRIGGER IF EXISTS audit_ledger_append_only ON governance_auditevent;
DROP FUNCTION IF EXISTS governance_audit_ledger_refuse();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]

    operations = [migrations.RunPython(forward, backward)]
