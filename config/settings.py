"""Settings for the Rollout Governance Dashboard.

Everything configurable comes from the environment through the single ``env``
below; ``.env.example`` documents each variable. ``DJANGO_ENV=production``
selects production behaviour: it refuses to start without ``SECRET_KEY`` and
``ALLOWED_HOSTS`` and turns on the settings ``manage.py check --deploy`` asks for.
"""

import datetime as dt
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from config import oidc as oidc_settings

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

ENVIRONMENT = env.str("DJANGO_ENV", default="development")
if ENVIRONMENT not in {"development", "production", "test"}:
    raise ImproperlyConfigured(f"DJANGO_ENV must be development, production or test, not {ENVIRONMENT!r}")
PRODUCTION = ENVIRONMENT == "production"

if PRODUCTION:
    # No defaults: a production process must be told its secret and hosts.
    SECRET_KEY = env.str("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must name at least one host in production")
    DEBUG = False
else:
    SECRET_KEY = env.str("SECRET_KEY", default="insecure-development-key-do-not-use-in-production")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
    DEBUG = env.bool("DEBUG", default=ENVIRONMENT == "development")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "csp",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "axes",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.mfa",
    "django_filters",
    "django_tables2",
    "rollout",
    "evaluations",
    "governance",
]

MIDDLEWARE = [
    # First: every later layer (axes, throttles, denials) sees the client's address, not the proxy's.
    "rollout.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    # Outside everything that answers for a logged-in user or a token: no-store on all of it.
    "rollout.middleware.NoStoreWhenAuthenticatedMiddleware",
    # Before anything reads a body: the API's size limit and problem+json errors.
    "evaluations.problems.ApiProblemMiddleware",
    # No NUL or lone surrogate in any query parameter or form field (rollout.inputs).
    "evaluations.boundary.InputBoundaryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # allauth's login stages (the second factor) and its request context.
    "allauth.account.middleware.AccountMiddleware",
    # Idle timeout and absolute lifetime of a login, before anything acts for the user.
    "rollout.middleware.SessionLifetimeMiddleware",
    # Who acts and under which request id, for the audit ledger.
    "governance.middleware.AuditContextMiddleware",
    # After an OIDC login whose groups map to no role: only the page saying so (governance/oidc.py).
    "governance.oidc.NoRoleMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # A user who must have a second factor and has none reaches only its enrolment (MFA_ENFORCED).
    "rollout.auth.MfaEnrolmentMiddleware",
    # Displayed times in the reader's zone (their preference, else their browser's); UTC on hover.
    "rollout.middleware.TimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: turns a locked-out login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "rollout.context_processors.roles",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------
# Unset DATABASE_URL means the embedded default: a SQLite file under var/, so
# `make run` needs no server. Production and CI point it at PostgreSQL.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process, worker and beat share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    # A connection the server dropped (a restart, pg_terminate_backend) is replaced at the next request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
USING_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
# Seconds a client is told to wait (Retry-After of the 503) when the database cannot be reached.
DATABASE_RETRY_AFTER_SECONDS = env.int("DATABASE_RETRY_AFTER_SECONDS", default=5)

# A read replica (PostgreSQL streaming replication) for the views that only look back: the audit list and
# exports, delta reports, the deltas page (config/db_router.py). Writes and every read that gates a decision
# stay on the primary. An export waits up to DATABASE_REPLICA_WAIT_SECONDS for the replica to hold the entries
# it covers, then reads the primary instead.
DATABASE_ROUTERS = ["config.db_router.PrimaryReplicaRouter"]
DATABASE_READ_REPLICA = None
if env.str("DATABASE_REPLICA_URL", default=""):
    DATABASE_READ_REPLICA = "replica"
    DATABASES["replica"] = env.db_url("DATABASE_REPLICA_URL")
    DATABASES["replica"].update(
        CONN_MAX_AGE=DATABASES["default"].get("CONN_MAX_AGE", 0),
        CONN_HEALTH_CHECKS=True,
        # A test run with a replica configured reads its test database through both aliases.
        TEST={"MIRROR": "default"},
    )
DATABASE_REPLICA_WAIT_SECONDS = env.float("DATABASE_REPLICA_WAIT_SECONDS", default=5.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Redis's cache, but a Redis outage reads as a miss and a failed write (config/cache.py): pages and
            # throttling degrade instead of failing.
            "BACKEND": "config.cache.DegradingRedisCache",
            "LOCATION": REDIS_URL,
            # Short socket timeouts: a Redis that hangs costs a request at most this, not a worker.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Auth --------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# A login ends after this long without a request, and this long after it began whatever the activity.
# How many reverse proxies in front of gunicorn append to X-Forwarded-For (0: the header is ignored and
# REMOTE_ADDR is the client). Behind one TLS proxy set 1, or every client shares the proxy's lockout.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more")
SESSION_IDLE_TIMEOUT_SECONDS = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=8 * 3600)
SESSION_ABSOLUTE_LIFETIME_SECONDS = env.int("SESSION_ABSOLUTE_LIFETIME_SECONDS", default=24 * 3600)
if not 0 < SESSION_IDLE_TIMEOUT_SECONDS <= SESSION_ABSOLUTE_LIFETIME_SECONDS:
    raise ImproperlyConfigured(
        "SESSION_IDLE_TIMEOUT_SECONDS must be positive and at most SESSION_ABSOLUTE_LIFETIME_SECONDS"
    )
# The cookie does not outlive the session either.
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_LIFETIME_SECONDS
# axes first: a locked-out username or address is refused before any password is checked. Then allauth's
# backend (Django's ModelBackend with allauth's login methods: the username here).
AUTHENTICATION_BACKENDS = [
    "governance.lockout.RequestLockoutBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
LOGIN_URL = "login"

# --- django-allauth: the login flow, the identity provider, the second factor (rollout/auth.py) ---------------
# The local username/password form at /login/. Off in production behind an identity provider: the page then
# offers the provider, and the form admits only a superuser (the break-glass account).
LOCAL_LOGIN_ENABLED = env.bool("LOCAL_LOGIN_ENABLED", default=True)
ACCOUNT_ADAPTER = "rollout.auth.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_UNIQUE_EMAIL = False
# The session lasts as set above (SESSION_COOKIE_AGE, the middleware's limits), no "remember me" box.
ACCOUNT_SESSION_REMEMBER = True
# /login/ shows its form to a logged-in user too (as Django's LoginView did), instead of redirecting.
ACCOUNT_AUTHENTICATED_LOGIN_REDIRECTS = False
# Brute force on the login is django-axes' (above), one mechanism with its lockout page and ledger entries;
# allauth keeps its limits elsewhere (re-authentication, the second factor).
ACCOUNT_RATE_LIMITS = {"login": None, "login_failed": None}
ACCOUNT_LOGOUT_REDIRECT_URL = "login"
SOCIALACCOUNT_ONLY = False
# The second factor: TOTP (an authenticator app) with recovery codes. Required of superusers and of the members of
# these groups; enforced (no page but the enrolment until enrolled) when MFA_ENFORCED, on by default in production.
# A login through the identity provider whose ID token's amr says mfa, otp or hwk needs none of its own.
MFA_ADAPTER = "rollout.auth.MfaAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env.str("MFA_TOTP_ISSUER", default="Rollout Governance")
MFA_RECOVERY_CODE_COUNT = 10
MFA_REQUIRED_ROLES = env.list(
    "MFA_REQUIRED_ROLES",
    default=["rollout-admin", "product-lead", "support-lead", "compliance-lead", "sre-lead"],
)
MFA_ENFORCED = env.bool("MFA_ENFORCED", default=PRODUCTION)
# Re-authentication before a decision (sign-off, approval, apply, kill switch, legal hold release), like GitHub's
# sudo mode: the last authentication (login or re-authentication) must be younger than this many seconds.
REAUTH_MAX_AGE = env.int("REAUTH_MAX_AGE", default=300)
if REAUTH_MAX_AGE < 1:
    raise ImproperlyConfigured("REAUTH_MAX_AGE must be at least 1")
ACCOUNT_REAUTHENTICATION_TIMEOUT = REAUTH_MAX_AGE
ACCOUNT_REAUTHENTICATION_METHODS = ("password", "mfa")

# --- Signing in with the company's identity provider: OpenID Connect (governance/oidc.py, config/oidc.py) -------
# Unset OIDC_ISSUER: no provider, the login page is the local form (as before). Set: allauth's openid_connect
# provider, discovery from OIDC_ISSUER/.well-known/openid-configuration, authorization code with PKCE, the
# client's secret sent with HTTP Basic. Redirect URI to register: https://<host>/accounts/oidc/sso/login/callback/.
# OIDC_ROLE_MAP maps values of the groups claim (OIDC_GROUPS_CLAIM) to roles: claim=role pairs separated by commas
# (okta-sre-leads=sre-lead,okta-product=product-lead) or a JSON object; set at every login.
_oidc = oidc_settings.settings_for(
    issuer=env.str("OIDC_ISSUER", default=""),
    client_id=env.str("OIDC_CLIENT_ID", default=""),
    secret=env.str("OIDC_CLIENT_SECRET", default=""),
    name=env.str("OIDC_PROVIDER_NAME", default="the identity provider"),
    role_map=oidc_settings.parse_role_map(env.str("OIDC_ROLE_MAP", default="")),
    groups_claim=env.str("OIDC_GROUPS_CLAIM", default="groups"),
    scopes=env.list("OIDC_SCOPES", default=list(oidc_settings.DEFAULT_SCOPES)),
)
OIDC_ISSUER = _oidc["OIDC_ISSUER"]
OIDC_CLIENT_ID = _oidc["OIDC_CLIENT_ID"]
OIDC_CLIENT_SECRET = _oidc["OIDC_CLIENT_SECRET"]
OIDC_PROVIDER_NAME = _oidc["OIDC_PROVIDER_NAME"]
OIDC_PROVIDER_ID = _oidc["OIDC_PROVIDER_ID"]
OIDC_ROLE_MAP = _oidc["OIDC_ROLE_MAP"]
OIDC_GROUPS_CLAIM = _oidc["OIDC_GROUPS_CLAIM"]
OIDC_SCOPES = _oidc["OIDC_SCOPES"]
SOCIALACCOUNT_PROVIDERS = _oidc["SOCIALACCOUNT_PROVIDERS"]
# Users are the provider's sub (the SocialAccount's uid): never found or connected by their e-mail address.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = False
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_REQUIRED = False
SOCIALACCOUNT_EMAIL_VERIFICATION = "none"
# The access token is not kept (the dashboard calls no API of the provider).
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_ADAPTER = "governance.oidc.SocialAccountAdapter"
# The redirect URI allauth sends is https in production (behind the TLS proxy, X-Forwarded-Proto says so too).
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if PRODUCTION else "http"

# --- Brute force: django-axes on /login/ and /admin/login/ (both go through authenticate()) ---------
# A username, or a client address, is locked out after AXES_FAILURE_LIMIT failed logins (counted
# separately: spraying many names from one address locks the address, guessing one name from many
# addresses locks the name) until AXES_COOLOFF_MINUTES after the last failure. Attempts during the
# cool-off do not extend it. Each lockout is a ledger entry (governance.receivers).
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "governance.lockout.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
# The client address is REMOTE_ADDR; a header the client sets must not choose it.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
AXES_VERBOSE = False
LOGIN_REDIRECT_URL = "rollout:home"
LOGOUT_REDIRECT_URL = "login"

# --- I18N / time: everything is stored and scheduled in UTC --------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files: vendored, served by WhiteNoise ------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic's target, served by WhiteNoise in production; elsewhere WhiteNoise
# serves straight from the app and project static folders.
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles") if PRODUCTION else None)
WHITENOISE_USE_FINDERS = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Email: console in development, SMTP URL in production ---------------------
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST", "localhost")
EMAIL_PORT = _email.get("EMAIL_PORT", 25)
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="rollout-dashboard@localhost")

# --- Celery ------------------------------------------------------------------
# Unset CELERY_BROKER_URL means Kombu's filesystem transport under var/celery,
# so the worker and beat of `make run` need no broker server.
# "localhost" only keeps Kombu from warning that the URL names no host.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    # The embedded broker's folders must exist before a worker or beat polls them (a fresh clone has no var/).
    for _folder in (_queue_dir, VAR_DIR / "celery" / "processed"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A message taken by a worker that died (kill -9 of its main process) goes back to the queue this
        # many seconds after it was taken. A task still running then is delivered a second time: every task is
        # safe to run twice, and a job's lock makes the second delivery a no-op (governance/jobs.py).
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300),
        # The worker looks for such messages every 10 s (kombu scans only every 10th look by default: a message
        # lost with a killed worker process came back up to 100 s after its visibility timeout).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        # A Redis that does not answer fails a publish within seconds instead of hanging a web request.
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
    }
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SOFT_TIME_LIMIT = 600
CELERY_TASK_TIME_LIMIT = 900
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Acknowledge after the task ran, and requeue when its worker process is lost: a task killed half-way runs again
# (every task is idempotent).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Publishing from a web request: fail fast when the broker is down (the outbox keeps the task, rollout/outbox.py)
# rather than retrying for seconds per request.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# The worker reconnects for ever after a broker outage (and cancels the tasks it cannot acknowledge; they are
# redelivered).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# The transactional outbox's relay (rollout/outbox.py): the lag of a task published while the broker was down.
OUTBOX_RELAY_SECONDS = env.int("OUTBOX_RELAY_SECONDS", default=30)
OUTBOX_RELAY_BATCH = env.int("OUTBOX_RELAY_BATCH", default=500)
# The beat schedule is static and in UTC; each app adds its jobs here.
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    # Sends what the outbox holds (tasks written while the broker was down, webhook retries when due).
    "rollout-relay-outbox": {"task": "rollout.tasks.relay_outbox", "schedule": float(OUTBOX_RELAY_SECONDS)},
    # Catches a lost evaluate_triggers task (the one scheduled on commit of every ingest).
    "evaluations-sweep-triggers": {"task": "evaluations.tasks.sweep_triggers", "schedule": 300.0},
    # The compliance jobs (governance/jobs.py), daily, in UTC, spread out so they do not compete.
    "governance-check-scheduled-reviews": {
        "task": "governance.tasks.check_scheduled_reviews",
        "schedule": crontab(minute=15, hour=0),
    },
    "governance-daily-delta-reports": {
        "task": "governance.tasks.daily_delta_reports",
        "schedule": crontab(minute=30, hour=0),
    },
    # Closes denial windows that no later denial closed: one summary entry per window with repeats.
    "governance-summarise-denials": {"task": "governance.tasks.summarise_denials", "schedule": 60.0},
    "governance-verify-audit-log": {"task": "governance.tasks.verify_audit_log", "schedule": crontab(minute=0, hour=1)},
    "governance-enforce-retention": {
        "task": "governance.tasks.enforce_retention",
        "schedule": crontab(minute=0, hour=2),
    },
    "governance-update-compliance-records": {
        "task": "governance.tasks.update_compliance_records",
        "schedule": crontab(minute=30, hour=2),
    },
}
# Beat's record of when each job last ran (a shelve file). Its folder is created when beat starts
# (config.celery_app.Scheduler), so a fresh deployment without var/ runs beat as it is.
CELERY_BEAT_SCHEDULE_FILENAME = env.str("CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule"))
CELERY_BEAT_SCHEDULER = "config.celery_app:LeaderScheduler"

