"""The one clock. Code asks ``clock.now()`` and ``clock.business_date()``; tests move it.

``business_date`` is the calendar date in ``settings.BUSINESS_TIME_ZONE``: due dates and
business-day jobs are reckoned there, whatever the server's time zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

_offset = timedelta(0)


def now() -> datetime:
    return timezone.now() + _offset


def business_tz() -> ZoneInfo:
    return ZoneInfo(settings.BUSINESS_TIME_ZONE)


def business_date() -> date:
    return now().astimezone(business_tz()).date()


@contextmanager
def travel(delta: timedelta) -> Iterator[None]:
    """Move the clock by ``delta`` for the duration of the block (tests only)."""
    global _offset
    previous = _offset
    _offset = previous + delta
    try:
        yield
    finally:
        _offset = previous


@contextmanager
def travel_to(moment: datetime) -> Iterator[None]:
    """Run the block as if it were ``moment`` (an aware datetime)."""
    with travel(moment - timezone.now()):
        yield
