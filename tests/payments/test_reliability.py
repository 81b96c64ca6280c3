"""The circuit breaker's state is shared by every process, through the shared cache."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from payments.gateway import GatewayTechnicalError
from payments.reliability import CircuitBreaker, CircuitOpen
from tests.factories import make_customer

pytestmark = pytest.mark.django_db


def failing() -> None:
    raise GatewayTechnicalError("connection refused")


def test_two_breakers_of_one_provider_see_one_state_as_two_processes_would(shared_cache):
    now = [1_000.0]
    web, worker = (
        CircuitBreaker("card", failure_threshold=2, reset_seconds=30, clock=lambda: now[0])
        for _ in range(2)
    )
    for breaker in (web, worker):  # one failure in each process: two in a row
        with pytest.raises(GatewayTechnicalError):
            breaker.call(failing)

    assert (web.state, worker.state) == ("open", "open")
    with pytest.raises(CircuitOpen):
        worker.call(lambda: "not called")
    assert CircuitBreaker("klarna").state == "closed"  # per provider

    now[0] += 31

    def trial() -> str:
        with pytest.raises(CircuitOpen):  # the web process holds the one trial
            worker.call(lambda: "a second trial")
        return "approved"

    assert web.call(trial) == "approved"
    assert (web.state, worker.state) == ("closed", "closed")
    assert worker.call(lambda: "ok") == "ok"


def test_a_failed_trial_in_one_process_reopens_the_breaker_for_all(shared_cache):
    now = [1_000.0]
    web, worker = (
        CircuitBreaker("card", failure_threshold=1, reset_seconds=30, clock=lambda: now[0])
        for _ in range(2)
    )
    with pytest.raises(GatewayTechnicalError):
        web.call(failing)
    now[0] += 31
    assert worker.state == "half_open"
    with pytest.raises(GatewayTechnicalError):
        worker.call(failing)  # the trial fails
    assert web.state == "open"
    now[0] += 31
    assert web.call(lambda: "ok") == "ok"  # the trial slot was given back
    assert worker.state == "closed"


def test_a_trial_that_ends_in_another_error_gives_the_slot_back(shared_cache):
    now = [1_000.0]
    breaker = CircuitBreaker("card", failure_threshold=1, reset_seconds=30, clock=lambda: now[0])
    with pytest.raises(GatewayTechnicalError):
        breaker.call(failing)
    now[0] += 31

    def bug() -> None:
        raise KeyError("not a provider failure")

    with pytest.raises(KeyError):
        breaker.call(bug)
    assert breaker.state == "half_open"
    assert breaker.call(lambda: "ok") == "ok"


def test_half_open_admits_no_second_trial_while_the_first_is_failing(shared_cache):
    now = [1_000.0]
    second_trials = []

    class Breaker(CircuitBreaker):
        def _count_failure(self) -> int:
            counted = super()._count_failure()
            # Another process asks, as the failed trial is being recorded.
            other = CircuitBreaker(
                "card", failure_threshold=1, reset_seconds=30, clock=lambda: now[0]
            )
            try:
                trial = other._before()  # None: closed, so no trial
            except CircuitOpen:
                trial = None
            if trial:
                second_trials.append(trial)
            return counted

    breaker = Breaker("card", failure_threshold=1, reset_seconds=30, clock=lambda: now[0])
    with pytest.raises(GatewayTechnicalError):
        breaker.call(failing)
    now[0] += 31

    with pytest.raises(GatewayTechnicalError):
        breaker.call(failing)  # the trial fails

    assert second_trials == []
    assert breaker.state == "open"


UNREACHABLE_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens there
        "KEY_PREFIX": "oms",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


def test_an_unreachable_cache_leaves_payments_going_with_one_warning(settings, caplog):
    settings.CACHES = UNREACHABLE_CACHE
    breaker = CircuitBreaker("card", failure_threshold=1, reset_seconds=30)

    with caplog.at_level(logging.WARNING, logger="payments.reliability"):
        for _ in range(3):
            assert breaker.call(lambda: "approved") == "approved"
            with pytest.raises(GatewayTechnicalError):  # the provider's error, not the cache's
                breaker.call(failing)
        assert breaker.state == "closed"

    warnings = [r for r in caplog.records if "shared cache is unreachable" in r.getMessage()]
    assert len(warnings) == 1


def test_nothing_written_to_the_database_cache_lives_forever_but_an_open_breaker(settings):
    settings.CACHES = {"default": settings.DATABASE_CACHE}
    call_command("createcachetable", verbosity=0)
    make_customer(email="dana@example.com", password="correct-horse-battery")
    for i in range(3):
        APIClient().post(
            "/api/v1/auth/token",
            {"email": "dana@example.com", "password": f"guess-{i}"},
            format="json",
            REMOTE_ADDR="203.0.113.7",
        )
    breaker = CircuitBreaker("card", failure_threshold=2, reset_seconds=30)
    with pytest.raises(GatewayTechnicalError):
        breaker.call(failing)
    with pytest.raises(GatewayTechnicalError):
        breaker.call(failing)

    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM oms_cache")
        written = cursor.fetchone()[0]
        # The database compares its own datetimes (SQLite keeps them as naive text).
        cursor.execute(
            "SELECT cache_key FROM oms_cache WHERE expires > %s",
            [connection.ops.adapt_datetimefield_value(timezone.now() + timedelta(days=1))],
        )
        lasting = {key for (key,) in cursor.fetchall()}
    assert written > 3
    assert lasting == {"oms:1:payments:breaker:card:opened_at"}
