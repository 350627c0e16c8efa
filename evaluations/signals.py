"""Signals of the evaluations app, for the apps above it (governance) to connect to.

All are sent on commit, once per rollout touched.
"""

import django.dispatch

# rollout_id, run_ids (EvaluationRun pks created), telemetry_fields (output keys seen), actor
runs_ingested = django.dispatch.Signal()
# rollout_id, sample_ids (MonitoringSample pks created), actor
samples_ingested = django.dispatch.Signal()
# firing_id, incident_id
trigger_fired = django.dispatch.Signal()
