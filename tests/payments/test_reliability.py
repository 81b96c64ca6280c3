"""The circuit breaker's state is shared by every process, through the shared cache."""

from __future__ import annotations

import pytest

from payments.gateway import GatewayTechnicalError
from payments.reliability import CircuitBreaker, CircuitOpen

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
