"""Settings, read from the environment.

With nothing set, the product runs on embedded defaults (SQLite and kombu's filesystem
broker under ``var/``) so that ``make run`` works on a bare machine. Production and the
test suite set ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis or RabbitMQ).
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("OMS_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", True)
DEV_SECRET_KEY = "dev-only-insecure-key-set-DJANGO_SECRET_KEY-in-production"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()
]
if DEBUG:
    SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["*"]
else:
    # Production never runs on the public development key, a short or guessable one (as
    # Django's security check judges: 50 characters, 5 distinct or more), or answers any
    # Host header.
    if SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off: set DJANGO_SECRET_KEY to a long random secret (at least "
            "50 characters, not the development key), e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'."
        )
    if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "DJANGO_DEBUG is off: set DJANGO_ALLOWED_HOSTS to this deployment's host names "
            "(comma-separated, no '*')."
        )

# --- HTTPS (production) ---------------------------------------------------------------
# Behind a proxy that terminates TLS, name the header it sets (X-Forwarded-Proto) so a
# request is known to have come over HTTPS; set it only if the proxy always overwrites it.
_proxy_ssl_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers probe over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = int(
    os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0" if DEBUG else str(365 * 24 * 3600))
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "core",
    "customers",
    "ledger",
    "payments",
    "wallet",
    "bnpl",
    "collections_.apps.CollectionsConfig",
    "oms",
    "reports",
]

MIDDLEWARE = [
    "core.api.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.BusinessTimeZoneMiddleware",
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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# SQLite runs in IMMEDIATE mode: with DEFERRED, concurrent writers fail with "database is
# locked" instead of waiting for each other.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    # Persistent connections (checked before reuse) spare each request a new connection.
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
            conn_health_checks=True,
        )
    }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "oms.sqlite3",
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
        }
    }
DATABASES["default"]["ATOMIC_REQUESTS"] = False  # services own their transactions
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The same file whether named by DATABASE_URL or not: writers wait for each other, and
    # the tests get a file beside it (threads, the live server and workers share it).
    import sqlite3

    from django.core.exceptions import ImproperlyConfigured

    if sqlite3.sqlite_version_info < (3, 35):  # RETURNING (3.35), UPDATE … FROM (3.33)
        raise ImproperlyConfigured(
            f"SQLite {sqlite3.sqlite_version} is too old: the set-based writes need 3.35 or "
            "later (RETURNING). Use a newer Python build, or PostgreSQL (DATABASE_URL)."
        )
    _sqlite = Path(DATABASES["default"]["NAME"])
    # Options named in DATABASE_URL (?timeout=…) win over these defaults.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        **DATABASES["default"].get("OPTIONS", {}),
    }
    DATABASES["default"]["TEST"] = {"NAME": str(_sqlite.with_name(f"{_sqlite.stem}-test.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------
# One cache shared by every web and worker process: login throttles and the payment
# circuit breakers keep their counters here. Redis in production (CACHE_URL); the
# embedded default is a table in the database, made by `manage.py createcachetable`
# (`make run` runs it; test databases get it from Django).
CACHE_URL = os.environ.get("CACHE_URL", "")
# Every counter is written with its own timeout; a value written without one (or by the
# database cache's incr, which rewrites the row) lives an hour at most. Only a payment
# breaker's "opened at" is kept until a trial call closes the breaker (timeout=None).
CACHE_DEFAULT_TIMEOUT = 3600
DATABASE_CACHE = {
    "BACKEND": "django.core.cache.backends.db.DatabaseCache",
    "LOCATION": "oms_cache",
    "KEY_PREFIX": "oms",
    # Culling a full table could drop a breaker's state: keep far more than needed.
    "OPTIONS": {"MAX_ENTRIES": 100_000},
    "TIMEOUT": CACHE_DEFAULT_TIMEOUT,
}
# A cache that does not answer within a second is treated as down (sign-ins answer 503,
# breakers stay closed) rather than holding every request.
REDIS_CACHE_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 1}
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "oms",
            "TIMEOUT": CACHE_DEFAULT_TIMEOUT,
            "OPTIONS": REDIS_CACHE_OPTIONS,
        }
    }
else:
    CACHES = {"default": DATABASE_CACHE}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Due dates and "today" are reckoned in the business's own time zone.
BUSINESS_TIME_ZONE = os.environ.get("BUSINESS_TIME_ZONE", "Europe/Amsterdam")

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/wallet/"

# --- Sign-in throttling (customers/throttling.py) -------------------------------------
# Sign-in attempts (a success gives its place back) allowed per window from one address
# (IPv6: its /64) for one account, and from one address across accounts; then that
# address waits for the window to end (429). Across all addresses an account takes a
# higher ceiling per window: many addresses slow its guessing, and its owner gets in
# again in the next window.
LOGIN_FAILURE_WINDOW_SECONDS = 15 * 60
LOGIN_FAILURES_PER_ACCOUNT = 5
LOGIN_FAILURES_PER_ADDRESS = 50
LOGIN_ATTEMPTS_PER_ACCOUNT_ALL_ADDRESSES = 100
# Proxies in front of the app that append to X-Forwarded-For: 0 trusts REMOTE_ADDR only,
# so a client cannot pick its own address.
NUM_PROXIES = int(os.environ.get("DJANGO_NUM_PROXIES", "0"))

# --- Saved cards (payments/methods.py) -------------------------------------------------
# Cards a customer may save per hour (the processor is asked each time: card testing), and
# at most this many saved cards at once.
PAYMENT_METHOD_SAVE_RATE = os.environ.get("PAYMENT_METHOD_SAVE_RATE", "10/hour")
PAYMENTS_MAX_SAVED_CARDS = int(os.environ.get("PAYMENTS_MAX_SAVED_CARDS", "10"))

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "oms.api.authentication.ChannelKeyAuthentication",
        "customers.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.errors.exception_handler",
    # Scoped throttles (rest_framework.throttling.ScopedRateThrottle), on the shared cache.
    "DEFAULT_THROTTLE_RATES": {"payment_methods": PAYMENT_METHOD_SAVE_RATE},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "OMS + Buy Now Pay Later — storefront API",
    "DESCRIPTION": (
        "Orders, wallet and customers for storefronts and sales channels. Money is "
        '`{"amount": "123.45", "currency": "EUR"}`; every error is '
        '`{"error": {"code", "message", "fields"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        f"CurrencyExponent{exp}Enum": f"core.api.fields.CURRENCIES_EXPONENT_{exp}"
        for exp in (0, 2, 3)
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema.document_body_errors",
    ],
}

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # Broadcast (remote control) tables; kombu's default is ./control in the repository.
        "control_folder": str(BROKER_DIR / "control"),
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = BUSINESS_TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Product --------------------------------------------------------------------------
DEFAULT_CURRENCY = os.environ.get("DEFAULT_CURRENCY", "EUR")
# Channel used when a customer's own token places an order without naming one.
DEFAULT_CUSTOMER_CHANNEL = "web"
# An idempotency claim whose request never finished may be taken over after this long.
IDEMPOTENCY_LOCK_SECONDS = 60
# Largest quantity one order line may carry.
MAX_LINE_QUANTITY = 10_000
MAX_ORDER_LINES = 200

# Where providers reach this deployment (shown as the webhook URL to register).
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000")
# Where a customer updates the card their installments are debited from: the link in a
# failed-debit email. The storefront's own page in production; "{plan_id}" is filled in.
COLLECTIONS_PAYMENT_METHOD_URL = os.environ.get(
    "COLLECTIONS_PAYMENT_METHOD_URL",
    PUBLIC_BASE_URL.rstrip("/") + "/api/v1/bnpl/plans/{plan_id}/payment-method",
)
# Fernet key for payment secrets at rest (payments/crypto.py); required with DEBUG off.
PAYMENTS_ENCRYPTION_KEY = os.environ.get("PAYMENTS_ENCRYPTION_KEY", "")
# A lending partner's application still referred or unanswered after this long is read
# back from the partner (payments.reconcile_partner_applications).
PAYMENTS_PARTNER_RECONCILE_AFTER_SECONDS = int(
    os.environ.get("PAYMENTS_PARTNER_RECONCILE_AFTER_SECONDS", "600")
)

# Installment credit (bnpl/underwriting.py documents each rule and its reason code).
# An order on hold for a credit decision is released (cancelled) after this long.
BNPL_DECISION_TIMEOUT = timedelta(hours=int(os.environ.get("BNPL_DECISION_TIMEOUT_HOURS", "24")))
# The credit policy: (CreditFacts) -> CreditDecision; a lender may plug in its own model.
BNPL_CREDIT_POLICY = os.environ.get("BNPL_CREDIT_POLICY", "bnpl.underwriting.default_policy")
# Exposure limit by customer tier, major units of the plan's currency (a borrower profile's
# credit_limit_override, in minor units, replaces it).
BNPL_INSTALLMENT_CREDIT_LIMITS = {
    "standard": "1500",
    "silver": "3000",
    "gold": "5000",
    "platinum": "10000",
}
BNPL_SCORE_DECLINE_BELOW = 450
BNPL_SCORE_REVIEW_BELOW = 550
BNPL_VELOCITY_MAX_24H = 3
BNPL_HISTORY_MULTIPLIER = 3
BNPL_NEW_ACCOUNT_DAYS = 14
BNPL_NEW_ACCOUNT_MAX_AMOUNT = "300"
BNPL_SHARED_TOKEN_MAX_CUSTOMERS = 0
# Risk signals go to staff review unless listed here as "decline".
BNPL_RISK_ACTIONS: dict[str, str] = {}

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "no-reply@oms.example")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
