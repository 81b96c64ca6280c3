from __future__ import annotations

from collections.abc import Callable

import pytest
from django.apps import apps
from django.conf import settings
from rest_framework.test import APIClient

from core import clock
from ledger.models import Account
from ledger.selectors import ledger_problems
from payments import crypto, reliability
from payments.models import Provider, ProviderAccount
from payments.sandbox import server as sandbox_server
from tests.factories import ChannelFactory, StockItemFactory, fund, make_customer, token_for

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
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        _flush_past_append_only_triggers()


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


@pytest.fixture(autouse=True)
def _ledger_stays_consistent(request: pytest.FixtureRequest):
    """After every test that touches the database, the ledger must verify clean."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None and not {"db", "transactional_db"} & set(request.fixturenames):
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
def fresh_breakers():
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
