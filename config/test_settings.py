"""Test settings: the real settings, with tasks run eagerly unless a test starts a real worker."""

from .settings import *  # noqa: F403

CELERY_TASK_ALWAYS_EAGER = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
# The test runner flushes the database between transactional tests: let it empty the ledger too.
AUDIT_LEDGER_FLUSHABLE = True
