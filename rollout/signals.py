"""Signals through which the upper apps react to the rollout core.

``rollout`` imports neither ``evaluations`` nor ``governance``: they connect
to these instead.
"""

import django.dispatch

# Sent inside the creating transaction: receivers add their defaults (success criteria).
rollout_created = django.dispatch.Signal()  # rollout, actor, reason
# Sent inside the transaction that changed the plan: governance supersedes sign-offs.
plan_changed = django.dispatch.Signal()  # rollout, actor, reason
# Sent inside the rollback's transaction: the ledger entry, the notifications' deliveries (sent after commit).
rollout_rolled_back = django.dispatch.Signal()  # incident_id
# Sent inside the transaction of a phase transition applied (rollout_advance) and of an incident closed: the
# notifications' webhook deliveries (sent after commit).
transition_applied = django.dispatch.Signal()  # rollout_id, from_phase, to (a phase kind or "completed")
incident_closed = django.dispatch.Signal()  # incident_id
# Sent inside the rollback's transaction (rollout row locked): governance withdraws the open and approved requests.
rollback_recorded = django.dispatch.Signal()  # rollout, incident, actor, reason
# Sent inside the cancel's transaction (rollout row locked): governance withdraws the open and approved requests.
rollout_cancelled = django.dispatch.Signal()  # rollout, actor, reason
# A request was refused: governance records it in the audit ledger (repeats aggregated per window).
# ``reason`` is "permission-denied" (the 403 page), "csrf-failed" or "api" (a 401/403/429 of the API, with
# ``status`` and ``code``).
access_denied = django.dispatch.Signal()  # request, reason, status, code
# Page extension points: receivers return {"template": name, **context} or None.
home_panels = django.dispatch.Signal()  # request
rollout_panels = django.dispatch.Signal()  # request, rollout
# The live status page asks the upper apps what they know: receivers return {"problems": [str, ...]} (health
# problems, e.g. a fired trigger) and/or {"next_step": {"label", "detail", "url"}} (the request in flight), or None.
status_facts = django.dispatch.Signal()  # rollout
