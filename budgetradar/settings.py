"""BudgetRadar settings: one module, driven by the environment.

Every helper fails loudly (``ImproperlyConfigured``) on a value it cannot use, so a typo
in production configuration stops the process at start instead of misbehaving later.
With no environment at all it runs the embedded default: SQLite (WAL), django-q2's ORM
broker, DEBUG on, the sandbox platform.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import unquote, urlparse

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_int_at_most(name: str, default: int, *, minimum: int, maximum: int) -> int:
    value = env_int(name, default, minimum=minimum)
    if value > maximum:
        raise ImproperlyConfigured(f"{name}={value} must be at most {maximum}.")
    return value


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate such as ``20/min`` (per second, minute, hour or day)."""
    value = env_str(name, default).strip()
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate such as 20/min (count/second|minute|hour|day).")
    return value


def env_float(name: str, default: float, *, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if not value >= minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def env_amounts(name: str) -> dict[str, str]:
    """``EUR=50000,JPY=8000000``: a positive decimal amount per ISO currency code."""
    amounts = {}
    for part in env_list(name):
        code, _, amount = part.partition("=")
        code = code.strip().upper()
        try:
            valid = len(code) == 3 and code.isalpha() and Decimal(amount.strip()).is_finite()
            valid = valid and Decimal(amount.strip()) > 0
        except InvalidOperation:
            valid = False
        if not valid:
            raise ImproperlyConfigured(f"{name}: {part!r} is not CODE=AMOUNT with a positive amount (EUR=50000).")
        amounts[code] = amount.strip()
    return amounts


def env_minutes_by_platform(name: str) -> dict[str, int]:
    """``meta=90,google_ads=30``: a positive number of minutes per platform."""
    minutes = {}
    for part in env_list(name):
        platform, _, value = part.partition("=")
        platform, value = platform.strip(), value.strip()
        if platform not in {"sandbox", "google_ads", "meta"} or not value.isdigit() or int(value) < 1:
            raise ImproperlyConfigured(
                f"{name}: {part!r} is not PLATFORM=MINUTES with a platform of sandbox, google_ads or meta "
                "and a positive whole number (meta=90)."
            )
        minutes[platform] = int(value)
    return minutes


def database_from_url(url: str) -> dict:
    """Parse ``DATABASE_URL``: ``sqlite:///path`` or ``postgres://user:pw@host:port/name``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path)
        if path.startswith("/") and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            path = path[1:]  # sqlite:///relative.db, sqlite:////absolute.db
        if not path:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no SQLite file.")
        name = path if os.path.isabs(path) else str(BASE_DIR / path)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name,
            # WAL lets the web server and the worker read while the other writes;
            # IMMEDIATE transactions avoid "database is locked" upgrade deadlocks.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file, not memory, so tests can run a worker subprocess against it.
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"budgetradar-test-{os.getpid()}.sqlite3")},
        }
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        if not parsed.path.strip("/"):
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no database.")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parsed.scheme!r} is not supported: use sqlite:/// or postgres://."
    )


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or (["127.0.0.1", "localhost", "testserver"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Fernet keys, comma separated; the first encrypts, all decrypt (rotation).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")
if not FIELD_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must be set when DEBUG is off (comma-separated Fernet keys).")
    # A fixed development key so the demo database stays readable between runs.
    FIELD_ENCRYPTION_KEYS = ["ZGV2LW9ubHktYnVkZ2V0cmFkYXIta2V5LTMyYnl0ZXM="]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "django_q",
    "axes",
    "csp",
    "budgetradar",
    "platforms",
    "platforms.sandbox",
    "actions",
    "scenarios",
    "observability",
    "planning",
]

MIDDLEWARE = [
    "budgetradar.middleware.RequestIdMiddleware",
    "budgetradar.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "budgetradar.middleware.TenantTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

ROOT_URLCONF = "budgetradar.urls"
WSGI_APPLICATION = "budgetradar.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env_str("DATABASE_URL", "sqlite:///db.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# One date-time format, the zone named (budgetradar/formats/en/formats.py).
FORMAT_MODULE_PATH = "budgetradar.formats"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATE_DIR = Path(env_str("BUDGETRADAR_STATE_DIR", str(BASE_DIR / "state")))

# Security headers and cookies. With DEBUG off they default to HTTPS-only; behind a
# TLS-terminating proxy set TRUST_X_FORWARDED_PROTO (and NUM_PROXIES for client addresses).
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
X_FRAME_OPTIONS = "DENY"
# Trusted reverse proxies in front of the app: the client address (login and token
# throttling) is the one the last of them saw. 0 means REMOTE_ADDR, whatever headers say.
NUM_PROXIES = env_int("NUM_PROXIES", 0, minimum=0)

# One policy for every page: the admin, the API docs (drf-spectacular-sidecar serves
# Swagger UI and Redoc from our static files) and our own static files. No inline
# scripts or styles anywhere; Redoc renders its web worker from a blob.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# django-axes: admin logins. After AXES_FAILURE_LIMIT failures for one username from one
# address, that pair is refused (HTTP 429, a page saying until when) for the cool-off.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "budgetradar.throttling.client_ip"
AXES_LOCKOUT_CALLABLE = "budgetradar.throttling.login_locked_out"
AXES_VERBOSE = False
# Failed API token authentications per client address (DRF rate syntax).
API_FAILED_AUTH_RATE = env_rate("API_FAILED_AUTH_RATE", "20/min")
# JSON request bodies and imported bundles nested deeper than this are refused (400).
JSON_MAX_DEPTH = env_int_at_most("JSON_MAX_DEPTH", 64, minimum=8, maximum=500)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "budgetradar.throttling.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "budgetradar.api_defaults.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # JSON only: errors and answers are never HTML (the docs are at /api/docs/).
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_METADATA_CLASS": "budgetradar.api_defaults.Metadata",
    "NUM_PROXIES": NUM_PROXIES,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "budgetradar.api.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "budgetradar.schema.AutoSchema",
    "EXCEPTION_HANDLER": "budgetradar.api.exception_handler",
    "PAGE_SIZE": 50,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "BudgetRadar API",
    "DESCRIPTION": "Propose, approve, execute and roll back ad-platform changes safely.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status" or "mode"; name each choice set after its owner.
    "ENUM_NAME_OVERRIDES": {
        "ActionStatusEnum": "actions.models.ActionStatus",
        "ScenarioStatusEnum": "scenarios.models.Scenario.Status",
        "PreflightStatusEnum": "scenarios.models.PreflightRun.Status",
        "PreflightModeEnum": "scenarios.models.PreflightRun.Mode",
        "DeploymentStatusEnum": "scenarios.models.Deployment.Status",
        "DeploymentModeEnum": "scenarios.models.Deployment.Mode",
        "DeploymentResultStatusEnum": "scenarios.models.DeploymentResult.Status",
        "AutomationModeEnum": "planning.models.Mode",
    },
}

# django-q2. The ORM broker needs nothing else; REDIS_URL switches to Redis.
# django-q2 requires timeout < retry, or a task could run twice at once.
Q_TIMEOUT = env_int("Q_TIMEOUT", 600, minimum=10)
Q_CLUSTER: dict = {
    "name": "budgetradar",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": Q_TIMEOUT,
    "retry": Q_TIMEOUT + 120,
    "max_attempts": 3,
    "queue_limit": 50,
    "bulk": 10,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 1,
    "orm": "default",
}
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    parsed_redis = urlparse(REDIS_URL)
    if parsed_redis.scheme not in {"redis", "rediss"}:
        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis:// or rediss://.")
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = REDIS_URL
if env_bool("Q_SYNC", False):
    Q_CLUSTER["sync"] = True  # run tasks inline (tests)

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "budgetradar.logging.JsonFormatter"}},
    "filters": {"request_id": {"()": "budgetradar.logging.RequestIdLogFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default config gives "django" a console handler of its own while DEBUG
        # and lets it propagate to the root handler too: every django.* line (a 404, a
        # request error) was printed twice. Its records go to the root handler only.
        "django": {"handlers": [], "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}

# Domain settings ----------------------------------------------------------------------
ROLLBACK_VALID_HOURS = env_int("ROLLBACK_VALID_HOURS", 24, minimum=1)
CIRCUIT_BREAKER_THRESHOLD = env_int("CIRCUIT_BREAKER_THRESHOLD", 3, minimum=1)
CIRCUIT_BREAKER_COOLDOWN_SECONDS = env_int("CIRCUIT_BREAKER_COOLDOWN_SECONDS", 900, minimum=1)
PREFLIGHT_MAX_AGE_MINUTES = env_int("PREFLIGHT_MAX_AGE_MINUTES", 30, minimum=1)
# A live deploy's freshness rule per platform, counted from when the preflight's reads
# finished (scenarios.services.preflight.preflight_max_age). Meta reads 10,000 entities in
# about half an hour at its default limits and the engine re-reads every entity before it
# applies (drift is ``stale``, never overwritten), so its diff may be older.
PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM = {
    "sandbox": PREFLIGHT_MAX_AGE_MINUTES,
    "google_ads": PREFLIGHT_MAX_AGE_MINUTES,
    "meta": max(PREFLIGHT_MAX_AGE_MINUTES, 60),
} | env_minutes_by_platform("PREFLIGHT_MAX_AGE_MINUTES_BY_PLATFORM")
# Where the request stops doing the work itself: a scenario preflight of more entities, or
# a live deploy changing more entities, runs as a django-q2 task and the API answers 202.
PREFLIGHT_SYNC_MAX_ENTITIES = env_int("PREFLIGHT_SYNC_MAX_ENTITIES", 500, minimum=0)
DEPLOY_SYNC_MAX_ENTITIES = env_int("DEPLOY_SYNC_MAX_ENTITIES", 500, minimum=0)
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)
# Request bodies may carry a whole import (a JSON bundle), plus room for the envelope.
DATA_UPLOAD_MAX_MEMORY_SIZE = IMPORT_MAX_BYTES + 64 * 1024
# Value sanity of the safety gate: per-currency absolute floor and ceiling of any amount a
# change sets (defaults in safety.values).
MONEY_FLOORS = env_amounts("MONEY_FLOORS")
MONEY_CEILINGS = env_amounts("MONEY_CEILINGS")
AD_PUSH_DIFFS_KEEP = env_int("AD_PUSH_DIFFS_KEEP", 50, minimum=1)  # runs kept in the state/ad_push_diffs.json index
# Finished preflight runs older than this are deleted daily, unless a deployment, an
# override or an action (its newest) still relies on them (scenarios.services.retention).
PREFLIGHT_RETENTION_DAYS = env_int("PREFLIGHT_RETENTION_DAYS", 90, minimum=1)

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out logins before checking the password
    "django.contrib.auth.backends.ModelBackend",
    "budgetradar.auth.RoleBackend",
]
SIMPLE_HISTORY_REVERT_DISABLED = True
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True
PLATFORM_REQUEST_TIMEOUT_SECONDS = env_float("PLATFORM_REQUEST_TIMEOUT_SECONDS", 30.0, minimum=0.1)

# The execution engine (actions/services/engine.py, leases.py, reconcile.py).
# A lease not renewed for LEASE_TTL_SECONDS expires and the reconciler (every minute)
# takes the work over; a holder silent for LEASE_STALL_SECONDS stops being renewed.
LEASE_TTL_SECONDS = env_int("LEASE_TTL_SECONDS", 30, minimum=3)
LEASE_STALL_SECONDS = env_int(
    "LEASE_STALL_SECONDS", max(120, int(3 * PLATFORM_REQUEST_TIMEOUT_SECONDS)), minimum=LEASE_TTL_SECONDS
)
# A platform wait longer than this parks the actions (next attempt at ...) instead of sleeping.
ENGINE_PARK_AFTER_SECONDS = env_int("ENGINE_PARK_AFTER_SECONDS", 30, minimum=1)
# Nothing could be read before sending: the unit is tried again after this long.
ENGINE_READ_RETRY_SECONDS = env_int("ENGINE_READ_RETRY_SECONDS", 60, minimum=1)
# A task stops taking new units after this long and hands the rest of its job to a new task.
ENGINE_TASK_BUDGET_SECONDS = env_int("ENGINE_TASK_BUDGET_SECONDS", Q_TIMEOUT // 2, minimum=5)
# The most actions one job holds. A job runs in units across as many tasks as it needs,
# so the cap only bounds how much one job's dispatch loads at once; Google Ads takes
# 10,000 operations in one mutate request and Meta's units are sized by its rate limit,
# so smaller jobs there would only add requests and statements.
ENGINE_JOB_MAX_ACTIONS = env_int("ENGINE_JOB_MAX_ACTIONS", 1000, minimum=1)
ENGINE_JOB_MAX_ACTIONS_BY_PLATFORM = {
    "google_ads": env_int("ENGINE_JOB_MAX_ACTIONS_GOOGLE_ADS", 10_000, minimum=1),
    "meta": env_int("ENGINE_JOB_MAX_ACTIONS_META", 10_000, minimum=1),
}
# The most actions a worker takes up at once (one read, a few platform requests, one
# settlement): this bounds a unit's memory. Per-unit statements are paid once per unit, so
# a unit is as large as fits; where the rate limit counts operations (Meta's points) the
# engine takes fewer, as many as the limit lets one worker send in 60 % of the task budget
# (actions.services.engine.unit_size: ~1,150 at Meta's default 27 points/s, ~185 s of
# pacing); the lease is renewed throughout (the limiter's waits sleep through its keeper).
ENGINE_UNIT_SIZE = {
    "default": env_int("ENGINE_UNIT_SIZE", 500, minimum=1),
    "google_ads": env_int("ENGINE_UNIT_SIZE_GOOGLE_ADS", 10_000, minimum=1),
    "meta": env_int("ENGINE_UNIT_SIZE_META", 10_000, minimum=1),
}
# An action blocking its entity longer than this is listed as stuck (admin, alerts).
ENGINE_STUCK_AFTER_MINUTES = env_int("ENGINE_STUCK_AFTER_MINUTES", 30, minimum=1)

# Observability: metrics, readiness, alert delivery (observability/README section in README.md)
# /metrics answers a request that carries "Authorization: Bearer <METRICS_TOKEN>" or comes
# from one of METRICS_ALLOWED_NETWORKS (CIDRs); with neither set only loopback may scrape.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS")
# prometheus-client reads PROMETHEUS_MULTIPROC_DIR itself, at import; gunicorn workers and
# qcluster processes of one host share it (multiprocess mode). Checked here so a typo stops
# the process at start.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not os.path.isdir(PROMETHEUS_MULTIPROC_DIR):
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} is not a directory.")
WORKER_HEARTBEAT_MAX_AGE_SECONDS = env_int("WORKER_HEARTBEAT_MAX_AGE_SECONDS", 180, minimum=30)
SCHEDULE_GRACE_SECONDS = env_int("SCHEDULE_GRACE_SECONDS", 300, minimum=30)
RECONCILER_LAG_MAX_SECONDS = env_int("RECONCILER_LAG_MAX_SECONDS", 600, minimum=60)
ALERT_DELIVERY_MAX_ATTEMPTS = env_int("ALERT_DELIVERY_MAX_ATTEMPTS", 8, minimum=1)
ALERT_DELIVERY_BASE_DELAY_SECONDS = env_float("ALERT_DELIVERY_BASE_DELAY_SECONDS", 30.0, minimum=0.0)
ALERT_DELIVERY_MAX_DELAY_SECONDS = env_float("ALERT_DELIVERY_MAX_DELAY_SECONDS", 3600.0, minimum=1.0)
ALERT_DELIVERY_TIMEOUT_SECONDS = env_float("ALERT_DELIVERY_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# Plain http:// channel URLs are for local receivers (development and tests) only.
ALERT_CHANNELS_ALLOW_HTTP = env_bool("ALERT_CHANNELS_ALLOW_HTTP", DEBUG)
ALERT_EMAIL_FROM = env_str("ALERT_EMAIL_FROM", "budgetradar@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Links in alerts point here (the admin as people reach it).
BUDGETRADAR_BASE_URL = env_str("BUDGETRADAR_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
WATCH_EVALUATION_HOUR = env_int("WATCH_EVALUATION_HOUR", 9, minimum=0)
if WATCH_EVALUATION_HOUR > 23:
    raise ImproperlyConfigured(f"WATCH_EVALUATION_HOUR={WATCH_EVALUATION_HOUR} must be an hour, 0 to 23.")

# The optimization loop (planning) ------------------------------------------------------
# Bounds of one planned change when the guardrail policy sets none (percent of today's budget).
PLANNER_MAX_INCREASE_PCT = env_int("PLANNER_MAX_INCREASE_PCT", 100, minimum=0)
PLANNER_MAX_DECREASE_PCT = env_int("PLANNER_MAX_DECREASE_PCT", 50, minimum=0)
PLANNER_RETRIES = env_int("PLANNER_RETRIES", 3, minimum=0)  # after the first attempt
PLANNER_RETRY_BACKOFF_SECONDS = env_int("PLANNER_RETRY_BACKOFF_SECONDS", 60, minimum=1)  # doubles each retry
PLANNER_BREAKER_THRESHOLD = env_int("PLANNER_BREAKER_THRESHOLD", 3, minimum=1)  # consecutive failed runs
PLANNER_LEASE_SECONDS = env_int("PLANNER_LEASE_SECONDS", Q_TIMEOUT, minimum=10)
PLANNER_QUEUE_LIMIT = env_int("PLANNER_QUEUE_LIMIT", 5, minimum=1)  # queued runs per connection
PLANNER_INGEST_HOUR = env_int("PLANNER_INGEST_HOUR", 2, minimum=0)  # local time of the account
PLANNER_OPTIMIZE_HOUR = env_int("PLANNER_OPTIMIZE_HOUR", 8, minimum=0)
PLANNER_REINGEST_DAYS = env_int("PLANNER_REINGEST_DAYS", 3, minimum=1)  # restated days re-read every night
DECISION_LOG_RETENTION_DAYS = env_int("DECISION_LOG_RETENTION_DAYS", 7 * 365 + 2, minimum=1)  # 7 years

# Google Ads operations a developer token may spend a day (Basic access: 15,000 API
# operations a day; Standard access: unlimited, set 0): https://developers.google.com/google-ads/api/docs/best-practices/quotas
GOOGLE_ADS_DAILY_OPERATIONS = env_int("GOOGLE_ADS_DAILY_OPERATIONS", 15_000, minimum=0)
# The day the operations budget is counted in (BudgetRadar's choice: Google's quota docs
# name no time zone; counting in Pacific time matches Google's account day in the US).
GOOGLE_ADS_QUOTA_TIME_ZONE = env_str("GOOGLE_ADS_QUOTA_TIME_ZONE", "America/Los_Angeles")
