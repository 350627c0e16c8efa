"""Settings of the beats in the two-beats scenario: the product's, with a 5-second test schedule."""

from config.settings import *  # noqa: F403

CELERY_BEAT_SCHEDULE = {
    "faults-check-scheduled-reviews": {"task": "governance.tasks.check_scheduled_reviews", "schedule": 5.0},
    "faults-verify-audit-log": {"task": "governance.tasks.verify_audit_log", "schedule": 5.0},
    "rollout-relay-outbox": {"task": "rollout.tasks.relay_outbox", "schedule": 5.0},
}
