"""Test settings: the real settings, with tasks run eagerly unless a test starts a real worker."""

import os

from .settings import *  # noqa: F403

CELERY_TASK_ALWAYS_EAGER = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
# The test runner flushes the database between transactional tests: let it empty the ledger too.
AUDIT_LEDGER_FLUSHABLE = True
# Tests that start a real Celery worker share one Redis database: each pytest-xdist process sends to and
# consumes from its own queue, so two such tests running at once never take each other's tasks.
CELERY_TASK_DEFAULT_QUEUE = f"rgd-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
# Generous limits: the suite's many API calls from one address and token never reach them; the tests of
# throttling and lockouts set their own. Each test gets fresh throttle keys (tests/conftest.py).
API_THROTTLE_RATE_TOKEN = "100000/min"  # noqa: S105 (a rate, not a password)
API_THROTTLE_RATE_ADDRESS = "100000/min"
AXES_FAILURE_LIMIT = 50
