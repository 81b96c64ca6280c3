"""Password guessing is slowed per client address, per address and account, and per account.

Every sign-in attempt (API token, login page, admin login) is counted in the shared cache
BEFORE its password is checked, atomically, in fixed windows (the window's number is part
of the key): the address's and account's count, the address's count across accounts, and
the account's count across all addresses (a higher ceiling). An attempt past any limit is
refused (429, Retry-After: the window's end) without checking the password; a success
clears its address's count for the account and gives back its place in the other two.
IPv6 addresses count by /64. An unreachable cache refuses sign-ins (``ThrottleUnavailable``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import unicodedata
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest

from core import clock
from core.errors import ApplicationError

logger = logging.getLogger(__name__)


class ThrottleUnavailable(ApplicationError):
    code = "auth.sign_in_unavailable"
    status_code = 503
    default_message = "Signing in is unavailable for a moment; try again shortly."


def client_ip(request: HttpRequest) -> str:
    """The caller's address: REMOTE_ADDR, or the one the last trusted proxy saw."""
    proxies = settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies and forwarded:
        addresses = [a.strip() for a in forwarded.split(",") if a.strip()]
        if addresses:
            return addresses[-min(proxies, len(addresses))]
    return request.META.get("REMOTE_ADDR", "")


def address_group(ip: str) -> str:
    """The unit an address is counted in: itself (IPv4), or its /64 network (IPv6)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def normalize_username(username: str) -> str:
    """The account a username names, as the sign-in forms and the email lookup read it."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


@dataclass
class Attempt:
    """A counted sign-in attempt: ``wait`` seconds to refuse it for, or None to hear it."""

    wait: int | None
    account_key: str = ""
    timeout: int = 0
    # (key, slot) of each counter this attempt took a place in, given back on success.
    taken: list[tuple[str, int]] = field(default_factory=list)


def _shared_cache():
    return caches["default"]


def _redis_add(backend: RedisCache, key: str, delta: int, timeout: int) -> int:
    """INCRBY and EXPIRE in one transaction: a counter never outlives its window."""
    redis_key = backend.make_and_validate_key(key)
    client = backend._cache.get_client(redis_key, write=True)
    with client.pipeline(transaction=True) as pipe:
        count, _ = pipe.incrby(redis_key, delta).expire(redis_key, timeout).execute()
    return count


def _take(backend, key: str, limit: int, timeout: int) -> int:
    """Count one attempt under ``key``, atomically; returns its place (1, 2, …)."""
    if isinstance(backend, RedisCache):
        return _redis_add(backend, key, 1, timeout)
    # Elsewhere (the database cache) incr is a read and a write and rewrites the row's
    # expiry: each attempt adds a numbered slot instead, and adding a taken slot fails.
    slots = [f"{key}:{n}" for n in range(1, limit + 2)]
    taken = backend.get_many(slots)
    for n, slot in enumerate(slots, 1):
        if slot not in taken and backend.add(slot, 1, timeout=timeout):
            return n
    return limit + 1


def _give_back(backend, key: str, slot: int, timeout: int) -> None:
    if isinstance(backend, RedisCache):
        _redis_add(backend, key, -1, timeout)
    else:
        backend.delete(f"{key}:{slot}")


def _forget(backend, key: str, limit: int) -> None:
    if isinstance(backend, RedisCache):
        backend.delete(key)
    else:
        backend.delete_many([f"{key}:{n}" for n in range(1, limit + 2)])


def login_attempt(*, ip: str, username: str) -> Attempt:
    """Count a sign-in attempt from ``ip`` for ``username`` before its password is checked."""
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = clock.now().timestamp()
    number = math.floor(now / window)
    wait = max(1, math.ceil((number + 1) * window - now))
    timeout = wait + 1  # a counter lives until its window ends
    account = hashlib.sha256(normalize_username(username).encode()).hexdigest()[:32]
    group = address_group(ip)
    account_key = f"login:{number}:account:{group}:{account}"
    # In this order, so that an address refused for the account spends none of the
    # account's places across addresses.
    counters = [
        (account_key, settings.LOGIN_FAILURES_PER_ACCOUNT),
        (f"login:{number}:address:{group}", settings.LOGIN_FAILURES_PER_ADDRESS),
        (f"login:{number}:all:{account}", settings.LOGIN_ATTEMPTS_PER_ACCOUNT_ALL_ADDRESSES),
    ]
    backend = _shared_cache()
    attempt = Attempt(wait=None, account_key=account_key, timeout=timeout)
    try:
        for key, limit in counters:
            slot = _take(backend, key, limit, timeout)
            if slot > limit:
                attempt.wait = wait
                return attempt
            attempt.taken.append((key, slot))
    except Exception as exc:
        logger.error("sign-in throttle: the shared cache is unreachable: %s", exc)
        raise ThrottleUnavailable() from exc
    return attempt


def login_succeeded(attempt: Attempt) -> None:
    """The owner got in: the address's count for the account starts again, and the
    attempt gives back its place in the address's and the account's counts."""
    backend = _shared_cache()
    try:
        for key, slot in attempt.taken[1:]:
            _give_back(backend, key, slot, attempt.timeout)
        _forget(backend, attempt.account_key, settings.LOGIN_FAILURES_PER_ACCOUNT)
    except Exception as exc:  # the sign-in stands; the counts expire with their window
        logger.warning("sign-in throttle: the shared cache is unreachable: %s", exc)


def minutes(seconds: int) -> int:
    return max(1, math.ceil(seconds / 60))
