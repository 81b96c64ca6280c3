"""The daily debit run, retries and dunning: charging installments off-session, once.

A run selects what is due with one keyset query over ids, stores it as chunks of
``CollectionsSettings.chunk_size`` request ids and hands each chunk to one Celery task
(``collections.debit_chunk``). A chunk is worked in three steps, none of which holds a row
lock across a network call:

1. **Claim and open** (one short transaction per ``SEND_BATCH`` requests): the requests
   that are still due are locked (``SKIP LOCKED``: a concurrent run or a redelivered chunk
   takes the others); their charge requests are recorded
   (``payments.processing.payment_open_many``: the key sent to the provider is on record
   before the call); one attempt per request is inserted in one statement
   (``attempt_no = attempts_made + 1``, unique per request; key ``"<request key>:<n>"``;
   the retry calendar snapshotted; ``sent_at`` and its payment transaction set); and the
   requests are marked in flight (``next_attempt_at`` cleared). A request whose
   installment, or whose plan's payoff, has a charge in flight elsewhere (a card payment or
   payoff through servicing) is not claimed: it is looked at again at the first technical
   step.
2. **Send**: the batch goes out as one request (``payment_send_many``: ``capture=True``,
   each charge under its attempt's key) outside any transaction, right after the claim
   commits, and the answers are recorded in one short transaction, in which bnpl's batch
   settlement handler books the succeeded captures: the installments paid, their ledger
   entries written, finished plans completed, together with the payment facts.
3. **Record** (one short transaction): every attempt's outcome, classified: technical
   (minutes-scale retries), soft decline (day-scale retries), hard decline (no retry, the
   customer is asked for a new payment method), or unknown (reconciled with the provider by
   key before anything else is tried). Succeeded attempts are written with one statement.

Every step is set-based: a chunk costs the same number of queries whatever its size
(``tests/collections/test_debit_run.py`` pins it), and no model instance is built for a
charge that succeeds.

A worker killed anywhere leaves at worst ``pending`` attempts, each with its charge request
on record. Such an attempt may or may not have reached the provider, so it is never sent
again under a new key: once ``PENDING_GRACE`` has passed since ``sent_at`` (far beyond the
batch's HTTP deadline and its retries, ``SEND_DEADLINE``), the reconciler asks the provider
by key (``payment_reconcile``) and records what it says; a key the provider never saw is a
technical failure, retried under the next attempt's key.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from bnpl.models import (
    DebitRequest,
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
)
from bnpl.selectors import installment_outstanding
from bnpl.servicing import PAYOFF_REFERENCE
from collections_ import selectors
from collections_.models import (
    AttemptStatus,
    DebitAttempt,
    DebitRun,
    DebitRunChunk,
    FailureClass,
    RunStatus,
)
from core import clock
from core.audit import audit_record
from core.db import insert_rows, update_rows
from core.money import Money
from core.notifications import EmailDraft, email_queue
from payments.adapters.card import batch_timeout
from payments.gateway import Decision, GatewayResult, GatewayTechnicalError
from payments.models import (
    EventKind,
    Outcome,
    PaymentEvent,
    Provider,
    Source,
)
from payments.processing import (
    ITEM_TRIES,
    ChargeRequest,
    ProviderNotSupported,
    payment_capture,
    payment_open_many,
    payment_reconcile,
    payment_send_many,
    payment_send_refused,
)
from payments.reliability import CircuitOpen
from payments.selectors import enabled_account, pending_charge_exists
from payments.services import payment_event_record

log = logging.getLogger(__name__)

INSTALLMENT_REFERENCE = "bnpl.installment"  # bnpl's settlement handler books these captures

# Declines that no retry can turn around: the card is gone. Everything else a provider
# declines (insufficient funds, do not honor, generic) may pass another day.
HARD_DECLINES = frozenset(
    {
        "card_lost",
        "lost_card",
        "card_stolen",
        "stolen_card",
        "card_closed",
        "account_closed",
        "closed_account",
        "card_expired",
        "expired_card",
        "pickup_card",
        "invalid_account",
        "invalid_card",
        "revocation_of_authorization",
        "do_not_try_again",
    }
)
# Attempts without an outcome yet.
_OPEN_STATUSES = (AttemptStatus.PENDING, AttemptStatus.UNKNOWN)
# Why a request waits for a new card without a charge: its token is not the plan
# customer's saved card (the "payment method required" email says so).
CARD_NOT_OWNED = "payment_method_unknown"
# Reasons we give ourselves when no provider decided anything: technical, not the card.
TECHNICAL_CODES = frozenset({"not_found", "not_sent", "circuit_open", "provider_error"})

# Claimed charges are sent this many to a request (``payment_send_many``); a larger chunk
# is worked in slices, each opened, sent and recorded before the next.
SEND_BATCH = 1000
# The longest a live worker may still be sending a batch after recording it: for each of
# ``payments.processing.ITEM_TRIES`` rounds (items a provider error left unanswered are sent
# again), three tries (``payments.reliability.with_retries``) at the card adapter's connect
# + read timeouts for a full batch, and the backoff between them (at most 2 s each).
SEND_DEADLINE = timedelta(seconds=ITEM_TRIES * (3 * sum(batch_timeout(SEND_BATCH)) + 3 * 2.0))
# A ``pending`` attempt is left to its worker this long after ``sent_at`` (its claim, right
# before the batch goes out): only then can the provider's "never saw this key" be believed.
PENDING_GRACE = timedelta(minutes=5)
assert PENDING_GRACE > 2 * SEND_DEADLINE


# --- classification -------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOutcome:
    """What became of one attempt, as recorded on it."""

    status: AttemptStatus
    failure_class: str = ""
    decline_code: str = ""
    transaction_id: int | None = None


def classify_decline(code: str) -> FailureClass:
    if code in TECHNICAL_CODES:
        return FailureClass.TECHNICAL
    if code in HARD_DECLINES:
        return FailureClass.HARD
    return FailureClass.SOFT


def outcome_from_result(result: GatewayResult, transaction_id: int | None) -> AttemptOutcome:
    if result.decision == Decision.APPROVED:
        return AttemptOutcome(AttemptStatus.SUCCEEDED, transaction_id=transaction_id)
    if result.decision == Decision.DECLINED:
        code = result.decline_code or "declined"
        return AttemptOutcome(
            AttemptStatus.FAILED, classify_decline(code), code, transaction_id=transaction_id
        )
    # UNKNOWN (no answer in time) or PENDING (an off-session charge under review): only the
    # provider can say; the reconciler asks it by key.
    return AttemptOutcome(
        AttemptStatus.UNKNOWN,
        FailureClass.TECHNICAL,
        result.status or str(result.decision),
        transaction_id=transaction_id,
    )


# --- retry calendar -------------------------------------------------------------------


def retry_schedule_snapshot() -> dict[str, list[int]]:
    current = selectors.collections_settings()
    return {
        "soft_retry_days": [int(d) for d in current.soft_retry_days],
        "technical_retry_minutes": [int(m) for m in current.technical_retry_minutes],
    }


def _due_moment(day: date) -> datetime:
    """Start of ``day`` in the business time zone: when that day's run picks a request."""
    return selectors.run_cutoff(day - timedelta(days=1))


