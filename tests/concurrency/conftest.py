from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections


def run_concurrently(
    count: int, work: Callable[[int], Any], *, max_connections: int | None = None
) -> list[Any]:
    """Run ``work(i)`` for i in range(count) in ``count`` threads released together.

    Each thread has its own database connection, closed when it finishes. With
    ``max_connections``, at most that many requests hold a connection at once.
    """
    barrier = threading.Barrier(count)
    gate = threading.BoundedSemaphore(max_connections or count)

    def run(i: int) -> Any:
        barrier.wait()
        with gate:
            try:
                return work(i)
            finally:
                connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


@pytest.fixture
def concurrently():
    return run_concurrently
