"""Shared pieces of the debit run tests: running a day, reading the sandbox's charge log."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta

import requests
from celery import current_app

from bnpl.models import Installment
from collections_.debits import debit_run_start
from collections_.models import DebitRun
from core import clock


def moment(day: date, hour: int = 6) -> datetime:
    """``hour`` o'clock on ``day`` in the business time zone."""
    return datetime.combine(day, time(hour), tzinfo=clock.business_tz())


def sandbox_charges(sandbox: str) -> list[dict]:
    """The processor's own record of every charge it made: the witness."""
    return requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]


def charges_by_reference(sandbox: str) -> Counter:
    return Counter(c["reference"] for c in sandbox_charges(sandbox) if c["status"] == "captured")


def charges_by_key(sandbox: str) -> Counter:
    return Counter(c["idempotency_key"] for c in sandbox_charges(sandbox))


def first_due(plan) -> Installment:
    return plan.installments.order_by("number").first()


class EagerCelery:
    def __enter__(self) -> None:
        self.previous = current_app.conf.task_always_eager
        current_app.conf.task_always_eager = True

    def __exit__(self, *exc) -> None:
        current_app.conf.task_always_eager = self.previous


def run_day(day: date, capture) -> DebitRun:
    """The debit run for ``day`` at 06:00 that day, its chunks worked on commit (eagerly)."""
    with clock.travel_to(moment(day)), EagerCelery(), capture(execute=True):
        run = debit_run_start(business_date=day)
    run.refresh_from_db()
    return run


def later(day: date, days: int) -> date:
    return day + timedelta(days=days)