# --- REST API ----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "evaluations.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["evaluations.parsers.BoundaryJSONParser"],
    # Bearer tokens only: the API never accepts a session, the pages never accept a token.
    "DEFAULT_AUTHENTICATION_CLASSES": ["evaluations.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["evaluations.authentication.HasScope"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "evaluations.problems.problem_exception_handler",
    # Per token; requests without a valid token are limited per address in the exception handler.
    "DEFAULT_THROTTLE_CLASSES": ["evaluations.throttling.TokenRateThrottle"],
    "NUM_PROXIES": 0,
}
# Sliding-window rates ("N/s", "N/min", "N/hour", "N/day"; empty: no limit), on the default cache.
API_THROTTLE_RATE_TOKEN = env.str("API_THROTTLE_RATE_TOKEN", default="1200/min")
API_THROTTLE_RATE_ADDRESS = env.str("API_THROTTLE_RATE_ADDRESS", default="30/min")
API_THROTTLE_KEY_PREFIX = env.str("API_THROTTLE_KEY_PREFIX", default="rgd-throttle")
SPECTACULAR_SETTINGS = {
    "TITLE": "Rollout Governance Dashboard API",
    "DESCRIPTION": "Ingestion and read API for the evaluation harness and the configuration service.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge from validator.swagger.io (it would send the schema's URL off-host).
    "SWAGGER_UI_SETTINGS": {"validatorUrl": None, "deepLinking": True},
    "REDOC_DIST": "SIDECAR",
    # The project's path converter (rollout.converters): the same pattern as the URL.
    "PATH_CONVERTER_OVERRIDES": {"ident": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"}},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "evaluations.schemas.openapi_postprocess",
    ],
}
# The largest API body accepted (also for chunked bodies); 500 runs with their outputs fit.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=32 * 1024 * 1024)

