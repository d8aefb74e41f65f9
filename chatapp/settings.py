"""chatapp settings: one module, driven by the environment (see README's configuration table).

DEBUG is off unless the environment turns it on: `make run` passes DEBUG=true and then needs nothing
else (SQLite, in-process channel layer, demo provider); the test suite does the same
(tests/pytest_env.py), and so does mypy's import of them (tools/mypy_env.py). With DEBUG off the app
refuses to start unless `SECRET_KEY` is set.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import environ
from csp import constants as csp_constants
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
_env_file = BASE_DIR / ".env"
if _env_file.exists():
    environ.Env.read_env(str(_env_file))
# An empty variable counts as unset: `DATABASE_URL=` (common in .env files) would otherwise be a database
# with no engine, and `MAX_MESSAGE_CHARS=` a crash, instead of the default.
env.ENVIRON = {name: value for name, value in environ.Env.ENVIRON.items() if value.strip()}

# --- Access and production defaults (issue #10) ----------------------------------------------------
# Off unless asked for: a server started without configuration must not show tracebacks and settings
# to the world. `make run` sets DEBUG=true.
DEBUG: bool = env.bool("DEBUG", default=False)

_DEV_SECRET = "dev-only-insecure-secret-key-change-me-0123456789abcdefghijklmnopqrstuvwxyz"
SECRET_KEY: str = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DEBUG off (the default) you must set SECRET_KEY in the environment "
            "(for example: SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(50))')), "
            "or set DEBUG=true for development (`make run` does)."
        )
    SECRET_KEY = _DEV_SECRET

ALLOWED_HOSTS: list[str] = env.list(
    "ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"]
)
# Full origins (`https://admin.example.com`, `https://*.example.com`) that may POST forms and open
# WebSockets besides the request's own origin (chatapp/origin.py).
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Behind a TLS proxy that sets `X-Forwarded-Proto` (and overwrites a client's own), believe it. Off by
# default: with daphne listening directly anyone could send the header and be treated as https.
TRUST_PROXY_HEADERS: bool = env.bool("TRUST_PROXY_HEADERS", default=False)
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A failed CSRF check answers JSON under /api/ (docs/api.md), Django's HTML page elsewhere.
CSRF_FAILURE_VIEW = "chatapp.errors.csrf_failure"
# --- end access and production defaults --------------------------------------------------------------

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_prometheus",
    "channels",
    "accounts",
    "threads",
    "providers",
    "ops",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chatapp.csp.ContentSecurityPolicyMiddleware",  # django-csp on HTML pages (the JSON API has its own stack)
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Content-Security-Policy of HTML pages (django-csp; chatapp/csp.py adds the page's own socket URL to
# connect-src). Same origin only: no inline script or style, no eval, no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp_constants.SELF],
        "script-src": [csp_constants.SELF],
        "style-src": [csp_constants.SELF],
        "img-src": [csp_constants.SELF, "data:"],
        "font-src": [csp_constants.SELF],
        "connect-src": [csp_constants.SELF],
        "object-src": [csp_constants.NONE],
        "base-uri": [csp_constants.NONE],
        "form-action": [csp_constants.SELF],
        "frame-ancestors": [csp_constants.NONE],
    }
}

ROOT_URLCONF = "chatapp.urls"
ASGI_APPLICATION = "chatapp.asgi.application"
WSGI_APPLICATION = None

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

# --- Database -----------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the async send path and page views write concurrently without
    # "database is locked" errors; IMMEDIATE transactions avoid lock upgrades deadlocking.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    # Under ASGI every request runs its sync parts in a thread of its own, so without a pool a burst
    # of requests opens a connection per request and exhausts PostgreSQL's max_connections (100).
    # A psycopg pool per process caps that; requests beyond it wait up to `timeout` for a connection.
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool owns connection reuse
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN", default=2),
        "max_size": env.int("DB_POOL_MAX", default=16),
        "timeout": env.float("DB_POOL_TIMEOUT_S", default=20.0),
    }
# Tests create their own database, `test_<name>` unless TEST_DATABASE_NAME names another (two test
# runs on one PostgreSQL at once each need their own).
if _test_db := env.str("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": _test_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis / channel layer -------------------------------------------------------------------------
REDIS_URL: str = env.str("REDIS_URL", default="")
# Every Redis key of this deployment (channel layer, coalescer, pacer) starts with this prefix.
REDIS_KEY_PREFIX: str = env.str("CHANNEL_LAYER_PREFIX", default="chatapp")
# Connections per process of the app's own Redis client (core/redisconn.py); Redis admits 10,000 by default.
REDIS_POOL_SIZE: int = env.int("REDIS_POOL_SIZE", default=512)
CHANNEL_LAYERS: dict[str, Any]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # socket_timeout must stay None: redis-py 8 defaults it to 5 s, the same as the
                # layer's blocking-pop timeout, and an idle socket would then be closed with 1011.
                # max_connections: redis-py 8's asyncio pool raises (does not wait) past its limit,
                # 100 by default; a burst of a few hundred waiters each doing a group_add needs more.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=2000),
                        # After Redis restarts, every pooled connection is dead; without a retry each
                        # one fails its next command once (a socket closed, a send lost). A retry
                        # reconnects: 3 tries over about 0.35 s (as core/redisconn.py).
                        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                    }
                ],
                "prefix": REDIS_KEY_PREFIX,
                # Capacity is per channel: a viewer that stops reading loses deltas (seq gap ->
                # snapshot re-sync) instead of blocking the stream for everyone.
                "capacity": 1000,
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth -----------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    # 12 characters at least (OWASP ASVS 2.1.1); existing shorter passwords still log in.
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- i18n / static ----------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# In development WhiteNoise serves straight from the app folders; in production from `collectstatic`'s
# output with hashed names and a one-year cache header.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Production hardening (passes `manage.py check --deploy` with DEBUG=false) ------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    # /healthz is probed over plain HTTP by load balancers, and /metrics scraped host by host (daphne
    # speaks plain HTTP; docs/prometheus.yml), where a redirect would lead to a port nothing serves.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}

# --- Chat / providers ---------------------------------------------------------------------------------
# Longest accepted message, in characters; longer ones get 413.
MAX_MESSAGE_CHARS: int = env.int("MAX_MESSAGE_CHARS", default=32_000)
# How many earlier messages are sent to the provider as context.
CONTEXT_MESSAGES: int = env.int("CONTEXT_MESSAGES", default=40)
# Tokens of a model's context size kept free for the reply when the context is trimmed to fit it (the
# model's size is set by staff in admin): the max_tokens every call asks for (providers.GenerationParams).
CONTEXT_REPLY_TOKENS: int = env.int("CONTEXT_REPLY_TOKENS", default=1024)

DEFAULT_PROVIDER: str = env.str("DEFAULT_PROVIDER", default="demo")
PROVIDERS: dict[str, dict[str, Any]] = {
    "demo": {
        "model": env.str("DEMO_MODEL", default="demo-1"),
        # Time to first token and tokens per second of the simulated model.
        "ttft_ms": env.float("DEMO_TTFT_MS", default=300.0),
        "tokens_per_s": env.float("DEMO_TOKENS_PER_S", default=40.0),
        "max_tokens": env.int("DEMO_MAX_TOKENS", default=1000),
        # A reply of about this many tokens (10 s at 40 tokens/s: time to try Stop and a reload), led
        # by a line saying it is the demo and how to connect a real model (DEMO_NOTE=false: without).
        "reply_tokens": env.int("DEMO_REPLY_TOKENS", default=400),
        "note": env.bool("DEMO_NOTE", default=True),
    },
    "openai": {
        "base_url": env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1"),
        "api_key": env.str("OPENAI_API_KEY", default=""),
        "model": env.str("OPENAI_MODEL", default="gpt-4o-mini"),
    },
    "anthropic": {
        "base_url": env.str("ANTHROPIC_BASE_URL", default="https://api.anthropic.com"),
        "api_key": env.str("ANTHROPIC_API_KEY", default=""),
        "model": env.str("ANTHROPIC_MODEL", default="claude-sonnet-4-5"),
    },
    "gemini": {
        "base_url": env.str("GEMINI_BASE_URL", default="https://generativelanguage.googleapis.com"),
        "api_key": env.str("GEMINI_API_KEY", default=""),
        "model": env.str("GEMINI_MODEL", default="gemini-2.5-flash"),
    },
}
# Timeouts applied to every HTTP provider (seconds).
PROVIDER_TIMEOUTS: dict[str, float] = {
    "connect": env.float("PROVIDER_CONNECT_TIMEOUT_S", default=10.0),
    "first_byte": env.float("PROVIDER_FIRST_BYTE_TIMEOUT_S", default=60.0),
    "idle": env.float("PROVIDER_IDLE_TIMEOUT_S", default=60.0),
    "total": env.float("PROVIDER_TOTAL_TIMEOUT_S", default=600.0),
}
PROVIDER_MAX_RETRIES: int = env.int("PROVIDER_MAX_RETRIES", default=2)

# Feature-flag defaults (staff override them in admin once a FeatureFlag row exists).
FLAG_DEFAULTS: dict[str, bool] = {
    "COALESCE_ENABLED": env.bool("COALESCE_ENABLED", default=True),
    "STREAM_FANOUT_ENABLED": env.bool("STREAM_FANOUT_ENABLED", default=True),
    "PACER_ENABLED": env.bool("PACER_ENABLED", default=True),
}

COALESCE_RESULT_TTL_S: float = env.float("COALESCE_RESULT_TTL_S", default=30.0)
COALESCE_ERROR_TTL_S: float = env.float("COALESCE_ERROR_TTL_S", default=2.0)
PACER_MAX_WAIT_S: float = env.float("PACER_MAX_WAIT_S", default=5.0)
STREAM_FLUSH_MS: float = env.float("STREAM_FLUSH_MS", default=30.0)
# Garbage collection of each server process (chatapp/gctuning.py): freeze what start-up created, and
# collect generation 0 every GC_GEN0_THRESHOLD net allocations (Python's default: 700; 0 keeps it).
GC_FREEZE: bool = env.bool("GC_FREEZE", default=True)
GC_GEN0_THRESHOLD: int = env.int("GC_GEN0_THRESHOLD", default=10_000)
# /metrics and /api/metrics answer staff, `Authorization: Bearer <METRICS_TOKEN>`, and connections
# from METRICS_ALLOWED_IPS (addresses or networks, matched against the TCP peer, never a forwarded
# header: behind a proxy on the same host every request would come from its address).
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
# The staff dashboard's server-side history: one point per this many seconds, for an hour (ops/history.py).
DASHBOARD_HISTORY_INTERVAL_S: float = env.float("DASHBOARD_HISTORY_INTERVAL_S", default=30.0)
METRICS_ALLOWED_IPS: list[str] = env.list("METRICS_ALLOWED_IPS", default=[])
for _entry in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_entry, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_IPS: {_entry!r} is not an address or network (e.g. 10.0.0.5 or 10.0.0.0/8)."
        ) from _exc

# --- Metrics and feature flags (ops/metrics.py, ops/flags.py; docs/metrics.md) -------------
# PROMETHEUS_MULTIPROC_DIR: one directory shared by every server process of the deployment, emptied
# when the deployment starts. prometheus_client reads the variable itself when first imported (after
# this module) and writes each process's values there; /metrics and /api/metrics then merge all
# processes. Unset: each process reports only itself (right for the single-process `make run`).
PROMETHEUS_MULTIPROC_DIR: str = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
# Flag values are cached per process; a broadcast refreshes them on change, and a cache older than
# this is reloaded in the background on its next read (at most one query per TTL per process).
FLAG_CACHE_TTL_S: float = env.float("FLAG_CACHE_TTL_S", default=1.0)
# django-prometheus: requests (async-native middleware), database queries and cache hits.
MIDDLEWARE = [
    "ops.prometheus.PrometheusBeforeMiddleware",
    *MIDDLEWARE,
    "ops.prometheus.PrometheusAfterMiddleware",
]
DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace(
    "django.db.backends.", "django_prometheus.db.backends."
)
CACHES = {"default": {"BACKEND": "ops.prometheus.LocMemCache"}}
# --- end metrics and feature flags ---------------------------------------------------------------------

# --- Pacer (providers/pacer.py; docs/pacer.md) ---------------------------------------------------------
# One token bucket per provider: PACER_<NAME>_RPS requests per second sustained (0 = unlimited, still
# paused by an upstream 429) and PACER_<NAME>_BURST at once when idle; NAME is the provider's name in
# upper case with "-" as "_". The demo is simulated, so unlimited. 50 rps is well above what one chat
# deployment sends and guards only against a runaway; set your account's real limit. A burst of 10
# lets a surge start at once without sending the upstream more than 10 requests in the same instant.
PACER_LIMITS: dict[str, dict[str, float]] = {
    name: {
        "rps": env.float(f"PACER_{var}_RPS", default=0.0 if name == "demo" else 50.0),
        "burst": env.int(f"PACER_{var}_BURST", default=10),
    }
    for name in PROVIDERS
    for var in [name.upper().replace("-", "_")]
}
# How many server processes share REDIS_URL. While Redis is unreachable each one paces alone at
# 1/PACER_PROCESSES of every limit, so that together they stay within it.
PACER_PROCESSES: int = env.int("PACER_PROCESSES", default=1)
# --- end pacer ------------------------------------------------------------------------------------------

# --- Limits (threads/limits.py, threads/quotas.py, chatapp/bodylimit.py; README "Limits") -------------
# Largest HTTP request body, checked while it arrives (also without or against Content-Length): 413.
# 1 MiB holds the longest message (MAX_MESSAGE_CHARS) even when every character is JSON-escaped.
MAX_BODY_BYTES: int = env.int("MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES  # Django's own check (test client, pages) agrees
# Largest WebSocket frame the consumer handles; a larger one gets an `error` event (`too_large`) and
# the socket stays open. daphne itself drops the connection (close 1009) past its own cap,
# `--websocket-max-message-size` / `--websocket-max-frame-size` (1 MiB in the Makefile and
# tests/servers.py): keep this below that so clients get the readable error.
MAX_WS_FRAME_BYTES: int = env.int("MAX_WS_FRAME_BYTES", default=512 * 1024)
# Longest thread title (400 `title_too_long`); the database column holds 200.
MAX_TITLE_CHARS: int = env.int("MAX_TITLE_CHARS", default=200)
if not 1 <= MAX_TITLE_CHARS <= 200:
    raise ImproperlyConfigured(f"MAX_TITLE_CHARS={MAX_TITLE_CHARS}: use 1 to 200 (the title column's size).")
# Per-user send budget, a token bucket: SEND_RATE_PER_MIN sends a minute sustained, SEND_RATE_BURST at
# once; 0 per minute = unlimited. A send that starts a generation costs one; coalesced followers and
# replays half of one, from a bucket of their own (threads/limits.py FOLLOWER_SHARE). A person types far
# slower than 30 a minute; a script gets 429 + Retry-After.
SEND_RATE_PER_MIN: float = env.float("SEND_RATE_PER_MIN", default=30.0)
SEND_RATE_BURST: int = env.int("SEND_RATE_BURST", default=10)
# Open WebSockets and SSE streams per user (every process together with REDIS_URL); the next handshake
# is closed with 4429, the next stream is 429 too_many_streams. 20 covers many tabs and devices; 0 = unlimited.
MAX_SOCKETS_PER_USER: int = env.int("MAX_SOCKETS_PER_USER", default=20)
# No WebSocket lives longer than this (seconds): it is closed with 4001 and the page reconnects (and
# resumes), so every socket's user is authenticated afresh at least this often. 0 = no limit.
WS_MAX_LIFETIME_S: float = env.float("WS_MAX_LIFETIME_S", default=4 * 3600.0)
# Bytes one WebSocket may have waiting to be written (daphne buffers without limit for a client that
# stops reading); past it the socket is closed with 4008. 2 MiB is several times the largest history
# page (threads/selectors.py) a healthy client takes at once. 0 = no limit.
WS_MAX_BUFFER_BYTES: int = env.int("WS_MAX_BUFFER_BYTES", default=2 * 1024 * 1024)
# Messages in the WebSocket snapshot, the thread page and GET /api/threads/{id}; older ones come a page
# at a time on request (`history` frames, `?before=`).
HISTORY_PAGE_SIZE: int = env.int("HISTORY_PAGE_SIZE", default=50)
if not 1 <= HISTORY_PAGE_SIZE <= 200:
    raise ImproperlyConfigured(f"HISTORY_PAGE_SIZE={HISTORY_PAGE_SIZE}: use 1 to 200 (the largest ?limit=).")
# --- end limits -------------------------------------------------------------------------------------------

# --- Models and connections (providers/models.py, providers/catalog.py; README "Models and connections") --
# Fernet key(s) for the API keys stored in the database, comma-separated: the first encrypts, all
# decrypt (rotation: README). Required with DEBUG off; development derives one from SECRET_KEY.
_FIELD_KEYS_RAW: str = env.str("FIELD_ENCRYPTION_KEY", default="")
if not _FIELD_KEYS_RAW:
    if not DEBUG:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY is not set. With DEBUG off it must hold the Fernet key that encrypts "
            "connection API keys (make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'), and keep it: without it stored API keys are lost."
        )
    from core.crypto import derive_key as _derive_key

    _FIELD_KEYS_RAW = _derive_key(SECRET_KEY)
try:
    from core.crypto import parse_keys as _parse_keys

    FIELD_ENCRYPTION_KEYS: list[str] = _parse_keys(_FIELD_KEYS_RAW)
except ValueError as _exc:
    raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEY: {_exc}.") from _exc
# How long a process serves the model catalog (connections, offers, access) from memory before reading
# it again; a change made in admin in this process applies at once, in the others within this.
MODEL_CATALOG_TTL_S: float = env.float("MODEL_CATALOG_TTL_S", default=5.0)
# At server start (chatapp/asgi.py): check the stored keys open, write the environment's connections.
CONNECTIONS_BOOTSTRAP: bool = env.bool("CONNECTIONS_BOOTSTRAP", default=True)
# Longest per-thread system prompt, in characters.
MAX_SYSTEM_PROMPT_CHARS: int = env.int("MAX_SYSTEM_PROMPT_CHARS", default=8000)
# --- end models and connections ---------------------------------------------------------------------------
# --- graceful shutdown (chatapp/shutdown.py) ---------------------------------------------------------------
# On SIGTERM a server process stops listening, closes its sockets with 1012 and lets its running
# generations finish for at most this long (seconds); one still running then is saved as `interrupted`.
# 30 s covers most replies; a supervisor's stop timeout must be longer (deploy/ adds 15 s).
SHUTDOWN_GRACE_S: float = env.float("SHUTDOWN_GRACE_S", default=30.0)
# --- usage and budgets (billing/) -------------------------------------------------------------------------
# Prices in USD per million input and output tokens, as JSON: {"openai/gpt-4o-mini": ["0.15", "0.60"],
# "anthropic": ["3", "15"]} (a model's own entry first, then its provider's); unlisted models cost 0.
# A model offer's own prices (set in admin) come first; billing.prices.prices_for is the one reader.
MODEL_PRICES: dict[str, list[str]] = env.json("MODEL_PRICES", default={})
# What a generation reserves of a budget before it starts: the prompt plus this many output tokens (the
# request's max_tokens: a call cannot cost more, so a budget is over-run by one call at most).
BUDGET_RESERVE_OUTPUT_TOKENS: int = env.int("BUDGET_RESERVE_OUTPUT_TOKENS", default=1024)
# --- Accounts (#20: django-allauth; README "Accounts") ---------------------------------------------------
INSTALLED_APPS += [
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.usersessions",
    "django.contrib.humanize",  # allauth's session list
]
# allauth's middleware after Django's authentication; then the session tracker (device, address, last
# seen) and the gate that sends staff without a second factor to set one up before admin opens.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
    "allauth.account.middleware.AccountMiddleware",
)
MIDDLEWARE.insert(
    MIDDLEWARE.index("allauth.account.middleware.AccountMiddleware") + 1,
    "allauth.usersessions.middleware.UserSessionsMiddleware",
)
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.messages.middleware.MessageMiddleware") + 1,
    "accounts.middleware.StaffMfaMiddleware",
)
# ModelBackend first: sessions made before allauth name it, and keep working.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapter.SocialAccountAdapter"
ACCOUNT_FORMS = {"signup": "accounts.forms.SignupForm"}
ACCOUNT_LOGIN_METHODS = {"username"}
# E-mail is optional: a user may add one (for password reset) on the e-mail page.
ACCOUNT_SIGNUP_FIELDS = ["username*", "email", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION: str = env.str("ACCOUNT_EMAIL_VERIFICATION", default="none")
if ACCOUNT_EMAIL_VERIFICATION not in {"none", "optional", "mandatory"}:
    raise ImproperlyConfigured("ACCOUNT_EMAIL_VERIFICATION: use none, optional or mandatory.")
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False  # the user stays logged in here; their other sessions end
ACCOUNT_PASSWORD_RESET_BY_CODE_ENABLED = False
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_SESSION_REMEMBER = None  # the log-in form's "remember me" box decides
# Failed log-ins per address and per account (username): past either, every attempt is refused, the
# right password included, until the window has passed. 10 per 15 minutes per account stops guessing
# and costs a person who mistypes nothing; an address may carry several people (an office), so 30.
ACCOUNT_LOGIN_FAILED_RATE: str = env.str("ACCOUNT_LOGIN_FAILED_RATE", default="30/15m/ip,10/15m/key")
ACCOUNT_RATE_LIMITS = {"login_failed": ACCOUNT_LOGIN_FAILED_RATE}
ACCOUNT_RATE_LIMITS_ENABLED = True
# open (anyone signs up), approval (new accounts wait, inactive, until staff approve them in admin) or
# closed (only through an invitation link staff create in admin).
SIGNUP_MODE: str = env.str("SIGNUP_MODE", default="open")
if SIGNUP_MODE not in {"open", "approval", "closed"}:
    raise ImproperlyConfigured(f"SIGNUP_MODE={SIGNUP_MODE!r}: use open, approval or closed.")
INVITATION_DAYS: int = env.int("INVITATION_DAYS", default=7)
# Two-factor: TOTP apps, security keys (WebAuthn; allauth's scripts are files and JSON data blocks, so
# the CSP holds) and recovery codes; staff must have one before admin opens.
MFA_SUPPORTED_TYPES = ["totp", "webauthn", "recovery_codes"]
# WebAuthn needs https, except on localhost; `make run` serves http.
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = DEBUG
MFA_TOTP_ISSUER: str = env.str("MFA_TOTP_ISSUER", default="chatapp")
# Django's database sessions, each row naming its user (accounts/sessions.py): "log out everywhere
# else", a new password, deactivation and demotion end every session of the user, tracked by
# usersessions or not. Migration accounts 0003 copies django_session's live sessions over.
SESSION_ENGINE = "accounts.sessions"
USERSESSIONS_ADAPTER = "accounts.adapter.UserSessionsAdapter"
USERSESSIONS_TRACK_ACTIVITY = True
# Behind N proxies that append to X-Forwarded-For, the client's address (rate limits, audit) is the
# N-th from the right; 0: the TCP peer.
ALLAUTH_TRUSTED_PROXY_COUNT: int = env.int("ALLAUTH_TRUSTED_PROXY_COUNT", default=0)
# Log-in throttling counts in the cache: with REDIS_URL every process counts together.
if REDIS_URL:
    CACHES["default"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_KEY_PREFIX}:cache",
    }
# Audit rows older than this many days are deleted once a day by the server (accounts/retention.py)
# or at once by `manage.py prune_audit`.
AUDIT_RETENTION_DAYS: int = env.int("AUDIT_RETENTION_DAYS", default=365)

# Single sign-on: OIDC_PROVIDERS=corp,other and for each OIDC_<ID>_ISSUER, OIDC_<ID>_CLIENT_ID,
# OIDC_<ID>_SECRET and optionally OIDC_<ID>_NAME (the button's label).
SOCIALACCOUNT_PROVIDERS: dict[str, Any] = {"openid_connect": {"OAUTH_PKCE_ENABLED": True, "APPS": []}}
for _oidc in env.list("OIDC_PROVIDERS", default=[]):
    _var = _oidc.upper().replace("-", "_")
    try:
        SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"].append(
            {
                "provider_id": _oidc,
                "name": env.str(f"OIDC_{_var}_NAME", default=_oidc),
                "client_id": env.str(f"OIDC_{_var}_CLIENT_ID"),
                "secret": env.str(f"OIDC_{_var}_SECRET"),
                "settings": {"server_url": env.str(f"OIDC_{_var}_ISSUER")},
            }
        )
    except ImproperlyConfigured as _exc:
        raise ImproperlyConfigured(f"OIDC provider {_oidc!r}: {_exc}") from _exc
SOCIALACCOUNT_LOGIN_ON_GET = False  # a provider button POSTs (no log-in started by a link)
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # an OIDC e-mail never logs into an existing local account

# E-mail (password reset): the console on `make run`; EMAIL_URL (smtp://user:pass@host:587,
# smtp+tls://…) in production.
if env.str("EMAIL_URL", default=""):
    globals().update(env.email_url("EMAIL_URL"))
elif DEBUG:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="chatapp <noreply@localhost>")
# --- end accounts -----------------------------------------------------------------------------------------
