"""The one clock. Code asks ``clock.now()`` and ``clock.business_date()``; tests move it.

``business_date`` is the calendar date in ``settings.BUSINESS_TIME_ZONE``: due dates and
business-day jobs are reckoned there, whatever the server's time zone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

_offset = timedelta(0)
# The travels in force, oldest first, each the offset it set. Guarded by ``_lock``: tests
# travel from several threads at once (one per connection in the concurrency tests).
_travels: list[list[timedelta]] = []
_lock = threading.Lock()


def now() -> datetime:
    return timezone.now() + _offset


def business_tz() -> ZoneInfo:
    return ZoneInfo(settings.BUSINESS_TIME_ZONE)


def business_date() -> date:
    return now().astimezone(business_tz()).date()


def business_time(moment: datetime) -> datetime:
    """``moment`` (aware) as a person reads it: in the business time zone."""
    return moment.astimezone(business_tz())


@contextmanager
def _offset_by(offset: Callable[[timedelta], timedelta]) -> Iterator[None]:
    """Set the clock's offset (``offset`` of the current one) for the duration of the block.

    Blocks may overlap across threads and end in any order: the clock stands at the offset of
    the latest block still open, and at none once every block is closed. (Restoring "the
    offset found on entry" instead would leave a thread's offset behind for good whenever two
    blocks end in the order they began.)
    """
    global _offset
    with _lock:
        entry = [offset(_offset)]
        _travels.append(entry)
        _offset = entry[0]
    try:
        yield
    finally:
        with _lock:
            for i in range(len(_travels) - 1, -1, -1):
                if _travels[i] is entry:
                    del _travels[i]
                    break
            _offset = _travels[-1][0] if _travels else timedelta(0)


def travel(delta: timedelta) -> AbstractContextManager[None]:
    """Move the clock by ``delta`` (from where it stands) for the duration of the block
    (tests only)."""
    return _offset_by(lambda current: current + delta)


def travel_to(moment: datetime) -> AbstractContextManager[None]:
    """Run the block as if it were ``moment`` (an aware datetime), wherever the clock stood."""
    return _offset_by(lambda current: moment - timezone.now())


def is_moved() -> bool:
    """Whether any ``travel`` block is still open (tests check that none is left behind)."""
    with _lock:
        return bool(_travels)
