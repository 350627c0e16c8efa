"""On PostgreSQL, only the retention purge deletes raw evaluation outputs, and only expired, unheld ones.

A statement trigger on ``evaluations_runoutput`` looks at the rows a DELETE
removed (a transition table) and refuses the statement unless the transaction
set ``rgd.retention_cutoff`` (the purge does, per batch, with ``set_config``)
and every row is older than that cutoff and outside any active legal hold. So
no other path (the admin, a shell, a cascade from deleting a run) deletes an
output early. TRUNCATE (the test runner's flush) does not fire it. SQLite, the
embedded development default, has no such guard.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION governance_runoutput_delete_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := NULLIF(current_setting('rgd.retention_cutoff', true), '')::timestamptz;
BEGIN
    IF cutoff IS NULL THEN
        RAISE EXCEPTION 'evaluations_runoutput: raw outputs are deleted only by the retention purge'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM gone WHERE gone.run_finished_at >= cutoff) THEN
        RAISE EXCEPTION 'evaluations_runoutput: refusing to delete outputs inside the retention window (cutoff %)', cutoff
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (
        SELECT 1 FROM gone
        JOIN evaluations_evaluationrun r ON r.id = gone.run_id
        JOIN governance_legalhold h ON h.rollout_id = r.rollout_id AND h.released_at IS NULL
    ) THEN
        RAISE EXCEPTION 'evaluations_runoutput: refusing to delete outputs under an active legal hold'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER runoutput_retention_guard
    AFTER DELETE ON evaluations_runoutput
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION governance_runoutput_delete_guard();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS runoutput_retention_guard ON evaluations_runoutput;
DROP FUNCTION IF EXISTS governance_runoutput_delete_guard();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("governance", "0005_compliance_permissions"), ("evaluations", "0005_run_rollout_finished_index")]

    operations = [migrations.RunPython(forward, backward)]
