"""The daily debit run against the payment sandbox: exactly once, the failure classes, the
retry calendar, the dispute pause, a new payment method, dead letters and the admin."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from celery import current_app
from celery.result import AsyncResult
from django.db import connection, transaction
from django.urls import reverse

from bnpl.debit_controls import plan_debits_hold
from bnpl.models import (
    DebitRequest,
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
    Plan,
    PlanStatus,
)
from collections_ import debits, selectors
from collections_.models import (
    AttemptStatus,
    CollectionsSettings,
    DebitAttempt,
    DebitRun,
    FailureClass,
    RunStatus,
)
from collections_.tasks import debit_chunk, retry_due
from core import clock
from core.models import DeadLetter, OutboundEmail
from ledger.models import JournalEntry
from payments import reliability
from tests.bnpl.factories import make_plan
from tests.collections.debit_helpers import (
    EagerCelery,
    charges_by_key,
    charges_by_reference,
    first_due,
    moment,
    run_day,
    sandbox_charges,
)
from tests.factories import make_customer, saved_card

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("customer_cards")]

START = date(2026, 3, 2)
DUE = date(2026, 4, 2)  # the first installment of a monthly plan started on START


def plans(customer, count=1, **kwargs):
    with clock.travel_to(moment(START)):
        return [make_plan(customer=customer, start_date=START, **kwargs) for _ in range(count)]


def small_chunks(size: int) -> None:
    CollectionsSettings.objects.update_or_create(pk=1, defaults={"chunk_size": size})


def ref(installment) -> str:
    return f"bnpl.installment:{installment.pk}"


# --- exactly once ---------------------------------------------------------------------


def test_three_runs_for_a_day_charge_each_due_installment_once(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    small_chunks(2)
    other = make_customer()
    saved_card(other, "pm_other_visa")
    due = plans(customer, 3, amount="300.00") + plans(
        other, 2, amount="90.00", payment_method="pm_other_visa"
    )

    runs = [run_day(DUE, django_capture_on_commit_callbacks) for _ in range(3)]

    assert [r.due_count for r in runs] == [5, 0, 0]
    assert (runs[0].chunks_total, runs[0].chunks_done, runs[0].status) == (
        3,
        3,
        RunStatus.FINISHED,
    )
    witness = charges_by_reference(sandbox)
    firsts = [first_due(p) for p in due]
    assert witness == {ref(i): 1 for i in firsts}
    assert DebitAttempt.objects.count() == 5
    for plan, installment in zip(due, firsts, strict=True):
        installment.refresh_from_db()
        assert installment.status == InstallmentStatus.PAID
        assert installment.debit_request.status == DebitRequestStatus.SETTLED
        # The next installments wait for their own dates.
        assert plan.installments.filter(status=InstallmentStatus.SCHEDULED).count() == 2
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == 5
    totals = selectors.run_totals(run_id=runs[0].pk)
    assert (totals.paid.count, totals.failed.count, totals.unknown.count) == (5, 0, 0)
    assert totals.paid.amount == 3 * 10_000 + 2 * 3_000


def test_the_last_installment_completes_the_plan(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    (plan,) = plans(customer, amount="30.00")
    for n in range(3):
        run_day(date(2026, 4 + n, 2), django_capture_on_commit_callbacks)
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert sum(charges_by_reference(sandbox).values()) == 3


def test_a_run_only_charges_what_is_due_by_the_end_of_its_day(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    plans(customer)
    run = run_day(DUE - timedelta(days=1), django_capture_on_commit_callbacks)
    assert run.due_count == 0
    assert (run.status, run.finished_at is not None) == (RunStatus.FINISHED, True)
    assert charges_by_reference(sandbox) == {}


def test_claiming_a_chunk_costs_the_same_queries_for_one_request_or_many(
    customer, card_processor, django_assert_num_queries
):
    one = plans(customer)
    many = plans(customer, 6)
    cutoff = selectors.run_cutoff(DUE)
    settings = selectors.collections_settings()
    assert settings.pk == 1
    counts = []
    for group in (one, many):
        ids = [first_due(p).debit_request.pk for p in group]
        with clock.travel_to(moment(DUE)), django_assert_num_queries(11) as captured:
            charges = debits._claim(
                request_ids=ids, cutoff=cutoff, run_id=None, account=card_processor
            )
        counts.append(len(captured.captured_queries))
        assert len(charges) == len(group)
    assert counts[0] == counts[1]
    assert DebitAttempt.objects.filter(attempt_no=1, status=AttemptStatus.PENDING).count() == 7


def test_charging_a_chunk_costs_the_same_queries_for_two_requests_or_twelve(
    customer, card_processor, sandbox, django_assert_num_queries
):
    """The whole chunk is set-based: claim and open, one batch sent, answers and captures
    recorded (payment facts, settlement, ledger), outcomes recorded. Every plan here pays its
    last installment, so each is completed too."""
    first = plans(customer, 1, installment_count=1)  # the income accounts' first use
    few = plans(customer, 2, installment_count=1)
    many = plans(customer, 12, installment_count=1)
    cutoff = selectors.run_cutoff(DUE)
    with clock.travel_to(moment(DUE)):
        debits.debit_requests_charge(
            request_ids=[first_due(first[0]).debit_request.pk], cutoff=cutoff
        )
    for group in (few, many):
        ids = [first_due(p).debit_request.pk for p in group]
        with clock.travel_to(moment(DUE)), django_assert_num_queries(CHUNK_QUERIES):
            counts = debits.debit_requests_charge(request_ids=ids, cutoff=cutoff)
        assert counts == {AttemptStatus.SUCCEEDED: len(group)}
    assert Plan.objects.filter(status=PlanStatus.COMPLETED).count() == 15
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == 15


# 29 statements and three savepoints (two queries each); SQLite runs no deferred checks.
CHUNK_QUERIES = 35 if connection.vendor == "postgresql" else 34


def _updates(table: str) -> tuple[int, int]:
    """Rows of ``table`` this database transaction updated: in all, and in place (HOT:
    the new version on the old one's page and no indexed column changed, so no index
    entry written)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(%s::regclass),"
            " pg_stat_get_xact_tuples_hot_updated(%s::regclass)",
            [table, table],
        )
        return cursor.fetchone()


