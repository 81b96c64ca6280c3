"""The test clock: travel blocks that overlap across threads put it back when they end."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from core import clock

MOMENT = datetime(2026, 3, 15, 6, tzinfo=UTC)


def test_overlapping_travels_in_two_threads_put_the_clock_back_in_any_order():
    """Thread A enters, thread B enters, A leaves, B leaves: the order concurrency tests
    produce when every thread travels to the same moment."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, datetime] = {}

    def a() -> None:
        with clock.travel_to(MOMENT):
            a_in.set()
            b_in.wait(10)
            seen["a"] = clock.now()
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with clock.travel_to(MOMENT):
            b_in.set()
            a_out.wait(10)
            seen["b"] = clock.now()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert abs(seen["a"] - MOMENT) < timedelta(minutes=1)
    assert abs(seen["b"] - MOMENT) < timedelta(minutes=1)
    assert not clock.is_moved()
    assert abs(clock.now() - timezone.now()) < timedelta(minutes=1)


def test_travel_to_inside_a_travel_lands_on_its_moment():
    with clock.travel(timedelta(days=-30)), clock.travel_to(MOMENT):
        assert abs(clock.now() - MOMENT) < timedelta(minutes=1)
    with clock.travel_to(MOMENT), clock.travel(timedelta(hours=1)):
        assert abs(clock.now() - (MOMENT + timedelta(hours=1))) < timedelta(minutes=1)
    assert not clock.is_moved()
