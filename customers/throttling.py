"""Password guessing is slowed per client address, and per address and account.

Every failed sign-in (API token, login page, admin login) counts in two fixed windows
kept in the shared cache: the address's, across accounts, and the address's for that
account. Past either limit the address (for that account) is refused until its window
ends; a success clears the address's count for that account. A guesser elsewhere never
locks an account's owner out.
"""

from __future__ import annotations

import hashlib
import math

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from core import clock


def client_ip(request: HttpRequest) -> str:
    """The caller's address: REMOTE_ADDR, or the one the last trusted proxy saw."""
    proxies = settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies and forwarded:
        addresses = [a.strip() for a in forwarded.split(",") if a.strip()]
        if addresses:
            return addresses[-min(proxies, len(addresses))]
    return request.META.get("REMOTE_ADDR", "")


def _keys(ip: str, username: str) -> list[tuple[str, int]]:
    """(cache key, failures allowed in a window) of the address, and of address + account."""
    account = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [
        (f"login:ip:{ip}", settings.LOGIN_FAILURES_PER_ADDRESS),
        (f"login:account:{ip}:{account}", settings.LOGIN_FAILURES_PER_ACCOUNT),
    ]


def login_wait(*, ip: str, username: str) -> int | None:
    """Seconds until a sign-in from ``ip`` for ``username`` is heard again; None: now."""
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = clock.now().timestamp()
    waits = []
    for key, limit in _keys(ip, username):
        counted = cache.get_many([f"{key}:start", f"{key}:count"])
        start, count = counted.get(f"{key}:start"), counted.get(f"{key}:count")
        if start is None or count is None or count < limit or now - start >= window:
            continue
        waits.append(max(1, math.ceil(start + window - now)))
    return max(waits) if waits else None


def login_failed(*, ip: str, username: str) -> None:
    """Count a failed sign-in in both windows (a window starts at its first failure)."""
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = clock.now().timestamp()
    for key, _ in _keys(ip, username):
        start = cache.get(f"{key}:start")
        if start is None or now - start >= window:
            cache.set_many({f"{key}:start": now, f"{key}:count": 0}, timeout=window)
        cache.add(f"{key}:count", 0, timeout=window)
        try:
            cache.incr(f"{key}:count")
        except ValueError:  # expired in between: this failure opens a new window
            cache.set_many({f"{key}:start": now, f"{key}:count": 1}, timeout=window)


def login_succeeded(*, ip: str, username: str) -> None:
    """The owner got in: their address's count for the account starts again."""
    _, (key, _) = _keys(ip, username)
    cache.delete_many([f"{key}:start", f"{key}:count"])


def minutes(seconds: int) -> int:
    return max(1, math.ceil(seconds / 60))
