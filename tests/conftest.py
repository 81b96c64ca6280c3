from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.management import call_command
from django.test import override_settings
from django.test.signals import clear_cache_handlers
from rest_framework.test import APIClient

from core import clock
from ledger.models import Account
from ledger.selectors import ledger_problems
from payments import crypto, reliability
from payments.models import Provider, ProviderAccount
from payments.sandbox import server as sandbox_server
from tests.factories import (
    ChannelFactory,
    StockItemFactory,
    fund,
    make_customer,
    saved_cards,
    token_for,
)

OUR_APPS = (
    "core",
    "customers",
    "ledger",
    "payments",
    "wallet",
    "bnpl",
    "collections",
    "oms",
    "reports",
    "auth",
    "authtoken",
)


def pytest_configure(config: pytest.Config) -> None:
    # Passwords are hashed for real in production; tests only need them to match.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Tests run with DEBUG off, where payment secrets need a key, as in production.
    from cryptography.fernet import Fernet

    settings.PAYMENTS_ENCRYPTION_KEY = Fernet.generate_key().decode()
    _share_the_cache_through_redis()
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        _flush_past_append_only_triggers()


def _share_the_cache_through_redis() -> None:
    """The shared cache is Redis, as in production: CACHE_URL, else the broker's Redis.

    CACHE_URL is exported, so worker processes a test starts share it too. Cache keys
    carry a prefix, so clearing them between tests leaves the broker's keys alone.
    Without Redis the settings' database cache is used (its table is in the test database).
    """
    url = os.environ.get("CACHE_URL") or os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith(("redis://", "rediss://")):
        return
    os.environ["CACHE_URL"] = url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
            "TIMEOUT": settings.CACHE_DEFAULT_TIMEOUT,
            "OPTIONS": settings.REDIS_CACHE_OPTIONS,
        }
    }
    clear_cache_handlers(setting="CACHES")  # as override_settings does


