"""Extra readiness checks that higher apps register at start-up (core imports none of them).

A check returns a JSON-able dict with a ``status``; ``gating`` checks make ``/readyz``
answer 503 when not ``ok``; the others are shown for information (a payment provider
being down degrades the product without making this process unready).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], dict[str, Any]]
    gating: bool


_checks: dict[str, Check] = {}


def register(name: str, run: Callable[[], dict[str, Any]], *, gating: bool) -> None:
    _checks[name] = Check(name, run, gating)


def registered() -> list[Check]:
    return list(_checks.values())
