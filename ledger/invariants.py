"""Invariants of the objects whose money the ledger books, checked with the ledger.

The ledger sits low and knows no orders, debts or plans: each higher app registers a check
of its own objects at start-up (``AppConfig.ready``), so every import still points down.
``ledger.selectors.ledger_problems`` (after every test, and ``manage.py ledger_verify``)
runs them after its own checks.
"""

from __future__ import annotations

from collections.abc import Callable

# Takes the most problems to report; returns one readable line per problem, [] when clean.
InvariantCheck = Callable[[int], list[str]]

_checks: dict[str, InvariantCheck] = {}


def invariant_register(name: str, check: InvariantCheck) -> None:
    """Add (or, under the same name, replace) a check that ``ledger_problems`` runs."""
    _checks[name] = check


def invariant_problems(limit: int) -> list[str]:
    """Every registered check's problems, in registration order, at most ``limit``."""
    problems: list[str] = []
    for name, check in _checks.items():
        if len(problems) >= limit:
            break
        problems += [f"{name}: {problem}" for problem in check(limit - len(problems))]
    return problems[:limit]
