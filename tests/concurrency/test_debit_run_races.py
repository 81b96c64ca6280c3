"""The debit run against itself: concurrent runs and redelivered chunks on committed rows,
each thread with its own connection. The sandbox's charge log is the witness."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from django.db import connections, transaction

from bnpl.models import DebitRequestStatus, InstallmentStatus
from collections_ import debits, selectors
from collections_.models import CollectionsSettings, DebitAttempt, DebitRun, RunStatus
from core import clock
from ledger.models import JournalEntry
from tests.bnpl.factories import make_plan
from tests.collections.debit_helpers import (
    EagerCelery,
    charges_by_key,
    charges_by_reference,
    first_due,
    moment,
)
from tests.factories import ChannelFactory, make_customer

pytestmark = pytest.mark.django_db(transaction=True)

START = date(2026, 3, 2)
DUE = date(2026, 4, 2)


def due_plans(count: int):
    ChannelFactory(code="web")
    CollectionsSettings.objects.update_or_create(pk=1, defaults={"chunk_size": 4})
    with clock.travel_to(moment(START)):
        customers = [make_customer() for _ in range(3)]
        return [
            make_plan(customer=customers[i % 3], start_date=START, amount="120.00")
            for i in range(count)
        ]


def assert_each_charged_once(plans, sandbox) -> None:
    installments = [first_due(p) for p in plans]
    assert charges_by_reference(sandbox) == {f"bnpl.installment:{i.pk}": 1 for i in installments}
    assert all(count == 1 for count in charges_by_key(sandbox).values())
    assert DebitAttempt.objects.count() == len(plans)
    for installment in installments:
        installment.refresh_from_db()
        assert installment.status == InstallmentStatus.PAID
        assert installment.debit_request.status == DebitRequestStatus.SETTLED
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == len(plans)


def test_three_concurrent_runs_for_one_day_charge_each_installment_once(
    card_processor, sandbox, concurrently
):
    plans = due_plans(18)

    def run(i: int) -> int:
        return debits.debit_run_start(business_date=DUE).pk

    # Each run's chunks are worked on its commit, in its own thread.
    with clock.travel_to(moment(DUE)), EagerCelery():
        run_ids = concurrently(3, run)

    assert_each_charged_once(plans, sandbox)
    runs = DebitRun.objects.filter(pk__in=run_ids)
    assert {r.status for r in runs} == {RunStatus.FINISHED}
    assert all(r.chunks_done == r.chunks_total for r in runs)


def test_a_chunk_delivered_to_four_workers_at_once_charges_once(
    card_processor, sandbox, concurrently, django_capture_on_commit_callbacks
):
    plans = due_plans(8)
    with clock.travel_to(moment(DUE)), django_capture_on_commit_callbacks(execute=False):
        run = debits.debit_run_start(business_date=DUE)  # chunks not sent: worked below

    def work(i: int):
        return debits.debit_chunk_process(run_id=run.pk, chunk_no=i % run.chunks_total)

    with clock.travel_to(moment(DUE)):
        concurrently(4 * run.chunks_total, work)

    assert_each_charged_once(plans, sandbox)
    run.refresh_from_db()
    assert (run.chunks_done, run.chunks_total, run.status) == (2, 2, RunStatus.FINISHED)


@pytest.mark.postgres  # row locks; SQLite has one writer at a time
def test_recording_outcomes_waits_for_no_plan_a_servicing_call_holds(card_processor, sandbox):
    """Servicing locks plan → installments → debit requests; recording a chunk's outcomes
    locks its requests, then attempts, and reads (never locks) their plans and customers.
    So recording finishes while servicing holds the plan, and servicing then gets the
    request: no deadlock, whichever starts first."""
    from bnpl import servicing

    ChannelFactory(code="web")
    with clock.travel_to(moment(START)):
        customer = make_customer()
        plan = make_plan(customer=customer, start_date=START, payment_method="pm_decline")
    installment = first_due(plan)
    with clock.travel_to(moment(DUE)):
        (charge,) = debits._claim(
            request_ids=[installment.debit_request.pk],
            cutoff=selectors.run_cutoff(DUE),
            run_id=None,
            account=card_processor,
        )
        (outcome,) = debits._send([charge], card_processor)
    held, recorded = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def servicing_side() -> None:
        try:
            with transaction.atomic():
                locked = servicing._lock(plan.pk, customer_id=customer.pk)
                held.set()
                seen["recorded_while_plan_held"] = recorded.wait(20)
                servicing._locked_debits(locked.plan, [locked.installment(1)])
        except Exception as exc:  # a deadlock is detected and raised on one side
            seen["servicing"] = repr(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=servicing_side)
    thread.start()
    try:
        assert held.wait(20)
        with clock.travel_to(moment(DUE)):
            debits._record([(charge, outcome)])
        recorded.set()
    finally:
        recorded.set()
        thread.join(60)
    assert seen == {"recorded_while_plan_held": True}
    attempt = DebitAttempt.objects.get()
    assert (attempt.status, attempt.decline_code) == ("failed", "insufficient_funds")
