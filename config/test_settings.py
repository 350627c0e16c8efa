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
