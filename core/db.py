"""Small database helpers shared by every app."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError, models


def violated_constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint a PostgreSQL IntegrityError broke, if it says."""
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def prefetch_rows(instance: models.Model, relation: str, rows: Sequence[models.Model]) -> None:
    """Make ``instance.<relation>.all()`` return ``rows`` without a query.

    For a service that has just written the rows of a reverse foreign key and hands the
    parent to a serializer: it stores what ``prefetch_related`` would have stored.
    """
    manager = getattr(instance, relation)
    queryset = manager.all()
    queryset._result_cache = list(rows)
    queryset._prefetch_done = True
    cache = instance.__dict__.setdefault("_prefetched_objects_cache", {})
    cache[manager.field.remote_field.cache_name] = queryset
