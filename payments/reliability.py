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
    The half-open trial slot is keyed by the opening it tries, so a trial that fails (and
    re-opens the breaker before giving its slot back) never lets a second trial of the
    same opening in. With the database cache, two processes may still both take a slot
    whose lease expired (a trial that hung for ``trial_lease_seconds``): ``add`` over an
    expired row is a read and a write there.
    An unreachable cache leaves the breaker closed: calls go on, unguarded, with a
    warning logged at most once a minute per breaker.
    """

    # A trial that never reports back (its process died) frees the slot after this long.
    trial_lease_seconds = 120
    # Failures in a row are forgotten after this long without another.
    failure_memory_seconds = 3600
    warning_interval_seconds = 60.0

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
        self._warned_at: float | None = None

    def _key(self, part: str) -> str:
        return f"payments:breaker:{self.name}:{part}"

    def _cache_unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= self.warning_interval_seconds:
            self._warned_at = now
            logger.warning(
                "circuit breaker %s: the shared cache is unreachable (%s); calls go on unguarded",
                self.name,
                exc,
            )

    def _opened_at(self) -> float | None:
        try:
            return cache.get(self._key("opened_at"))
        except Exception as exc:
            self._cache_unreachable(exc)
            return None

    @property
    def state(self) -> str:
        opened_at = self._opened_at()
        if opened_at is None:
            return "closed"
        if self._clock() - opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def _before(self) -> str | None:
        """Refuse the call while open; returns the trial slot's key if this call is the
        half-open trial."""
        opened_at = self._opened_at()
        if opened_at is None:
            return None
        if self._clock() - opened_at < self.reset_seconds:
            raise CircuitOpen()
        trial = self._key(f"trial:{opened_at!r}")
        try:
            taken = cache.add(trial, True, timeout=self.trial_lease_seconds)
        except Exception as exc:
            self._cache_unreachable(exc)
            return None
        if not taken:
            raise CircuitOpen()  # another process runs the trial
        return trial

    def _after(self, ok: bool, *, trial: str | None = None) -> None:
        try:
            if ok:
                keys = [self._key("failures"), self._key("opened_at")]
                if cache.get_many(keys):  # a read on the hot path; a write only to close
                    cache.delete_many(keys)
            else:
                failures = self._count_failure()
                if trial or self._opened_at() is not None or failures >= self.failure_threshold:
                    # Kept until a trial closes the breaker.
                    cache.set(self._key("opened_at"), self._clock(), timeout=None)
            if trial:  # only once re-opened: the slot of this opening is never free again
                cache.delete(trial)
        except Exception as exc:
            self._cache_unreachable(exc)

    def _count_failure(self) -> int:
        key = self._key("failures")
        cache.add(key, 0, timeout=self.failure_memory_seconds)
        try:
            return cache.incr(key)
        except ValueError:  # deleted by a success in between
            cache.set(key, 1, timeout=self.failure_memory_seconds)
            return 1

    def reset(self) -> None:
        """Close the breaker (the provider is known to be back)."""
        cache.delete_many([self._key(p) for p in ("failures", "opened_at")])

    def call(self, fn: Callable[[], T]) -> T:
        trial = self._before()
        try:
            result = fn()
        except GatewayTechnicalError:
            self._after(ok=False, trial=trial)
            raise
        except BaseException:
            if trial:  # neither a success nor a technical failure: let another trial run
                try:
                    cache.delete(trial)
                except Exception as exc:
                    self._cache_unreachable(exc)
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
