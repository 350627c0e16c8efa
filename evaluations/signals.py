"""Signals of the evaluations app, for the apps above it (governance) to connect to.

``runs_stored`` and ``samples_stored`` are sent inside the ingest's transaction (what must commit with the data:
its ledger entry); the others on commit, once per rollout touched.
"""

import django.dispatch

# Inside the ingest's transaction: rollout_id, run_ids (EvaluationRun pks created), actor
runs_stored = django.dispatch.Signal()
# Inside the ingest's transaction: rollout_id, sample_ids (MonitoringSample pks created), actor
samples_stored = django.dispatch.Signal()
# On commit: rollout_id, run_ids (EvaluationRun pks created), telemetry_fields (output keys seen), actor
runs_ingested = django.dispatch.Signal()
# On commit: rollout_id, sample_ids (MonitoringSample pks created), actor
samples_ingested = django.dispatch.Signal()
# firing_id, incident_id
trigger_fired = django.dispatch.Signal()