def _clear_shared_cache(request: pytest.FixtureRequest) -> None:
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        client = backend._cache.get_client(None, write=True)
        keys = list(client.scan_iter(match=f"{backend.key_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    elif _uses_database(request):
        backend.clear()


def _uses_database(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return marker is not None or bool({"db", "transactional_db"} & set(request.fixturenames))


@pytest.fixture(params=["redis", "database"])
def shared_cache(request, db):
    """Each backend of the shared cache in turn: the tests' Redis, then the embedded
    default's database table."""
    if request.param == "redis":
        yield
        return
    with override_settings(CACHES={"default": settings.DATABASE_CACHE}):
        call_command("createcachetable", verbosity=0)
        yield


@pytest.fixture(autouse=True)
def _shared_cache_is_cleared(request: pytest.FixtureRequest):
    """Throttle counters and circuit breakers never leak from one test into another."""
    if _uses_database(request):
        request.getfixturevalue("_django_db_helper")
    _clear_shared_cache(request)
    yield
    _clear_shared_cache(request)


def _flush_past_append_only_triggers() -> None:
    """On SQLite, a test database is flushed past the append-only triggers, as PostgreSQL's
    ``TRUNCATE`` is: each trigger is dropped and made again in the flush's transaction."""
    from django.db.backends.sqlite3.operations import DatabaseOperations

    plain = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, **kwargs):
        statements = plain(self, style, tables, **kwargs)
        if not statements:
            return statements
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
            triggers = cursor.fetchall()
        return [
            *(f"DROP TRIGGER {name};" for name, _sql in triggers),
            *statements,
            *(f"{sql};" for _name, sql in triggers),
        ]

    DatabaseOperations.sql_flush = sql_flush


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On SQLite (``make test-sqlite``), the tests marked ``postgres`` are skipped."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (marked postgres); this run is on SQLite")
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clock_is_put_back(request: pytest.FixtureRequest):
    """Every test starts on the real clock and leaves it there: a moved clock would shift
    the dates of every test after it."""
    assert not clock.is_moved(), "an earlier test left the clock moved"
    yield
    assert not clock.is_moved(), f"{request.node.nodeid} left the clock moved"


@pytest.fixture(
    params=[timedelta(seconds=-30), timedelta(seconds=30)],
    ids=["before-business-midnight", "after-business-midnight"],
)
def around_business_midnight(request: pytest.FixtureRequest) -> Iterator[datetime]:
    """Run the test twice, the clock 30 seconds before and 30 seconds after the coming
    midnight in ``BUSINESS_TIME_ZONE``: a date-sensitive test must not depend on the hour
    the suite runs at (UTC and business dates differ for an hour or two each night)."""
    tz = clock.business_tz()
    midnight = datetime.combine(clock.business_date() + timedelta(days=1), time(0), tzinfo=tz)
    moment = midnight + request.param
    with clock.travel_to(moment):
        yield moment


@pytest.fixture(autouse=True)
def _ledger_stays_consistent(request: pytest.FixtureRequest):
    """After every test that touches the database, the ledger must verify clean."""
    if not _uses_database(request):
        yield
        return
    # Set the database up first, so this check runs before its rollback or flush.
    request.getfixturevalue("_django_db_helper")
    yield
    assert ledger_problems() == []


def db_state() -> dict[str, object]:
    """Row counts of every table of the product, and every account balance."""
    counts: dict[str, object] = {
        model._meta.label: model._base_manager.count()
        for model in apps.get_models()
        if model._meta.app_label in OUR_APPS
    }
    counts["balances"] = dict(Account.objects.values_list("code", "balance"))
    return counts


@pytest.fixture
def unchanged_db() -> Callable[[], None]:
    """``check = unchanged_db(); …; check()`` asserts nothing was written in between."""

    def start() -> Callable[[], None]:
        before = db_state()

        def check() -> None:
            assert db_state() == before

        return check

    return start


@pytest.fixture
def web_channel():
    return ChannelFactory(code="web")


@pytest.fixture
def customer(web_channel):
    customer = make_customer()
    fund(customer, "500.00")
    return customer


# The payment sandbox's tokens that tests charge: any pm_ token is approved, and the
# magic ones script the processor (payments/sandbox/server.py).
SANDBOX_TOKENS = (
    "pm_card_visa",
    "pm_card_ok",
    "pm_card",
    "pm_decline",
    "pm_lost",
    "pm_review",
    "pm_timeout",
    "pm_error_once",
)


@pytest.fixture
def customer_cards(request: pytest.FixtureRequest) -> None:
    """Saved cards for the ``customer`` fixture with every sandbox token, so a module can
    charge them: ``pytest.mark.usefixtures("customer_cards")``. A test that uses it without
    ``customer`` fails: its customers need their own cards (``saved_card``)."""
    if "customer" not in request.fixturenames:
        pytest.fail(
            "customer_cards saves cards for the customer fixture, which this test does not "
            "use: give its customers their own (tests.factories.saved_card)",
            pytrace=False,
        )
    saved_cards(request.getfixturevalue("customer"), *SANDBOX_TOKENS)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def customer_api(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    return client


@pytest.fixture
def stock():
    """``stock("SKU", 10)`` puts 10 units of SKU in a warehouse."""

    def make(sku: str, on_hand: int = 100, **kwargs):
        return StockItemFactory(sku=sku, on_hand=on_hand, **kwargs)

    return make


# --- the payment sandbox and a card processor account pointed at it ------------------


@pytest.fixture
def sandbox():
    server = sandbox_server.start_in_thread()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def fresh_breakers(_shared_cache_is_cleared):
    """Breakers a test configured are forgotten; their state went with the cache."""
    reliability._breakers.clear()
    yield
    reliability._breakers.clear()


@pytest.fixture
def card_processor(sandbox):
    now = clock.now()
    return ProviderAccount.objects.create(
        provider=Provider.CARD,
        enabled=True,
        base_url=f"{sandbox}/card",
        credentials_encrypted=crypto.encrypt({"secret": "sk_test_sandbox"}),
        created_at=now,
        updated_at=now,
    )
