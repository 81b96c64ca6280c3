"""Retries for technical failures only, and a circuit breaker per provider.

Declines are answers and are never retried; a timeout is an unknown outcome and is
never retried blindly (the reconciler asks the provider). Only ``GatewayTechnicalError``
(5xx, connection refused) is retried, with exponential backoff and full jitter, and
with the same idempotency key, so a retry can never charge twice.

The breaker is per provider and shared by every web and worker process (its state is in
the shared cache): after ``failure_threshold`` technical failures in a row it opens and
refuses calls at once for ``reset_seconds``; then one trial call, in whichever process
comes first, decides whether it closes again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache

from core.errors import ApplicationError
from payments.gateway import GatewayTechnicalError

T = TypeVar("T")
logger = logging.getLogger(__name__)


class CircuitOpen(ApplicationError):
    code = "payments.provider_unavailable"
    status_code = 503
    default_message = "The payment provider is failing; try again shortly."


class CircuitBreaker:
    """A provider's breaker; its counters live in the shared cache under ``name``.

    Counts go up with the cache's atomic ``incr`` (Redis); the database cache of the
    embedded default increments by read-and-write, which may undercount a burst by one.
    An unreachable cache leaves the breaker closed: calls go on, unguarded.
    """

    # A trial that never reports back (its process died) frees the slot after this long.
    trial_lease_seconds = 120

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,  # wall clock: shared by processes
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock

    def _key(self, part: str) -> str:
        return f"payments:breaker:{self.name}:{part}"

    def _opened_at(self) -> float | None:
        try:
            return cache.get(self._key("opened_at"))
        except Exception:
            logger.warning("circuit breaker %s: the shared cache is unreachable", self.name)
            return None

    @property
    def state(self) -> str:
        opened_at = self._opened_at()
        if opened_at is None:
            return "closed"
        if self._clock() - opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def _before(self) -> bool:
        """Refuse the call while open; returns whether this call is the half-open trial."""
        opened_at = self._opened_at()
        if opened_at is None:
            return False
        if self._clock() - opened_at < self.reset_seconds:
            raise CircuitOpen()
        if not cache.add(self._key("trial"), True, timeout=self.trial_lease_seconds):
            raise CircuitOpen()  # another process runs the trial
        return True

    def _after(self, ok: bool, *, trial: bool = False) -> None:
        try:
            if trial:
                cache.delete(self._key("trial"))
            if ok:
                keys = [self._key("failures"), self._key("opened_at")]
                if cache.get_many(keys):  # a read on the hot path; a write only to close
                    cache.delete_many(keys)
                return
            failures = self._count_failure()
            if self._opened_at() is not None or failures >= self.failure_threshold:
                cache.set(self._key("opened_at"), self._clock(), timeout=None)
        except Exception:
            logger.warning("circuit breaker %s: the shared cache is unreachable", self.name)

    def _count_failure(self) -> int:
        key = self._key("failures")
        cache.add(key, 0, timeout=None)
        try:
            return cache.incr(key)
        except ValueError:  # deleted by a success in between
            cache.set(key, 1, timeout=None)
            return 1

    def reset(self) -> None:
        """Close the breaker (the provider is known to be back)."""
        cache.delete_many([self._key(p) for p in ("failures", "opened_at", "trial")])

    def call(self, fn: Callable[[], T]) -> T:
        trial = self._before()
        try:
            result = fn()
        except GatewayTechnicalError:
            self._after(ok=False, trial=trial)
            raise
        except BaseException:
            if trial:  # neither a success nor a technical failure: let another trial run
                cache.delete(self._key("trial"))
            raise
        self._after(ok=True, trial=trial)
        return result


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(provider: str) -> CircuitBreaker:
    with _breakers_lock:
        return _breakers.setdefault(provider, CircuitBreaker(provider))


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