@pytest.mark.postgres  # PostgreSQL's own statistics of in-place (HOT) updates
def test_a_chunk_completes_plans_and_moves_balances_without_new_index_entries(
    customer, card_processor, sandbox
):
    """Every debit completes a plan when it pays the last installment and moves two
    balances: none of those columns is indexed, so each update is made in place."""
    group = plans(customer, 4, installment_count=1)
    ids = [first_due(p).debit_request.pk for p in group]
    before = {table: _updates(table) for table in ("bnpl_plan", "ledger_account")}
    with clock.travel_to(moment(DUE)):
        counts = debits.debit_requests_charge(request_ids=ids, cutoff=selectors.run_cutoff(DUE))
    assert counts == {AttemptStatus.SUCCEEDED: 4}
    plans_updated, plans_in_place = (
        a - b for a, b in zip(_updates("bnpl_plan"), before["bnpl_plan"], strict=True)
    )
    accounts_updated, accounts_in_place = (
        a - b for a, b in zip(_updates("ledger_account"), before["ledger_account"], strict=True)
    )
    assert plans_updated == plans_in_place == 4
    assert accounts_updated == accounts_in_place > 0


# --- failure classes ------------------------------------------------------------------


def test_soft_declines_retry_on_the_calendar_then_delinquency_takes_over(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    (plan,) = plans(customer, payment_method="pm_decline")
    installment = first_due(plan)
    request = installment.debit_request

    run_day(DUE, django_capture_on_commit_callbacks)
    # A settings change after the first attempt leaves this request's calendar alone.
    CollectionsSettings.objects.filter(pk=1).update(soft_retry_days=[10])
    run_day(DUE, django_capture_on_commit_callbacks)  # the same day again: nothing new
    request.refresh_from_db()
    first = DebitAttempt.objects.get(request=request)
    assert (first.status, first.failure_class, first.decline_code) == (
        AttemptStatus.FAILED,
        FailureClass.SOFT,
        "insufficient_funds",
    )
    assert first.retry_schedule["soft_retry_days"] == [1, 3, 7]
    assert request.next_attempt_at == moment(DUE + timedelta(days=1), 0)

    calendar = []
    for day in (DUE + timedelta(days=n) for n in range(1, 8)):
        run_day(day, django_capture_on_commit_callbacks)
        request.refresh_from_db()
        calendar.append((day, request.attempts_made, request.status, request.next_attempt_at))

    def d(n: int) -> date:
        return DUE + timedelta(days=n)

    scheduled, exhausted = DebitRequestStatus.SCHEDULED, DebitRequestStatus.EXHAUSTED
    assert calendar == [
        (d(1), 2, scheduled, moment(d(3), 0)),
        (d(2), 2, scheduled, moment(d(3), 0)),  # days without a retry charge nothing
        (d(3), 3, scheduled, moment(d(7), 0)),
        (d(4), 3, scheduled, moment(d(7), 0)),
        (d(5), 3, scheduled, moment(d(7), 0)),
        (d(6), 3, scheduled, moment(d(7), 0)),
        (d(7), 4, exhausted, None),
    ]
    attempts = list(
        DebitAttempt.objects.filter(request=request)
        .order_by("attempt_no")
        .values_list("attempt_no", "idempotency_key", "retry_schedule")
    )
    assert [a[0] for a in attempts] == [1, 2, 3, 4]
    assert {a[2]["soft_retry_days"][0] for a in attempts} == {1}
    assert charges_by_key(sandbox) == {key: 1 for _, key, _ in attempts}
    run_day(DUE + timedelta(days=14), django_capture_on_commit_callbacks)
    assert DebitAttempt.objects.filter(request=request).count() == 4
    installment.refresh_from_db()
    assert installment.status != InstallmentStatus.PAID


def test_a_hard_decline_asks_the_customer_for_a_new_card_once_and_never_retries(
    customer, customer_api, card_processor, sandbox, django_capture_on_commit_callbacks
):
    (plan,) = plans(customer, payment_method="pm_lost")
    request = first_due(plan).debit_request

    run_day(DUE, django_capture_on_commit_callbacks)
    run_day(DUE + timedelta(days=1), django_capture_on_commit_callbacks)

    request.refresh_from_db()
    attempt = DebitAttempt.objects.get(request=request)
    assert (attempt.failure_class, attempt.decline_code, attempt.next_retry_at) == (
        FailureClass.HARD,
        "card_lost",
        None,
    )
    assert (request.status, request.next_attempt_at) == (DebitRequestStatus.ACTION_REQUIRED, None)
    email = OutboundEmail.objects.get()
    assert email.to == customer.user.email
    assert f"/api/v1/bnpl/plans/{plan.pk}/payment-method" in email.body_text
    assert "href=" in email.body_html
    # Queuing the same event again sends nothing new.
    with EagerCelery():
        debits.attempts_record_outcomes(
            outcomes={
                attempt.pk: debits.AttemptOutcome(
                    AttemptStatus.FAILED, FailureClass.HARD, "card_lost"
                )
            },
            attempt_ids=[attempt.pk],
        )
    assert OutboundEmail.objects.count() == 1

    with clock.travel_to(moment(DUE + timedelta(days=1), 12)):
        response = customer_api.post(
            f"/api/v1/bnpl/plans/{plan.pk}/payment-method",
            {"payment_method": "pm_card_visa"},
            format="json",
        )
    assert response.status_code == 200, response.content
    assert response.json()["debits_waiting_for_a_new_method"] == 0
    request.refresh_from_db()
    assert (request.status, request.payment_method) == (
        DebitRequestStatus.SCHEDULED,
        "pm_card_visa",
    )
    run_day(DUE + timedelta(days=2), django_capture_on_commit_callbacks)
    request.refresh_from_db()
    assert request.status == DebitRequestStatus.SETTLED
    assert charges_by_reference(sandbox) == {ref(request.installment): 1}


def test_a_plan_left_on_another_customers_card_is_never_charged_and_waits_for_a_card(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    """A plan from before cards were bound to customers may name another customer's token:
    the run charges nothing, the request waits for a new card and the customer is told."""
    saved_card(make_customer(), "pm_theirs")
    (plan,) = plans(customer, amount="300.00")
    Plan.objects.filter(pk=plan.pk).update(payment_method="pm_theirs")
    plan.debit_requests.update(payment_method="pm_theirs")

    for day in (DUE, DUE + timedelta(days=1)):
        run_day(day, django_capture_on_commit_callbacks)

    assert sandbox_charges(sandbox) == []
    request = first_due(plan).debit_request
    assert (request.status, request.next_attempt_at) == (DebitRequestStatus.ACTION_REQUIRED, None)
    assert not DebitAttempt.objects.exists()
    [email] = OutboundEmail.objects.filter(template="collections/payment_method_required")
    assert email.to == customer.user.email
    assert "not one of your saved cards" in email.body_text


def test_payment_method_update_is_scoped_to_the_customer_and_validated(
    customer, customer_api, card_processor, unchanged_db
):
    theirs_card = saved_card(make_customer(), "pm_their_card")
    (theirs,) = plans(theirs_card.customer, payment_method="pm_their_card")
    (mine,) = plans(customer)
    check = unchanged_db()
    url = "/api/v1/bnpl/plans/{}/payment-method"
    other = customer_api.post(url.format(theirs.pk), {"payment_method": "pm_x"}, format="json")
    assert (other.status_code, other.json()["error"]["code"]) == (404, "bnpl.plan_not_found")
    bad = customer_api.post(url.format(mine.pk), {"payment_method": "4111 1111"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "bnpl.invalid_payment_method"
    assert "payment_method" in bad.json()["error"]["fields"]
    missing = customer_api.post(url.format(mine.pk), {}, format="json")
    assert missing.status_code == 400
    check()


def test_a_timeout_is_reconciled_by_key_and_never_charged_twice(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    (plan,) = plans(customer, payment_method="pm_timeout")
    installment = first_due(plan)

    run_day(DUE, django_capture_on_commit_callbacks)
    attempt = DebitAttempt.objects.get()
    assert (attempt.status, attempt.failure_class) == (
        AttemptStatus.UNKNOWN,
        FailureClass.TECHNICAL,
    )
    wait = attempt.next_retry_at - attempt.created_at
    assert timedelta(minutes=5) <= wait < timedelta(minutes=6)
    run_day(DUE, django_capture_on_commit_callbacks)  # in flight: not due again
    installment.refresh_from_db()
    assert installment.status == InstallmentStatus.SCHEDULED
    assert DebitAttempt.objects.count() == 1

    with clock.travel_to(moment(DUE) + timedelta(minutes=6)), EagerCelery():
        retry_due.apply()
    attempt.refresh_from_db()
    installment.refresh_from_db()
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert attempt.payment_transaction_id is not None
    assert installment.status == InstallmentStatus.PAID
    assert charges_by_key(sandbox) == {attempt.idempotency_key: 1}
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == 1


def test_a_5xx_is_retried_with_the_same_key(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    (plan,) = plans(customer, payment_method="pm_error_once")
    run_day(DUE, django_capture_on_commit_callbacks)
    attempt = DebitAttempt.objects.get()
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert charges_by_key(sandbox) == {attempt.idempotency_key: 1}
    assert first_due(plan).status == InstallmentStatus.PAID


def test_an_unreachable_provider_is_asked_again_then_retried_in_minutes_with_a_new_key(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    (plan,) = plans(customer)
    card_processor.base_url = "http://127.0.0.1:9/card"  # nothing listens: never sent
    card_processor.save(update_fields=["base_url"])
    run_day(DUE, django_capture_on_commit_callbacks)
    first = DebitAttempt.objects.get()
    assert (first.status, first.failure_class, first.decline_code) == (
        AttemptStatus.UNKNOWN,
        FailureClass.TECHNICAL,
        "provider_error",
    )
    card_processor.base_url = f"{sandbox}/card"
    card_processor.save(update_fields=["base_url"])
    reliability.breaker_for("card").reset()  # the breaker's pause is over

    # +6 min: the provider says it never saw the key, so a new attempt is safe; it is
    # scheduled at the next technical step.
    with clock.travel_to(moment(DUE) + timedelta(minutes=6)), EagerCelery():
        retry_due.apply()
    first.refresh_from_db()
    assert (first.status, first.decline_code) == (AttemptStatus.FAILED, "not_found")
    assert first.next_retry_at is not None
    assert DebitAttempt.objects.count() == 1
    with clock.travel_to(first.next_retry_at + timedelta(seconds=1)), EagerCelery():
        retry_due.apply()
    second = DebitAttempt.objects.get(attempt_no=2)
    assert second.status == AttemptStatus.SUCCEEDED
    assert charges_by_key(sandbox) == {second.idempotency_key: 1}
    assert first_due(plan).status == InstallmentStatus.PAID


# --- pause, crash recovery, dead letters ----------------------------------------------


def test_debits_wait_while_a_dispute_is_open(
    customer, admin_user, card_processor, sandbox, django_capture_on_commit_callbacks
):
    """The pause as bnpl keeps it; oms drives it from the order's open disputes
    (tests/oms/test_disputes.py, tests/flows/test_dispute_pause.py)."""
    (plan,) = plans(customer)
    with transaction.atomic():
        plan_debits_hold(plan_id=plan.pk, reasons=["Item not received"], actor=admin_user)
    run = run_day(DUE, django_capture_on_commit_callbacks)
    assert run.due_count == 0
    assert charges_by_reference(sandbox) == {}
    with transaction.atomic():
        plan_debits_hold(plan_id=plan.pk, reasons=[], actor=admin_user)
    run = run_day(DUE + timedelta(days=1), django_capture_on_commit_callbacks)
    assert run.due_count == 1
    assert first_due(plan).status == InstallmentStatus.PAID


def test_a_pending_attempt_left_by_a_crash_is_resolved_by_key_not_resent(
    customer, card_processor, sandbox
):
    (plan,) = plans(customer)
    request = first_due(plan).debit_request
    with clock.travel_to(moment(DUE)):
        # The worker died after claiming and sending, before recording the outcome.
        cutoff = selectors.run_cutoff(DUE)
        (charge,) = debits._claim(
            request_ids=[request.pk], cutoff=cutoff, run_id=None, account=card_processor
        )
        debits._send([charge], card_processor)
        again = debits._claim(
            request_ids=[request.pk], cutoff=cutoff, run_id=None, account=card_processor
        )
        assert again == []  # in flight: not claimed twice
        young = debits.debit_attempts_reconcile()
        assert young == {}
    with clock.travel_to(moment(DUE) + timedelta(minutes=10)):
        assert debits.debit_attempts_reconcile() == {AttemptStatus.SUCCEEDED: 1}
    attempt = DebitAttempt.objects.get()
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert charges_by_key(sandbox) == {attempt.idempotency_key: 1}


def test_a_chunk_that_fails_for_good_is_a_dead_letter_and_replays(
    customer, card_processor, sandbox, monkeypatch, django_capture_on_commit_callbacks
):
    plans(customer, 2)
    card_processor.enabled = False
    card_processor.save(update_fields=["enabled"])
    run = run_day(DUE, django_capture_on_commit_callbacks)
    assert (run.status, run.chunks_done) == (RunStatus.RUNNING, 0)
    letter = DeadLetter.objects.get()
    assert letter.task_name == "collections.debit_chunk"
    assert letter.args == [run.pk, 0]
    assert "No card processor is enabled" in letter.exception
    assert DebitAttempt.objects.count() == 0  # nothing was claimed, nothing in flight

    card_processor.enabled = True
    card_processor.save(update_fields=["enabled"])
    sent = []
    monkeypatch.setattr(
        current_app,
        "send_task",
        lambda name, args, kwargs: sent.append((name, args, kwargs)) or AsyncResult("replayed"),
    )
    from core.deadletters import dead_letter_replay

    dead_letter_replay(dead_letter_id=letter.pk)
    assert sent == [("collections.debit_chunk", [run.pk, 0], {})]
    with clock.travel_to(moment(DUE)), EagerCelery():
        current_app.tasks[sent[0][0]].apply(args=sent[0][1])
    run.refresh_from_db()
    assert (run.status, run.chunks_done) == (RunStatus.FINISHED, 1)
    assert sum(charges_by_reference(sandbox).values()) == 2


def test_a_redelivered_chunk_counts_once_and_charges_nobody_again(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    plans(customer, 2)
    run = run_day(DUE, django_capture_on_commit_callbacks)
    with clock.travel_to(moment(DUE)), EagerCelery():
        debit_chunk.apply(args=[run.pk, 0])
    run.refresh_from_db()
    assert (run.chunks_done, run.chunks_total) == (1, 1)
    assert sum(charges_by_reference(sandbox).values()) == 2
    assert DebitAttempt.objects.count() == 2


# --- admin ----------------------------------------------------------------------------


def test_admin_starts_a_run_and_shows_its_totals(
    admin_client, customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    plans(customer, 2)
    with (
        clock.travel_to(moment(DUE)),
        EagerCelery(),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin_client.post(
            reverse("admin:collections_debitrun_start"), {"business_date": DUE.isoformat()}
        )
    assert response.status_code == 302
    run = DebitRun.objects.get()
    assert (run.due_count, run.status) == (2, RunStatus.FINISHED)
    page = admin_client.get(reverse("admin:collections_debitrun_changelist"))
    assert page.status_code == 200
    assert b"2 (66668 minor units)" in page.content
    assert b"1/1 chunks" in page.content
    detail = admin_client.get(reverse("admin:collections_debitrun_change", args=[run.pk]))
    assert b"paid 2 (66668 minor units)" in detail.content
    form = admin_client.get(reverse("admin:collections_debitrun_start"))
    assert form.status_code == 200


def test_run_totals_is_one_query(customer, card_processor, django_assert_num_queries):
    run = DebitRun.objects.create(business_date=DUE, started_at=clock.now())
    with django_assert_num_queries(1):
        totals = selectors.run_totals(run_id=run.pk)
    assert totals.attempted == 0


def test_an_attempt_that_never_reached_the_provider_is_retried_with_a_new_key(
    customer, card_processor, sandbox
):
    (plan,) = plans(customer)
    request = first_due(plan).debit_request
    with clock.travel_to(moment(DUE)):
        # Claimed (the charge request on record), then the worker died before sending.
        debits._claim(
            request_ids=[request.pk],
            cutoff=selectors.run_cutoff(DUE),
            run_id=None,
            account=card_processor,
        )
    with clock.travel_to(moment(DUE) + timedelta(minutes=4)):
        assert debits.debit_attempts_reconcile() == {}  # it may still be on the wire
    with clock.travel_to(moment(DUE) + timedelta(minutes=10)):
        # The provider, asked by key, never saw it: a technical failure, retried.
        assert debits.debit_attempts_reconcile() == {AttemptStatus.FAILED: 1}
    first = DebitAttempt.objects.get()
    assert (first.failure_class, first.decline_code) == (FailureClass.TECHNICAL, "not_found")
    assert sandbox_charges(sandbox) == []
    with clock.travel_to(moment(DUE) + timedelta(minutes=16)):
        assert debits.debit_retries_process() == {AttemptStatus.SUCCEEDED: 1}
    second = DebitAttempt.objects.get(attempt_no=2)
    assert charges_by_key(sandbox) == {second.idempotency_key: 1}
    assert first_due(plan).status == InstallmentStatus.PAID


def test_an_attempt_an_earlier_version_claimed_and_never_sent_is_given_up_and_retried(
    customer, card_processor, sandbox
):
    """Before claim and open were one transaction, a worker could die between them: an
    attempt without a charge request. It is given up after the grace (nothing reached the
    provider) and the retry charges once."""
    (plan,) = plans(customer)
    installment = first_due(plan)
    request = installment.debit_request
    with clock.travel_to(moment(DUE)):
        DebitRequest.objects.filter(pk=request.pk).update(attempts_made=1, next_attempt_at=None)
        DebitAttempt.objects.create(
            request=request,
            attempt_no=1,
            currency="EUR",
            amount=installment.outstanding,
            idempotency_key=f"{request.idempotency_key}:1",
            retry_schedule=debits.retry_schedule_snapshot(),
            created_at=clock.now(),
        )
    with clock.travel_to(moment(DUE) + timedelta(minutes=4)):
        assert debits.debit_attempts_reconcile() == {}
    with clock.travel_to(moment(DUE) + timedelta(minutes=10)):
        assert debits.debit_attempts_reconcile() == {AttemptStatus.FAILED: 1}
    first = DebitAttempt.objects.get()
    assert (first.failure_class, first.decline_code) == (FailureClass.TECHNICAL, "not_sent")
    with clock.travel_to(moment(DUE) + timedelta(minutes=16)):
        assert debits.debit_retries_process() == {AttemptStatus.SUCCEEDED: 1}
    second = DebitAttempt.objects.get(attempt_no=2)
    assert charges_by_key(sandbox) == {second.idempotency_key: 1}
    assert first_due(plan).status == InstallmentStatus.PAID


def test_a_charge_short_of_a_late_fee_added_meanwhile_leaves_the_rest_due_at_once(
    customer, card_processor, sandbox
):
    """The delinquency job adds a late fee while the run's charge is on the wire: the charge
    pays what was owed at the claim (late fee first), and the request is due again now for
    the rest, not left in flight."""
    (plan,) = plans(customer)
    installment = first_due(plan)
    request = installment.debit_request
    with clock.travel_to(moment(DUE)):
        (charge,) = debits._claim(
            request_ids=[request.pk],
            cutoff=selectors.run_cutoff(DUE),
            run_id=None,
            account=card_processor,
        )
        Installment.objects.filter(pk=installment.pk).update(late_fee=500)  # meanwhile
        debits._record(list(zip([charge], debits._send([charge], card_processor), strict=True)))
        now = clock.now()
    installment.refresh_from_db()
    request.refresh_from_db()
    assert (installment.paid_late_fee, installment.outstanding) == (500, 500)
    assert installment.status == InstallmentStatus.SCHEDULED
    assert request.status == DebitRequestStatus.SCHEDULED
    assert request.next_attempt_at is not None
    assert request.next_attempt_at <= now
    assert DebitAttempt.objects.get().status == AttemptStatus.SUCCEEDED


def test_the_plan_admin_opens_disputes_only_on_plans_that_finance_an_order(admin_client, customer):
    """A dispute is a record on an order; a plan without one cannot be paused by hand
    (the plan admin's actions on an order's plan: tests/oms/test_disputes.py)."""
    (plan,) = plans(customer)
    answer = admin_client.post(
        reverse("admin:bnpl_plan_changelist"),
        {"action": "open_dispute", "_selected_action": [plan.pk], "note": "Chargeback 4711"},
        follow=True,
    )
    assert [str(m) for m in answer.context["messages"]] == [
        f"Plan #{plan.pk}: Disputes are opened on orders; this plan finances none."
    ]
    assert Plan.objects.get(pk=plan.pk).debits_paused is False


def test_an_unknown_outcome_is_asked_about_on_the_technical_steps_while_unreachable(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    plans(customer)
    card_processor.base_url = "http://127.0.0.1:9/card"
    card_processor.save(update_fields=["base_url"])
    run_day(DUE, django_capture_on_commit_callbacks)
    attempt = DebitAttempt.objects.get()
    asked_at = []
    for _ in range(5):
        with clock.travel_to(attempt.next_retry_at + timedelta(seconds=1)):
            assert debits.debit_attempts_reconcile() == {AttemptStatus.UNKNOWN: 1}
        attempt.refresh_from_db()
        asked_at.append(round((attempt.next_retry_at - attempt.created_at).total_seconds() / 60))
    # The steps (5, 15, 60, 240 minutes after the attempt), then every 240 minutes.
    assert asked_at[:3] == [15, 60, 240]
    assert [asked_at[3] - asked_at[2], asked_at[4] - asked_at[3]] == [240, 240]
    assert DebitAttempt.objects.count() == 1
    assert charges_by_key(sandbox) == {}


def test_admin_resends_the_unfinished_chunks_of_a_run(
    admin_client, customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    small_chunks(1)
    plans(customer, 2)
    card_processor.enabled = False
    card_processor.save(update_fields=["enabled"])
    run = run_day(DUE, django_capture_on_commit_callbacks)
    assert (run.chunks_done, run.chunks_total) == (0, 2)
    card_processor.enabled = True
    card_processor.save(update_fields=["enabled"])
    with clock.travel_to(moment(DUE)), EagerCelery():
        admin_client.post(
            reverse("admin:collections_debitrun_changelist"),
            {"action": "resume_runs", "_selected_action": [run.pk]},
        )
    run.refresh_from_db()
    assert (run.chunks_done, run.status) == (2, RunStatus.FINISHED)
    assert sum(charges_by_reference(sandbox).values()) == 2


def test_a_finished_plans_payment_method_cannot_change(
    customer, customer_api, card_processor, unchanged_db
):
    (plan,) = plans(customer)
    Plan.objects.filter(pk=plan.pk).update(status=PlanStatus.COMPLETED)
    check = unchanged_db()
    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/payment-method",
        {"payment_method": "pm_card_visa"},
        format="json",
    )
    assert (response.status_code, response.json()["error"]["code"]) == (
        409,
        "bnpl.plan_not_active",
    )
    check()


def test_a_run_never_charges_early(
    customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    (plan,) = plans(customer)
    # Started the evening before for the due date: nothing is due yet.
    evening = clock.travel_to(moment(DUE - timedelta(days=1), 20))
    with evening, EagerCelery(), django_capture_on_commit_callbacks(execute=True):
        early = debits.debit_run_start(business_date=DUE)
    assert early.due_count == 0
    # A technical retry planned for later today waits for its time, whatever reruns.
    card_processor.base_url = "http://127.0.0.1:9/card"
    card_processor.save(update_fields=["base_url"])
    run_day(DUE, django_capture_on_commit_callbacks)
    with clock.travel_to(moment(DUE) + timedelta(minutes=6)):
        debits.debit_attempts_reconcile()  # still unreachable: unknown, asked again later
    card_processor.base_url = f"{sandbox}/card"
    card_processor.save(update_fields=["base_url"])
    reliability.breaker_for("card").reset()
    with clock.travel_to(moment(DUE) + timedelta(minutes=16)):
        debits.debit_attempts_reconcile()  # the processor never saw it: failed, retry later
    first = DebitAttempt.objects.get()
    assert (first.status, first.decline_code) == (AttemptStatus.FAILED, "not_found")
    before_retry = clock.travel_to(first.next_retry_at - timedelta(minutes=1))
    with before_retry, EagerCelery(), django_capture_on_commit_callbacks(execute=True):
        rerun = debits.debit_run_start(business_date=DUE)
    assert rerun.due_count == 0
    assert DebitAttempt.objects.count() == 1
    assert first_due(plan).status == InstallmentStatus.SCHEDULED


def test_staff_who_may_only_view_runs_cannot_resend_their_chunks(
    client, customer, card_processor, sandbox, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Permission, User

    small_chunks(1)
    plans(customer, 2)
    card_processor.enabled = False
    card_processor.save(update_fields=["enabled"])
    run = run_day(DUE, django_capture_on_commit_callbacks)
    card_processor.enabled = True
    card_processor.save(update_fields=["enabled"])
    viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_debitrun"))
    client.force_login(viewer)
    changelist = reverse("admin:collections_debitrun_changelist")
    assert "resume_runs" not in client.get(changelist).content.decode()
    with clock.travel_to(moment(DUE)), EagerCelery():
        client.post(changelist, {"action": "resume_runs", "_selected_action": [run.pk]})
    run.refresh_from_db()
    assert (run.chunks_done, run.status) == (0, RunStatus.RUNNING)
    assert charges_by_reference(sandbox) == {}