def _next_retry(
    *,
    outcome: AttemptOutcome,
    history: Sequence[tuple[str, str, datetime]],
    schedule: dict[str, list[int]],
    now: datetime,
) -> datetime | None:
    """When to try again after a failed attempt, or ``None`` (no automatic retry).

    ``history`` is the request's attempts, oldest first, as (status, failure_class,
    created_at), the current one last. Technical failures in a row step through
    ``technical_retry_minutes``, then wait for the next day's run. Soft declines step
    through ``soft_retry_days`` counted from the business date of the first attempt
    (+1, +3, +7 by default); after the last, delinquency takes over. Hard: never.
    """
    if outcome.failure_class == FailureClass.HARD:
        return None
    today = now.astimezone(clock.business_tz()).date()
    if outcome.failure_class == FailureClass.TECHNICAL:
        in_a_row = 0
        for _status, failure_class, _created in reversed(history):
            if failure_class != FailureClass.TECHNICAL:
                break
            in_a_row += 1
        minutes = schedule.get("technical_retry_minutes") or []
        if in_a_row <= len(minutes):
            return now + timedelta(minutes=minutes[in_a_row - 1])
        return _due_moment(today + timedelta(days=1))
    soft = sum(1 for _s, failure_class, _c in history if failure_class == FailureClass.SOFT)
    days = schedule.get("soft_retry_days") or []
    if soft > len(days):
        return None
    anchor = history[0][2].astimezone(clock.business_tz()).date()
    return max(
        _due_moment(anchor + timedelta(days=days[soft - 1])),
        _due_moment(today + timedelta(days=1)),
    )


# --- the run --------------------------------------------------------------------------


def debit_run_start(*, business_date: date, actor: Any = None) -> DebitRun:
    """Start the debit run for ``business_date``: select what is due, fan it out in chunks.

    Due means by the end of ``business_date`` and not later than now: a run started for a
    future date charges nothing early, and a technical retry planned for later today is the
    retry job's. Running it again (or concurrently) for the same date charges nobody twice:
    a request with an attempt in flight or settled is not due, and claiming locks each one.
    """
    chunk_size = selectors.collections_settings().chunk_size
    now = clock.now()
    cutoff = min(selectors.run_cutoff(business_date), now)
    with transaction.atomic(durable=True):
        run = DebitRun.objects.create(business_date=business_date, started_at=now)
        due, chunks = _chunks_create(run, cutoff=cutoff, chunk_size=chunk_size)
        run.due_count, run.chunks_total = due, chunks
        if not chunks:
            run.status, run.finished_at = RunStatus.FINISHED, now
        run.save(update_fields=["due_count", "chunks_total", "status", "finished_at"])
        audit_record(
            actor=actor,
            actor_label="" if actor else "debit run",
            action="collections.debit_run_started",
            target=run,
            changes={"business_date": business_date.isoformat(), "due": due, "chunks": chunks},
        )
        transaction.on_commit(lambda: _enqueue_chunks(run.pk, range(chunks)))
    return run


