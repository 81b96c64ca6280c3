"""Retries for technical failures only, and a circuit breaker per provider.

Declines are answers and are never retried; a timeout is an unknown outcome and is
never retried blindly (the reconciler asks the provider). Only ``GatewayTechnicalError``
(5xx, connection refused) is retried, with exponential backoff and full jitter, and
with the same idempotency key, so a retry can never charge twice.

The breaker is per process (each web or worker process learns on its own): after
``failure_threshold`` technical failures in a row it opens and refuses calls at once for
``reset_seconds``; then one trial call decides whether it closes again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from core.errors import ApplicationError
from payments.gateway import GatewayTechnicalError

T = TypeVar("T")


class CircuitOpen(ApplicationError):
    code = "payments.provider_unavailable"
    status_code = 503
    default_message = "The payment provider is failing; try again shortly."


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at >= self.reset_seconds:
                return "half_open"
            return "open"

    def _before(self) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            if self._clock() - self._opened_at < self.reset_seconds or self._trial_running:
                raise CircuitOpen()
            self._trial_running = True  # half-open: this call is the trial

    def _after(self, ok: bool) -> None:
        with self._lock:
            self._trial_running = False
            if ok:
                self._failures, self._opened_at = 0, None
                return
            self._failures += 1
            if self._opened_at is not None or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()

    def call(self, fn: Callable[[], T]) -> T:
        self._before()
        try:
            result = fn()
        except GatewayTechnicalError:
            self._after(ok=False)
            raise
        self._after(ok=True)
        return result


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(provider: str) -> CircuitBreaker:
    with _breakers_lock:
        return _breakers.setdefault(provider, CircuitBreaker())


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 3,
    base_delay: float = 0.1,
    max_delay: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; on ``GatewayTechnicalError`` wait (full jitter) and try again."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except GatewayTechnicalError:
            if attempt == attempts:
                raise
            sleep(random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1))))
    raise AssertionError("unreachable")
