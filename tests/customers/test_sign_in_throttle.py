"""Password guessing is throttled per address and per address + account (issue 12 #7)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.test import Client
from rest_framework.test import APIClient

from core import clock
from tests.factories import make_customer

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
TOKEN_URL = "/api/v1/auth/token"
WINDOW = timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
PER_ACCOUNT = settings.LOGIN_FAILURES_PER_ACCOUNT


def token(email: str, password: str, address: str = "203.0.113.7", **headers):
    return APIClient().post(
        TOKEN_URL,
        {"email": email, "password": password},
        format="json",
        REMOTE_ADDR=address,
        **headers,
    )


@pytest.fixture
def dana():
    return make_customer(email="dana@example.com", password=PASSWORD)


def test_fifty_wrong_passwords_then_the_right_one_is_refused_with_retry_after(dana, shared_cache):
    answers = [token("dana@example.com", f"guess-{i}").status_code for i in range(50)]
    assert answers == [400] * PER_ACCOUNT + [429] * (50 - PER_ACCOUNT)

    right = token("dana@example.com", PASSWORD)

    assert right.status_code == 429
    assert right.json()["error"]["code"] == "request.throttled"
    assert 0 < int(right["Retry-After"]) <= WINDOW.total_seconds()
    assert "token" not in right.json()


def test_the_owner_signs_in_from_another_address_and_after_the_window(dana, shared_cache):
    for i in range(PER_ACCOUNT):
        token("dana@example.com", f"guess-{i}")
    assert token("dana@example.com", PASSWORD).status_code == 429

    assert token("dana@example.com", PASSWORD, address="198.51.100.4").status_code == 200
    with clock.travel(WINDOW):
        assert token("dana@example.com", PASSWORD).status_code == 200


def test_a_forged_forwarded_for_header_is_not_another_address(dana):
    for i in range(PER_ACCOUNT):
        token("dana@example.com", f"guess-{i}", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    forged = token("dana@example.com", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert forged.status_code == 429


def test_a_success_starts_the_accounts_count_again(dana):
    for i in range(PER_ACCOUNT - 1):
        token("dana@example.com", f"guess-{i}")
    assert token("dana@example.com", PASSWORD).status_code == 200
    for i in range(PER_ACCOUNT - 1):
        assert token("dana@example.com", f"again-{i}").status_code == 400
    assert token("dana@example.com", PASSWORD).status_code == 200


def test_one_address_guessing_across_accounts_is_stopped(dana):
    per_address = settings.LOGIN_FAILURES_PER_ADDRESS
    for i in range(per_address):
        assert token(f"user{i}@example.com", "guess").status_code == 400
    assert token("dana@example.com", PASSWORD).status_code == 429
    assert token("dana@example.com", PASSWORD, address="198.51.100.4").status_code == 200


def sign_in(path: str, username: str, password: str, address: str = "203.0.113.7"):
    return Client().post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_the_login_page_locks_out_guessing_with_a_clear_page(dana):
    for i in range(PER_ACCOUNT):
        assert sign_in("/accounts/login/", "dana@example.com", f"guess-{i}").status_code == 200

    page = sign_in("/accounts/login/", "dana@example.com", PASSWORD)

    assert page.status_code == 429
    assert int(page["Retry-After"]) > 0
    assert b"Too many failed sign-in attempts" in page.content
    assert "_auth_user_id" not in page.client.session
    other = sign_in("/accounts/login/", "dana@example.com", PASSWORD, address="198.51.100.4")
    assert other.status_code == 302


def test_the_admin_login_locks_out_guessing(django_user_model):
    django_user_model.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    for i in range(PER_ACCOUNT):
        assert sign_in("/admin/login/", "boss", f"guess-{i}").status_code == 200

    page = sign_in("/admin/login/", "boss", PASSWORD)

    assert page.status_code == 429
    assert b"Too many failed sign-in attempts" in page.content
    with clock.travel(WINDOW):
        assert sign_in("/admin/login/", "boss", PASSWORD).status_code == 302


def test_a_look_alike_spelling_of_the_username_counts_for_the_same_account(dana, shared_cache):
    for i in range(PER_ACCOUNT):
        assert sign_in("/accounts/login/", "dana@example.com", f"guess-{i}").status_code == 200
    # Fullwidth letters and capitals: the sign-in form reads them as dana@example.com.
    for spelling in ("\uff44ana@example.com", " DANA@example.com", "d\uff41na@example.com"):
        assert sign_in("/accounts/login/", spelling, PASSWORD).status_code == 429


def test_addresses_of_one_ipv6_64_count_as_one(dana):
    for i in range(PER_ACCOUNT):
        token("dana@example.com", f"guess-{i}", address=f"2001:db8:1:2::{i + 1:x}")
    assert token("dana@example.com", PASSWORD, address="2001:db8:1:2:ffff::9").status_code == 429
    assert token("dana@example.com", PASSWORD, address="2001:db8:1:3::1").status_code == 200


def test_guesses_from_many_addresses_slow_the_account_until_the_window_ends(dana, settings):
    settings.LOGIN_ATTEMPTS_PER_ACCOUNT_ALL_ADDRESSES = 12
    answers = [
        token("dana@example.com", f"guess-{i}", address=f"198.51.100.{i}").status_code
        for i in range(15)
    ]
    assert answers == [400] * 12 + [429] * 3

    refused = token("dana@example.com", PASSWORD, address="192.0.2.77")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= WINDOW.total_seconds()
    with clock.travel(WINDOW):
        assert token("dana@example.com", PASSWORD, address="192.0.2.77").status_code == 200


UNREACHABLE_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens there
        "KEY_PREFIX": "oms",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


def test_with_the_cache_unreachable_signing_in_answers_503_not_unthrottled(dana, settings):
    settings.CACHES = UNREACHABLE_CACHE

    api = token("dana@example.com", PASSWORD)
    assert api.status_code == 503
    assert api.json()["error"]["code"] == "auth.sign_in_unavailable"
    assert "token" not in api.json()

    page = sign_in("/accounts/login/", "dana@example.com", PASSWORD)
    assert page.status_code == 503
    assert b"Signing in is unavailable for a moment" in page.content
    assert "_auth_user_id" not in page.client.session


def test_every_counter_in_redis_expires_with_its_window(dana):
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        pytest.skip("the tests' shared cache is not Redis")
    for i in range(3):
        token("dana@example.com", f"guess-{i}")
    assert token("dana@example.com", PASSWORD).status_code == 200  # gives places back

    client = backend._cache.get_client(None)
    keys = list(client.scan_iter(match=f"{backend.key_prefix}:*login*"))
    assert len(keys) == 2  # the address's and the account's; the pair's was cleared
    for key in keys:
        assert 0 < client.ttl(key) <= WINDOW.total_seconds() + 1
