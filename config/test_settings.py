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
# Decisions need an authentication younger than this: an hour, so that a slow machine's browser journeys stay within
# their one login. The tests of re-authentication set their own (tests/rollout/test_reauth.py).
REAUTH_MAX_AGE = 3600
ACCOUNT_REAUTHENTICATION_TIMEOUT = REAUTH_MAX_AGE
# A stand-in read replica for tests/test_db_router.py: its own test database with the primary's schema (the
# migrations, triggers included, as streaming replication would copy them), filled by the test with a pg_dump
# of the primary's data. Reads reach it only
# where a test turns DATABASE_READ_REPLICA on; the rest of the suite never touches it.
if USING_POSTGRES and "replica" not in DATABASES:  # noqa: F405
    DATABASES["replica"] = {  # noqa: F405
        **DATABASES["default"],  # noqa: F405
        "NAME": f"{DATABASES['default']['NAME']}_replica",  # noqa: F405
        "TEST": {},
    }