def _chunks_create(run: DebitRun, *, cutoff: datetime, chunk_size: int) -> tuple[int, int]:
    """The run's chunks: the requests due (``selectors.due_requests``) in id order,
    ``chunk_size`` to a chunk, numbered from 0. Returns (requests, chunks).

    On PostgreSQL one statement pages and stores them all (the ids never travel to
    Python, whatever the day's volume); elsewhere (SQLite for ``make run``), page by page.
    """
    if connection.vendor != "postgresql":
        due = chunks = 0
        for page in selectors.due_request_id_pages(cutoff=cutoff, page_size=chunk_size):
            DebitRunChunk.objects.create(run=run, number=chunks, request_ids=page)
            due += len(page)
            chunks += 1
        return due, chunks
    due_sql, params = (
        selectors.due_requests(cutoff=cutoff).order_by().values("pk").query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {DebitRunChunk._meta.db_table} (run_id, number, request_ids)
            SELECT %s, page, jsonb_agg(pk ORDER BY pk)
            FROM (
                SELECT pk, (row_number() OVER (ORDER BY pk) - 1) / %s AS page
                FROM ({due_sql}) AS due
            ) AS paged
            GROUP BY page
            RETURNING jsonb_array_length(request_ids)
            """,
            [run.pk, chunk_size, *params],
        )
        sizes = [size for (size,) in cursor.fetchall()]
    return sum(sizes), len(sizes)


def _enqueue_chunks(run_id: int, numbers: Iterable[int]) -> None:
    from collections_.tasks import debit_chunk

    for number in numbers:
        debit_chunk.delay(run_id, number)


def debit_runs_resume(
    *, older_than: timedelta = PENDING_GRACE, run_ids: Sequence[int] | None = None
) -> int:
    """Enqueue again the unfinished chunks of runs started more than ``older_than`` ago
    (of ``run_ids`` only, if given).

    For a run whose chunk messages were lost (a crash between commit and enqueue). A chunk
    still being worked is harmless to send twice. Returns how many chunks were sent.
    """
    chunks = DebitRunChunk.objects.filter(
        run__status=RunStatus.RUNNING,
        run__started_at__lt=clock.now() - older_than,
        done_at__isnull=True,
    )
    if run_ids is not None:
        chunks = chunks.filter(run_id__in=list(run_ids))
    by_run: dict[int, list[int]] = defaultdict(list)
    for run_id, number in chunks.order_by("run_id", "number").values_list("run_id", "number"):
        by_run[run_id].append(number)
    for run_id, numbers in by_run.items():
        _enqueue_chunks(run_id, numbers)
    return sum(len(numbers) for numbers in by_run.values())


def debit_chunk_process(*, run_id: int, chunk_no: int) -> dict[str, int]:
    """Work one chunk of a run; idempotent (a redelivered chunk charges nobody again)."""
    chunk = DebitRunChunk.objects.select_related("run").get(run_id=run_id, number=chunk_no)
    run = chunk.run
    counts = debit_requests_charge(
        request_ids=chunk.request_ids,
        cutoff=min(selectors.run_cutoff(run.business_date), run.started_at),  # the run's own
        run_id=run_id,
    )
    _chunk_done(chunk)
    return counts


def _chunk_done(chunk: DebitRunChunk) -> None:
    """Count the chunk towards the run's progress once, and finish the run with the last."""
    now = clock.now()
    with transaction.atomic(durable=True):
        first_time = DebitRunChunk.objects.filter(pk=chunk.pk, done_at__isnull=True).update(
            done_at=now
        )
        if first_time:
            DebitRun.objects.filter(pk=chunk.run_id).update(chunks_done=F("chunks_done") + 1)
            DebitRun.objects.filter(
                pk=chunk.run_id, status=RunStatus.RUNNING, chunks_done__gte=F("chunks_total")
            ).update(status=RunStatus.FINISHED, finished_at=now)


# --- claim, charge, record ------------------------------------------------------------


@dataclass(frozen=True)
class Charge:
    """A claimed attempt, its charge request on record (``transaction_id``)."""

    attempt_id: int
    request_id: int
    installment_id: int
    transaction_id: int
    amount: Money
    payment_method: str
    idempotency_key: str

    def request(self) -> ChargeRequest:
        return ChargeRequest(
            reference_type=INSTALLMENT_REFERENCE,
            reference_id=str(self.installment_id),
            amount=self.amount,
            payment_method=self.payment_method,
            idempotency_key=self.idempotency_key,
        )


def debit_requests_charge(
    *, request_ids: Sequence[int], cutoff: datetime, run_id: int | None = None
) -> dict[str, int]:
    """Claim the requests still due before ``cutoff``, charge them, record the outcomes,
    ``SEND_BATCH`` requests at a time.

    Returns counts by attempt status. Requests no longer due (settled, in flight, paused,
    claimed by a concurrent caller) are skipped.
    """
    account = enabled_account(Provider.CARD)
    if account is None:  # before claiming: nothing is left in flight
        raise ProviderNotSupported("No card processor is enabled.")
    ids = list(request_ids)
    counts: dict[str, int] = defaultdict(int)
    for start in range(0, len(ids), SEND_BATCH):
        charges = _claim(
            request_ids=ids[start : start + SEND_BATCH],
            cutoff=cutoff,
            run_id=run_id,
            account=account,
        )
        if not charges:
            continue
        results = list(zip(charges, _send(charges, account), strict=True))
        _record(results)
        for _charge, outcome in results:
            counts[str(outcome.status)] += 1
    return dict(counts)


def _claim(
    *, request_ids: Sequence[int], cutoff: datetime, run_id: int | None, account
) -> list[Charge]:
    """One short transaction: lock what is still due, record its charge requests and
    insert one attempt per request, marked sent. A request whose token is not the plan
    customer's saved card is not charged: it waits for a new one (``_card_not_owned``)."""
    now = clock.now()
    with transaction.atomic(durable=True):
        requests = _lock_due(request_ids, cutoff)
        if not requests:
            return []
        busy = _charges_in_flight(requests)
        if busy:
            # Money asked another way (a card payment toward the installment, a payoff) may
            # still arrive: asked again at the first technical step, settled by then if paid.
            DebitRequest.objects.filter(pk__any=busy).update(
                next_attempt_at=now + timedelta(minutes=_first_technical_step())
            )
            requests = [r for r in requests if r.pk not in busy]
        retried = [r.pk for r in requests if r.attempts_made]
        snapshots = (
            dict(
                DebitAttempt.objects.filter(request_id__in=retried, attempt_no=1).values_list(
                    "request_id", "retry_schedule"
                )
            )
            if retried
            else {}
        )
        current = retry_schedule_snapshot()
        due: list[Any] = []
        unowned: list[_Due] = []
        closed: dict[str, list[int]] = defaultdict(list)
        for request in requests:
            if request.installment_status not in (
                InstallmentStatus.SCHEDULED,
                InstallmentStatus.OVERDUE,
            ):
                # Paid or cancelled by another route (servicing, a refund, a write-off).
                status = (
                    DebitRequestStatus.SETTLED
                    if request.installment_status == InstallmentStatus.PAID
                    else DebitRequestStatus.CANCELLED
                )
                closed[status].append(request.pk)
            elif request.owed <= 0:
                closed[DebitRequestStatus.SETTLED].append(request.pk)
            elif not request.card_owned:
                # Never charge a token that is not the plan customer's own saved card (a
                # plan from before cards were bound to customers): the customer picks one.
                unowned.append(request)
            else:
                due.append(request)
        for status, ids in closed.items():
            DebitRequest.objects.filter(pk__any=ids).update(status=status, next_attempt_at=None)
        if unowned:
            _card_not_owned(unowned)
        keys = [f"{r.idempotency_key}:{r.attempts_made + 1}" for r in due]
        txn_ids = payment_open_many(
            account=account,
            charges=[
                ChargeRequest(
                    reference_type=INSTALLMENT_REFERENCE,
                    reference_id=str(r.installment_id),
                    amount=Money(r.owed, r.currency),
                    payment_method=r.payment_method,
                    idempotency_key=key,
                )
                for r, key in zip(due, keys, strict=True)
            ],
            capture=True,
        )
        attempt_ids = insert_rows(
            DebitAttempt,
            [
                "request_id",
                "attempt_no",
                "run_id",
                "currency",
                "amount",
                "idempotency_key",
                "retry_schedule",
                "created_at",
                "status",
                "failure_class",
                "decline_code",
                "payment_transaction_id",
                "sent_at",
            ],
            [
                (
                    r.pk,
                    r.attempts_made + 1,
                    run_id,
                    r.currency,
                    r.owed,
                    key,
                    snapshots.get(r.pk) or current,
                    now,
                    AttemptStatus.PENDING,
                    "",
                    "",
                    txn_id,
                    now,
                )
                for r, key, txn_id in zip(due, keys, txn_ids, strict=True)
            ],
        )
        DebitRequest.objects.filter(pk__any=[r.pk for r in due]).update(
            attempts_made=F("attempts_made") + 1, next_attempt_at=None
        )
    return [
        Charge(
            attempt_id=attempt_id,
            request_id=r.pk,
            installment_id=r.installment_id,
            transaction_id=txn_id,
            amount=Money(r.owed, r.currency),
            payment_method=r.payment_method,
            idempotency_key=key,
        )
        for attempt_id, txn_id, key, r in zip(attempt_ids, txn_ids, keys, due, strict=True)
    ]


@dataclass(frozen=True)
class _Due:
    """A request locked by a claim, with what its installment owes."""

    pk: int
    installment_id: int
    plan_id: int
    attempts_made: int
    idempotency_key: str
    payment_method: str
    installment_status: str
    owed: int
    currency: str
    # The request's token is one of the plan customer's saved cards, not removed.
    card_owned: bool


def _lock_due(request_ids: Sequence[int], cutoff: datetime) -> list[_Due]:
    """Lock the requests among ``request_ids`` still due (``selectors.due_requests``), in
    id order, skipping any another claim holds; with what each one's installment owes.

    Three reads by id: the requests (locked), their plans (``plans_debiting``: a request
    whose plan is not is left alone; whether its card is the customer's), their
    installments. One statement joining the three
    would be planned as a scan of every plan and installment for each chunk.
    """
    locked = list(
        DebitRequest.objects.filter(selectors.request_due(cutoff=cutoff), pk__any=request_ids)
        .select_for_update(no_key=True, skip_locked=True)
        .order_by("pk")
        .values_list(
            "pk",
            "installment_id",
            "plan_id",
            "attempts_made",
            "idempotency_key",
            "payment_method",
            named=True,
        )
    )
    if not locked:
        return []
    debiting = selectors.plans_debiting({r.plan_id for r in locked})
    installments = {
        row[0]: row[1:]
        for row in Installment.objects.filter(
            pk__any=[r.installment_id for r in locked if r.plan_id in debiting]
        )
        .annotate(owed=installment_outstanding())
        .order_by()  # not by plan (Meta.ordering), which would join the plans
        .values_list("pk", "status", "owed")
    }
    return [
        _Due(
            *r,
            installment_status=installments[r.installment_id][0],
            owed=installments[r.installment_id][1],
            currency=debiting[r.plan_id].currency,
            card_owned=r.payment_method == debiting[r.plan_id].owned_token != "",
        )
        for r in locked
        if r.plan_id in debiting
    ]


def _charges_in_flight(requests: Sequence[Any]) -> set[int]:
    """The requests among ``requests`` (locked by the caller; rows with ``pk``,
    ``installment_id`` and ``plan_id``) whose installment, or whose plan's payoff, has a
    charge in flight (``payments.selectors.pending_charge_exists``).

    Servicing records a card payment or payoff charge under the plan's lock, which includes
    the plan's debit requests: a request this run has locked is either seen here with that
    charge, or seen claimed by servicing once this commits. One query when nothing is in
    flight (the usual case), then one per request to find which.
    """

    def references(rows: Sequence[Any]) -> dict[str, list[int]]:
        return {
            INSTALLMENT_REFERENCE: [r.installment_id for r in rows],
            PAYOFF_REFERENCE: [r.plan_id for r in rows],
        }

    if not pending_charge_exists(references=references(requests)):
        return set()
    return {r.pk for r in requests if pending_charge_exists(references=references([r]))}


def _first_technical_step() -> int:
    minutes = selectors.collections_settings().technical_retry_minutes
    return int(minutes[0]) if minutes else 5


def _send(charges: Sequence[Charge], account) -> list[AttemptOutcome]:
    """Send claimed charges as one batch, outside any transaction; each one's outcome.

    The answers are recorded (and captures booked) by ``payment_send_many``. A batch the
    provider refused before sending (open circuit) fails every attempt technically; one
    that may or may not have been made, or a failure nobody planned for (a bug, a lost
    connection), leaves every attempt ``unknown``: the reconciler then finds out by key
    what became of each.
    """
    requests = [(charge.transaction_id, charge.request()) for charge in charges]

    def every(status: AttemptStatus, failure: FailureClass, code: str) -> list[AttemptOutcome]:
        return [AttemptOutcome(status, failure, code, c.transaction_id) for c in charges]

    try:
        results = payment_send_many(account=account, opened=requests)
    except CircuitOpen:
        # Refused before anything was sent: the provider never saw these keys.
        payment_send_refused(opened=requests, reason="circuit_open")
        return every(AttemptStatus.FAILED, FailureClass.TECHNICAL, "circuit_open")
    except GatewayTechnicalError:
        # 5xx after the retries with the same keys: they may or may not be charged.
        return every(AttemptStatus.UNKNOWN, FailureClass.TECHNICAL, "provider_error")
    except Exception:
        log.exception("sending %d attempts failed", len(charges))
        return every(AttemptStatus.UNKNOWN, FailureClass.TECHNICAL, "error")
    return [
        outcome_from_result(result, charge.transaction_id)
        for charge, result in zip(charges, results, strict=True)
    ]


def _record(results: list[tuple[Charge, AttemptOutcome]]) -> None:
    """Record outcomes in one short transaction (``attempts_record_outcomes``)."""
    if not results:
        return
    attempt_ids = [charge.attempt_id for charge, _ in results]
    with transaction.atomic(durable=True):
        attempts_record_outcomes(
            outcomes={charge.attempt_id: outcome for charge, outcome in results},
            attempt_ids=attempt_ids,
        )


def attempts_record_outcomes(
    *, outcomes: dict[int, AttemptOutcome], attempt_ids: Sequence[int]
) -> None:
    """Write outcomes onto open attempts and move their requests on; caller's transaction.

    An attempt whose outcome is already recorded (a concurrent reconciler got there first)
    is left as it is. Succeeded attempts touch only the attempt: bnpl's settlement handler
    has already settled the request with the payment.
    """
    now = clock.now()
    attempted = {
        pk: (request_id, status, txn_id)
        for pk, request_id, status, txn_id in DebitAttempt.objects.filter(
            pk__any=attempt_ids
        ).values_list("pk", "request_id", "status", "payment_transaction_id")
    }
    request_of = {pk: request_id for pk, (request_id, _s, _t) in attempted.items()}
    succeeded = [a for a in attempt_ids if outcomes[a].status == AttemptStatus.SUCCEEDED]
    rest = [a for a in attempt_ids if outcomes[a].status != AttemptStatus.SUCCEEDED]
    if rest:
        # Every request first, in id order, whatever its attempt's outcome.
        list(
            DebitRequest.objects.select_for_update(no_key=True)
            .filter(pk__any=set(request_of.values()))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    if succeeded:
        _record_successes(succeeded, outcomes, attempted, now)
    if not rest:
        return
    locked = {  # their plan, customer and user are read, not locked
        r.pk: r
        for r in DebitRequest.objects.filter(pk__in={request_of[a] for a in rest})
        .select_related("plan__customer__user", "installment")
        .order_by("pk")
    }
    attempts = list(
        DebitAttempt.objects.select_for_update(no_key=True)
        .filter(pk__in=rest, status__in=(AttemptStatus.PENDING, AttemptStatus.UNKNOWN))
        .order_by("pk")
    )
    failing = [a.request_id for a in attempts if outcomes[a.pk].status != AttemptStatus.SUCCEEDED]
    history: dict[int, list[tuple[int, str, str, datetime]]] = defaultdict(list)
    for request_id, number, status, failure_class, created_at in (
        DebitAttempt.objects.filter(request_id__in=failing)
        .order_by("request_id", "attempt_no")
        .values_list("request_id", "attempt_no", "status", "failure_class", "created_at")
    ):
        history[request_id].append((number, status, failure_class, created_at))
    changed_attempts: list[DebitAttempt] = []
    changed_requests: list[DebitRequest] = []
    emails: list[EmailDraft] = []
    for attempt in attempts:
        outcome = outcomes[attempt.pk]
        request = locked[attempt.request_id]
        attempt.status = outcome.status
        attempt.failure_class = outcome.failure_class
        attempt.decline_code = outcome.decline_code[:60]
        if outcome.transaction_id:
            attempt.payment_transaction_id = outcome.transaction_id
        if outcome.status != AttemptStatus.UNKNOWN:
            attempt.finished_at = now
        changed_attempts.append(attempt)
        if outcome.status == AttemptStatus.UNKNOWN:
            # Ask the provider before anything else: at the first technical step.
            minutes = attempt.retry_schedule.get("technical_retry_minutes") or [5]
            attempt.next_retry_at = now + timedelta(minutes=minutes[0])
            continue
        if request.status != DebitRequestStatus.SCHEDULED or request.next_attempt_at is not None:
            continue  # moved on meanwhile (settled, new method, paused); nothing to plan
        # The request's attempts up to this one, this one with its new outcome.
        past = [
            (outcome.status, outcome.failure_class, created)
            if number == attempt.attempt_no
            else (status, failure_class, created)
            for number, status, failure_class, created in history[attempt.request_id]
            if number <= attempt.attempt_no
        ]
        retry_at = _next_retry(
            outcome=outcome, history=past, schedule=attempt.retry_schedule, now=now
        )
        attempt.next_retry_at = retry_at
        if retry_at is not None:
            request.next_attempt_at = retry_at
        elif outcome.failure_class == FailureClass.HARD:
            request.status = DebitRequestStatus.ACTION_REQUIRED
            emails.append(_payment_method_email(request, attempt))
        else:
            request.status = DebitRequestStatus.EXHAUSTED
        changed_requests.append(request)
    DebitAttempt.objects.bulk_update(
        changed_attempts,
        [
            "status",
            "failure_class",
            "decline_code",
            "payment_transaction",
            "finished_at",
            "next_retry_at",
        ],
        batch_size=1000,
    )
    if changed_requests:
        DebitRequest.objects.bulk_update(
            changed_requests, ["status", "next_attempt_at"], batch_size=1000
        )
    if emails and email_queue(emails):
        from core.tasks import deliver_emails

        transaction.on_commit(deliver_emails.delay)


def _record_successes(
    attempt_ids: Sequence[int],
    outcomes: dict[int, AttemptOutcome],
    attempted: dict[int, tuple[int, str, int | None]],
    now: datetime,
) -> None:
    """Succeeded attempts, set-based. bnpl's settlement handler has already settled each
    request its payment paid in full; one paid less than is now owed (a late fee arrived
    meanwhile) is due again now, for the rest. Those few are locked first, in id order, then
    their attempts, and made due only if their attempt is still open by then. Every open
    attempt is then marked succeeded in one statement, which leaves alone one a reconciler
    recorded meanwhile."""
    still_open = {pk: attempted[pk][2] for pk in attempt_ids if attempted[pk][1] in _OPEN_STATUSES}
    partly_paid = set(
        DebitRequest.objects.select_for_update(no_key=True)
        .filter(
            pk__any=[attempted[a][0] for a in still_open],
            status=DebitRequestStatus.SCHEDULED,
            next_attempt_at__isnull=True,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if partly_paid:
        due_again = list(
            DebitAttempt.objects.select_for_update(no_key=True)
            .filter(
                pk__any=[a for a in still_open if attempted[a][0] in partly_paid],
                status__in=_OPEN_STATUSES,
            )
            .order_by("pk")
            .values_list("request_id", flat=True)
        )
        DebitRequest.objects.filter(pk__any=due_again).update(next_attempt_at=now)
    update_rows(
        DebitAttempt,
        [
            "status",
            "failure_class",
            "decline_code",
            "payment_transaction_id",
            "finished_at",
            "next_retry_at",
        ],
        [
            (
                attempt_id,
                AttemptStatus.SUCCEEDED,
                outcomes[attempt_id].failure_class,
                outcomes[attempt_id].decline_code[:60],
                outcomes[attempt_id].transaction_id or txn_id,
                now,
                None,
            )
            for attempt_id, txn_id in still_open.items()
        ],
        only_if={"status": _OPEN_STATUSES},
    )


def _payment_method_email(request: DebitRequest, attempt: DebitAttempt) -> EmailDraft:
    return _payment_method_required(
        request,
        number=attempt.attempt_no,
        amount=Money(attempt.amount, attempt.currency),
        decline_code=attempt.decline_code,
    )


def _payment_method_required(
    request: DebitRequest, *, number: int, amount: Money, decline_code: str
) -> EmailDraft:
    """The "please pick a card" email of a request that waits for a new payment method;
    one per request and attempt ``number`` (the attempts made when nothing was sent)."""
    user = request.plan.customer.user
    return EmailDraft(
        dedupe_key=f"collections.payment_method_required:{request.pk}:{number}",
        template="collections/payment_method_required",
        to=user.email,
        user_id=user.pk,
        subject="Your installment could not be charged: please update your card",
        context={
            "user": user,
            "plan": request.plan,
            "installment": request.installment,
            "amount": amount,
            "decline_code": decline_code,
            "update_url": settings.COLLECTIONS_PAYMENT_METHOD_URL.format(plan_id=request.plan_id),
        },
    )


def _card_not_owned(due: Sequence[_Due]) -> None:
    """Requests whose token is not the plan customer's saved card: nothing is charged, they
    wait for a new payment method (``ACTION_REQUIRED``) and the customer is emailed; the
    caller's claim holds their locks."""
    DebitRequest.objects.filter(pk__any=[r.pk for r in due]).update(
        status=DebitRequestStatus.ACTION_REQUIRED, next_attempt_at=None
    )
    by_pk = {r.pk: r for r in due}
    emails = [
        _payment_method_required(
            request,
            number=by_pk[request.pk].attempts_made,
            amount=Money(by_pk[request.pk].owed, by_pk[request.pk].currency),
            decline_code=CARD_NOT_OWNED,
        )
        for request in DebitRequest.objects.filter(pk__any=list(by_pk)).select_related(
            "plan__customer__user", "installment"
        )
    ]
    log.warning("%d debit requests wait for a saved card of their customer", len(due))
    if email_queue(emails):
        from core.tasks import deliver_emails

        transaction.on_commit(deliver_emails.delay)


# --- reconciliation and retries -------------------------------------------------------


def _give_up_unsent(attempt: DebitAttempt) -> bool:
    """Record an attempt without a charge request as failed (``not_sent``: a technical
    retry follows), holding its request's lock and then its own; ``False`` if a worker of
    the earlier version recorded the request first (it took the same attempt lock)."""
    with transaction.atomic(durable=True):
        list(
            DebitRequest.objects.select_for_update(no_key=True)
            .filter(pk=attempt.request_id)
            .values_list("pk", flat=True)
        )
        unsent = (
            DebitAttempt.objects.select_for_update(no_key=True)
            .filter(pk=attempt.pk, status__in=_OPEN_STATUSES, sent_at__isnull=True)
            .first()
        )
        if unsent is None:
            return False
        attempts_record_outcomes(
            outcomes={
                attempt.pk: AttemptOutcome(AttemptStatus.FAILED, FailureClass.TECHNICAL, "not_sent")
            },
            attempt_ids=[attempt.pk],
        )
    return True


def _charge_events(attempt: DebitAttempt) -> dict[str, PaymentEvent]:
    """The facts of the attempt's charge by key: its answer, its capture (recorded with the
    answer, or asked separately by ``payment_capture``) and the capture's answer."""
    key = attempt.idempotency_key
    return {
        e.idempotency_key: e
        for e in PaymentEvent.objects.filter(
            transaction_id=attempt.payment_transaction_id,
            idempotency_key__in=[f"{key}:result", f"{key}:capture", f"{key}:capture:result"],
        )
    }


def _outcome_from_records(attempt: DebitAttempt) -> AttemptOutcome | None:
    """What the payment records say of a sent attempt's charge; ``None`` while unknown.

    An approved charge counts once its capture is on record: the capture fact written with
    the answer, or the answer to the capture the reconciler asked for (``_ask_provider``).
    A capture the provider refused leaves nothing taken: a technical failure, retried
    under a new key.
    """
    txn_id = attempt.payment_transaction_id
    key = attempt.idempotency_key
    events = _charge_events(attempt)
    result = events.get(f"{key}:result")
    if result is None:
        return None
    if result.outcome == Outcome.FAILED:
        code = str(result.detail.get("decline_code") or "declined")
        return AttemptOutcome(AttemptStatus.FAILED, classify_decline(code), code, txn_id)
    capture, captured = events.get(f"{key}:capture"), events.get(f"{key}:capture:result")
    if (capture is not None and capture.outcome == Outcome.SUCCEEDED) or (
        captured is not None and captured.outcome == Outcome.SUCCEEDED
    ):
        return AttemptOutcome(AttemptStatus.SUCCEEDED, transaction_id=txn_id)
    if captured is not None:
        code = "capture_failed"
        return AttemptOutcome(AttemptStatus.FAILED, FailureClass.TECHNICAL, code, txn_id)
    if capture is None and result.detail.get("status") == "captured":
        # The provider said "captured" but the capture fact was not written (a crash in
        # between): write it now, under the key payment_send uses.
        with transaction.atomic(durable=True):
            payment_event_record(
                transaction_id=txn_id,
                kind=EventKind.CAPTURE,
                outcome=Outcome.SUCCEEDED,
                amount=Money(result.amount, result.currency),
                idempotency_key=f"{attempt.idempotency_key}:capture",
                source=Source.RECONCILE,
            )
        return AttemptOutcome(AttemptStatus.SUCCEEDED, transaction_id=txn_id)
    return None


def _ask_provider(attempt: DebitAttempt) -> None:
    """Outside any transaction: read a charge without an answer back by key
    (``payment_reconcile``), or capture one the provider approved without capturing it.

    The latter is an off-session charge the provider held (e.g. for review) and then
    authorized only: it is captured under ``"<key>:capture"`` (the same key every time,
    so asking again is safe), rather than voided and charged anew, which would leave the
    customer's funds held twice until the first authorization expired. Until the capture
    is recorded the charge counts as in flight for servicing too.
    """
    txn_id = attempt.payment_transaction_id
    key = attempt.idempotency_key
    try:
        events = _charge_events(attempt)
        if f"{key}:result" not in events:
            payment_reconcile(transaction_id=txn_id)
            events = _charge_events(attempt)
        result = events.get(f"{key}:result")
        if (
            result is not None
            and result.outcome == Outcome.SUCCEEDED
            and _outcome_from_records(attempt) is None
        ):
            payment_capture(
                transaction_id=txn_id,
                amount=Money(result.amount, result.currency),
                idempotency_key=f"{attempt.idempotency_key}:capture",
            )
    except (GatewayTechnicalError, CircuitOpen):
        log.warning("provider still unreachable for attempt %s", attempt.pk)


def debit_attempt_reconcile(*, attempt_id: int) -> AttemptStatus:
    """Find out what became of an attempt without an outcome, by its key; record it.

    Asks the provider only if the payment records do not already say
    (``payment_reconcile`` reads the charge back by the same key, or replays the request
    under it). Never sends a new key: a new attempt is only made once this one is known to
    have failed.
    """
    attempt = DebitAttempt.objects.get(pk=attempt_id)
    if attempt.status not in _OPEN_STATUSES:
        return AttemptStatus(attempt.status)
    if attempt.sent_at is None:
        # Claimed by an earlier version, which recorded the charge request separately,
        # and never sent: nothing reached the provider.
        return AttemptStatus.FAILED if _give_up_unsent(attempt) else AttemptStatus.PENDING
    outcome = _outcome_from_records(attempt)
    if outcome is None:
        _ask_provider(attempt)
        outcome = _outcome_from_records(attempt)
    if outcome is None:
        outcome = AttemptOutcome(AttemptStatus.UNKNOWN, FailureClass.TECHNICAL, "unknown")
    with transaction.atomic(durable=True):
        if outcome.status == AttemptStatus.UNKNOWN:
            _unknown_again(attempt)
        else:
            attempts_record_outcomes(outcomes={attempt.pk: outcome}, attempt_ids=[attempt.pk])
    attempt.refresh_from_db(fields=["status"])
    return AttemptStatus(attempt.status)


def _unknown_again(attempt: DebitAttempt) -> None:
    """Still no answer: ask again at the next technical step after the attempt, then hourly."""
    locked = DebitAttempt.objects.select_for_update(no_key=True).get(pk=attempt.pk)
    if locked.status not in (AttemptStatus.PENDING, AttemptStatus.UNKNOWN):
        return
    now = clock.now()
    steps = sorted(locked.retry_schedule.get("technical_retry_minutes") or [])
    asked = (
        0
        if locked.next_retry_at is None
        else (locked.next_retry_at - locked.created_at).total_seconds() / 60
    )
    later = next((m for m in steps if m > asked), None)
    when = (
        locked.created_at + timedelta(minutes=later)
        if later is not None
        else now + timedelta(minutes=max(60, steps[-1] if steps else 60))
    )
    locked.status = AttemptStatus.UNKNOWN
    locked.failure_class = FailureClass.TECHNICAL
    locked.next_retry_at = max(when, now + timedelta(minutes=1))
    locked.save(update_fields=["status", "failure_class", "next_retry_at"])


def debit_attempts_reconcile(
    *, pending_older_than: timedelta = PENDING_GRACE, limit: int = 1000
) -> dict[str, int]:
    """Reconcile every attempt without an outcome that is due a question; counts by result.

    One attempt that fails in a way nobody planned for is logged and counted as ``error``
    (it is asked about again on the next pass); the others are still reconciled.
    """
    counts: dict[str, int] = defaultdict(int)
    for attempt_id in selectors.attempts_to_reconcile(
        now=clock.now(), pending_older_than=pending_older_than, limit=limit
    ):
        try:
            counts[str(debit_attempt_reconcile(attempt_id=attempt_id))] += 1
        except Exception:
            log.exception("reconciling debit attempt %s failed", attempt_id)
            counts["error"] += 1
    return dict(counts)


def debit_retries_process(*, max_chunks: int = 10) -> dict[str, int]:
    """Charge the technical retries that are due now, a chunk at a time (minutes-scale;
    day-scale retries and first attempts belong to the daily run). Returns counts."""
    size = selectors.collections_settings().chunk_size
    counts: dict[str, int] = defaultdict(int)
    for _ in range(max_chunks):
        now = clock.now()
        ids = selectors.technical_retries_due(now=now, limit=size)
        if not ids:
            break
        for status, n in debit_requests_charge(request_ids=ids, cutoff=now).items():
            counts[status] += n
    return dict(counts)