# --- Browser security headers ----------------------------------------------------
# Scripts and everything else only from the dashboard itself: no inline script anywhere (the API
# docs start from static/js/). Styles allow inline: the templates' style attributes (progress bars)
# and the style elements Redoc and Swagger UI create at run time. Images: own origin and data: URIs
# (Swagger UI's icons); Redoc's "Redocly" logo from its CDN is refused. Redoc builds its search
# worker from a blob: URL.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
# The login and logout buttons post to the dashboard, which redirects to the identity provider: its origin joins
# form-action (which governs the redirect after a form too).
CONTENT_SECURITY_POLICY = oidc_settings.csp_with_provider(CONTENT_SECURITY_POLICY, OIDC_ISSUER)
# Powerful browser features the dashboard never uses, switched off for it and anything it embeds.
PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in [
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "encrypted-media",
        "fullscreen",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "screen-wake-lock",
        "usb",
        "xr-spatial-tracking",
    ]
}

# --- History ---------------------------------------------------------------
# Change reasons are the users' own words: keep them whole.
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True

# --- Product settings --------------------------------------------------------
PAGE_SIZE = 25
# Where links in notifications point (email, webhooks).
DASHBOARD_URL = env.str("DASHBOARD_URL", default="http://127.0.0.1:8000")

# --- Rollback notifications: outgoing webhooks -----------------------------------
# Webhook signing secrets are encrypted at rest with a key derived from this.
WEBHOOK_SECRET_KEY = env.str("WEBHOOK_SECRET_KEY", default="") or SECRET_KEY
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)
# Backoff between attempts: base, 2 x base, 4 x base, ... seconds.
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)

# --- Retention of raw evaluation outputs (design section 5) ----------------------------
# Outputs are purged this many days after their run finished (counted in UTC, 24 h days).
RETENTION_DAYS = env.int("RETENTION_DAYS", default=90)
if RETENTION_DAYS < 1:
    raise ImproperlyConfigured("RETENTION_DAYS must be at least 1")
# Rows deleted per transaction: small enough that no lock is held for long.
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=5000)
# Seconds to sleep between batches, to spread the purge's I/O on a busy primary (0: none).
RETENTION_BATCH_PAUSE_SECONDS = env.float("RETENTION_BATCH_PAUSE_SECONDS", default=0.0)

# The audit ledger is append-only: on PostgreSQL a trigger refuses TRUNCATE, so
# `manage.py flush` fails. Only the test settings allow flush to empty it (the
# test runner flushes between transactional tests).
AUDIT_LEDGER_FLUSHABLE = False
# Denied actions are aggregated per source and reason in windows of this many seconds: the first of a
# window is an entry, the repeats one summary entry with their count after the window closes.
AUDIT_DENIAL_WINDOW_SECONDS = env.int("AUDIT_DENIAL_WINDOW_SECONDS", default=300)
if AUDIT_DENIAL_WINDOW_SECONDS < 1:
    raise ImproperlyConfigured("AUDIT_DENIAL_WINDOW_SECONDS must be at least 1")
# A forged or stale form post: the 403 page, recorded in the ledger.
CSRF_FAILURE_VIEW = "rollout.views.csrf_failure"

# --- Logging -----------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line carries the request id (X-Request-ID) it was logged under, "-" outside a request.
    "filters": {"request_id": {"()": "rollout.context.RequestIdLogFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Production hardening (what `check --deploy` asks for) ---------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SESSION_COOKIE_HTTPONLY = True
