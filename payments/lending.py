"""Credit decisions delegated to a lending partner: submit, record, reconcile.

1. A short transaction records the application (``PartnerApplication``, status
   ``submitting``) under the idempotency key the partner will see, and commits.
2. The partner is called outside any transaction, through its circuit breaker, retrying
   technical failures (5xx) with the same key.
3. A second short transaction records the answer. ``referred`` waits for the partner's
   signed webhook (``partner_webhook_process``); ``unknown`` (a timeout) is read back by
   ``partner_application_reconcile``, never resubmitted as a new application.

A final decision (approved, declined, failed) is recorded once per application, whatever
route brings it first; the owner's ``payments.events.register_partner_decision`` handler
is then called once, after commit. A later report for a decided application changes
nothing and is kept in ``ignored_reports``; one that contradicts the decision flags it.

Cancelling (``partner_application_cancel``): when what an application finances is gone
(the order cancelled, the hold expired) the partner is asked to cancel it, recorded in the
same two short transactions around the call. A cancelled application's later reports are
kept in ``ignored_reports`` and never handed up. A partner that refuses because it has
funded the merchant flags the row ``funded_without_plan`` for finance.

Funding: on approval the partner pays the merchant ``funded_amount``. The ledger entry for
it belongs to the owner of the plan (``bnpl.partner_funded``), written when it acts on the
decision.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from core import clock
from core.audit import audit_record
from core.errors import Conflict, InvalidInput
from core.money import Money
from payments import crypto, events
from payments.adapters.lending_partner import (
    CancelOutcome,
    LendingPartnerClient,
    PartnerApplication,
    PartnerDecision,
    PartnerDecisionKind,
    PartnerReason,
    PartnerTerms,
    decision_from_application,
)
from payments.gateway import GatewayTechnicalError
from payments.models import (
    PartnerApplication as PartnerApplicationRecord,
)
from payments.models import (
    PartnerApplicationStatus,
    PartnerCancelState,
    Provider,
    ProviderAccount,
    WebhookEvent,
)
from payments.reliability import CircuitOpen, breaker_for, with_retries

T = TypeVar("T")
log = logging.getLogger(__name__)

# Notification types of a partner's signed webhooks, and the status each one reports.
WEBHOOK_DECISIONS = {
    "application.approved": PartnerDecisionKind.APPROVED,
    "application.declined": PartnerDecisionKind.DECLINED,
}

_STATUS_OF = {
    PartnerDecisionKind.APPROVED: PartnerApplicationStatus.APPROVED,
    PartnerDecisionKind.DECLINED: PartnerApplicationStatus.DECLINED,
    PartnerDecisionKind.FAILED: PartnerApplicationStatus.FAILED,
    PartnerDecisionKind.REFERRED: PartnerApplicationStatus.REFERRED,
    PartnerDecisionKind.UNKNOWN: PartnerApplicationStatus.UNKNOWN,
    PartnerDecisionKind.CANCELLED: PartnerApplicationStatus.CANCELLED,
}
_DECISION_OF = {
    **{status: kind for kind, status in _STATUS_OF.items()},
    PartnerApplicationStatus.SUBMITTING: PartnerDecisionKind.UNKNOWN,
}


class NotALendingPartner(InvalidInput):
    code = "payments.not_a_lending_partner"
    default_message = "This provider account is not an enabled lending partner."


class IdempotencyKeyReused(Conflict):
    code = "payments.idempotency_key_reused"
    default_message = "This idempotency key was used for another application."


def reconcile_after() -> timedelta:
    """How old an open application must be before the reconciler reads it back (and a
    key the partner never received counts as failed)."""
    return timedelta(seconds=settings.PAYMENTS_PARTNER_RECONCILE_AFTER_SECONDS)


# --- plumbing ---------------------------------------------------------------------------

_local = threading.local()

# Statuses the owner is never told about: still open, or cancelled at our request.
NOT_HANDED_UP = (*PartnerApplicationRecord.OPEN, PartnerApplicationStatus.CANCELLED)


def partner_client_for(account: ProviderAccount) -> LendingPartnerClient:
    """The adapter for ``account``; one HTTP session per URL and thread (keep-alive)."""
    if account.provider != Provider.LENDING_PARTNER:
        raise NotALendingPartner(f"{account} is not a lending partner.")
    sessions = _local.__dict__.setdefault("sessions", {})
    session = sessions.setdefault(account.base_url, requests.Session())
    credentials = crypto.decrypt(account.credentials_encrypted) or {}
    return LendingPartnerClient(
        base_url=account.base_url, api_key=credentials.get("secret", ""), session=session
    )


def _call(account: ProviderAccount, fn: Callable[[], T]) -> T:
    return breaker_for(account.provider).call(lambda: with_retries(fn))


def partner_decision_of(record: PartnerApplicationRecord) -> PartnerDecision:
    """The decision as recorded (``submitting`` reads as ``unknown``)."""
    currency = record.currency
    return PartnerDecision(
        decision=_DECISION_OF[PartnerApplicationStatus(record.status)],
        partner_reference=record.partner_reference,
        reasons=tuple(
            PartnerReason(code=str(r.get("code", "")), message=str(r.get("message", "")))
            for r in record.reasons
        ),
        terms=PartnerTerms.from_json(record.terms) if record.terms else None,
        funded_amount=Money(record.funded_amount, currency)
        if record.funded_amount is not None
        else None,
        status=record.partner_status,
        idempotency_key=record.idempotency_key,
    )


def _flag(record: PartnerApplicationRecord, reason: str) -> None:
    record.flagged = True
    record.flag_reason = f"{record.flag_reason}\n{reason}".strip()


def _record(
    *, application_id: int, decision: PartnerDecision, source: str, detail: dict | None = None
) -> PartnerApplicationRecord:
    """Apply what the partner reported, in the caller's transaction; idempotent.

    A final decision is taken once: the row moves from an open status to the decision and
    the owner is told after commit. Anything reported after that is kept in
    ``ignored_reports`` and changes nothing (a contradicting one flags the row).
    """
    record = PartnerApplicationRecord.objects.select_for_update(no_key=True).get(pk=application_id)
    now = clock.now()
    reported = decision.partner_reference
    if reported and record.partner_reference is None:
        record.partner_reference = reported
    elif reported and reported != record.partner_reference:
        _flag(record, f"{source} names {reported}, recorded as {record.partner_reference}")
    kind = decision.decision
    fields = ["partner_reference", "flagged", "flag_reason", "updated_at"]
    if record.status not in PartnerApplicationRecord.OPEN:
        if kind != PartnerDecisionKind.UNKNOWN:
            record.ignored_reports = [
                *record.ignored_reports,
                {
                    "source": source,
                    "decision": str(kind),
                    "partner_status": decision.status,
                    "at": now.isoformat(),
                    **(detail or {}),
                },
            ]
            fields.append("ignored_reports")
            # A cancelled application expects nothing more; what comes is kept, not acted on.
            cancelled = record.status == PartnerApplicationStatus.CANCELLED
            if kind.final and _STATUS_OF[kind] != record.status and not cancelled:
                _flag(record, f"{source} reports {kind} after the decision {record.status}")
    elif kind.final:
        record.status = _STATUS_OF[kind]
        record.partner_status = decision.status
        record.reasons = [r.to_json() for r in decision.reasons]
        record.decided_at = now
        fields += ["status", "partner_status", "reasons", "decided_at"]
        if kind == PartnerDecisionKind.APPROVED and decision.terms and decision.funded_amount:
            record.terms = decision.terms.to_json()
            record.funded_amount = decision.funded_amount.minor
            fields += ["terms", "funded_amount"]
            funded = decision.funded_amount
            if funded.currency != record.currency or funded.minor > record.amount:
                _flag(record, f"funded {funded}, {Money(record.amount, record.currency)} asked")
    elif kind == PartnerDecisionKind.CANCELLED:
        # Read back after a cancel whose answer was lost: nothing is handed up.
        record.status = PartnerApplicationStatus.CANCELLED
        record.partner_status = decision.status
        record.cancel_state = PartnerCancelState.CANCELLED
        record.cancelled_at = now
        fields += ["status", "partner_status", "cancel_state", "cancelled_at"]
    elif kind == PartnerDecisionKind.REFERRED or (
        kind == PartnerDecisionKind.UNKNOWN and record.status == PartnerApplicationStatus.SUBMITTING
    ):
        record.status = _STATUS_OF[kind]
        record.partner_status = decision.status
        fields += ["status", "partner_status"]
    decided_now = "decided_at" in fields
    record.updated_at = now
    record.save(update_fields=fields)
    if decided_now:
        audit_record(
            action="payments.partner_decided",
            target=record,
            actor_label=f"lending partner ({source})",
            changes={"status": record.status, "reasons": record.reasons, **(detail or {})},
        )
        transaction.on_commit(lambda: partner_decision_hand_up(application_id=record.pk))
    return record


def partner_decision_hand_up(*, application_id: int) -> bool:
    """Tell the owner about a final decision (its registered handler), outside any
    transaction; True once it is told. A handler that raises is logged and left for the
    reconciler to call again, so a decision is never lost between payments and its owner.
    """
    record = PartnerApplicationRecord.objects.get(pk=application_id)
    handler = events.partner_decision_handler(record.reference_type)
    if record.status in NOT_HANDED_UP or handler is None:
        return False
    try:
        handler(record.reference_id, partner_decision_of(record))
    except Exception:
        log.exception("the owner of partner application %s failed on its decision", record.pk)
        return False
    PartnerApplicationRecord.objects.filter(pk=record.pk).update(owner_notified_at=clock.now())
    return True


# --- submit -----------------------------------------------------------------------------


def partner_application_submit(
    *,
    account: ProviderAccount,
    reference_type: str,
    reference_id: str,
    application: PartnerApplication,
    idempotency_key: str,
) -> PartnerDecision:
    """Ask the lending partner for a decision on ``application``; returns it as recorded.

    Must not run inside a transaction (the partner is called between two short ones). The
    partner knows it as ``"<reference_type>:<reference_id>"``. Calling again with the same
    key never opens a second application: a decided one answers its decision, an open one
    is read back from the partner. The same key for another reference or application is
    ``payments.idempotency_key_reused`` (409).
    """
    if account.provider != Provider.LENDING_PARTNER or not account.enabled:
        raise NotALendingPartner(f"{account} is not an enabled lending partner.")
    if application.currency != account.currency:
        raise InvalidInput(
            f"{account} lends in {account.currency}, not {application.currency}.",
            code="payments.currency_mismatch",
            fields={"amount": [f"Must be in {account.currency}."]},
        )
    reference = f"{reference_type}:{reference_id}"
    wire = application.to_wire(reference=reference)
    now = clock.now()
    try:
        with transaction.atomic(durable=True):
            record = PartnerApplicationRecord.objects.create(
                account=account,
                reference_type=reference_type,
                reference_id=reference_id,
                idempotency_key=idempotency_key,
                currency=application.currency,
                amount=application.amount.minor,
                request=wire,
                created_at=now,
                updated_at=now,
            )
    except IntegrityError:
        record = PartnerApplicationRecord.objects.get(idempotency_key=idempotency_key)
        if (record.account_id, record.request) != (account.pk, wire):
            raise IdempotencyKeyReused() from None
        if record.status in PartnerApplicationRecord.OPEN:
            return partner_application_reconcile(application_id=record.pk)
        return partner_decision_of(record)

    client = partner_client_for(account)
    detail: dict[str, str] = {}
    try:
        decision = _call(
            account,
            lambda: client.submit_application(
                application=application, reference=reference, idempotency_key=idempotency_key
            ),
        )
    except CircuitOpen:
        decision = PartnerDecision(
            PartnerDecisionKind.FAILED,
            reasons=(PartnerReason("partner_unavailable", "The partner is failing; not sent."),),
        )
    except GatewayTechnicalError as exc:
        # Retried and still failing: the partner may have stored it, so it is read back.
        decision = PartnerDecision(PartnerDecisionKind.UNKNOWN, status="technical_error")
        detail = {"error": str(exc)[:200]}
    with transaction.atomic(durable=True):
        record = _record(application_id=record.pk, decision=decision, source="api", detail=detail)
    return partner_decision_of(record)


# --- later decisions: webhooks and the reconciler ----------------------------------------


@transaction.atomic(durable=True)
def partner_webhook_process(*, event_id: int) -> WebhookEvent:
    """Apply a stored, verified partner notification. Running it again changes nothing."""
    event = WebhookEvent.objects.select_for_update(no_key=True).get(pk=event_id)
    if event.status == WebhookEvent.Status.PROCESSED:
        return event
    event.attempts += 1
    data = event.payload.get("data")
    expected = WEBHOOK_DECISIONS.get(event.event_type)
    decision = decision_from_application(data) if isinstance(data, dict) else None
    record = None
    if decision is not None:
        match = Q()
        if decision.partner_reference:
            match |= Q(partner_reference=decision.partner_reference)
        if decision.idempotency_key:
            match |= Q(idempotency_key=decision.idempotency_key)
        if match:
            record = (
                PartnerApplicationRecord.objects.filter(account__provider=event.provider)
                .filter(match)
                .order_by("id")
                .first()
            )
    error = ""
    if expected is None:
        error = "unknown event type"
    elif decision is None or decision.decision != expected:
        error = f"{event.event_type} does not carry a readable {expected} application"
    elif record is None:
        error = f"no application {decision.partner_reference!r}"
    if error:
        event.status = WebhookEvent.Status.FAILED
        event.last_error = error
        event.save(update_fields=["status", "attempts", "last_error"])
        return event
    _record(
        application_id=record.pk,
        decision=decision,
        source="webhook",
        detail={"webhook_event": event.event_id},
    )
    event.status = WebhookEvent.Status.PROCESSED
    event.processed_at = clock.now()
    event.last_error = ""
    event.save(update_fields=["status", "attempts", "processed_at", "last_error"])
    return event


def partner_application_reconcile(*, application_id: int) -> PartnerDecision:
    """Read an open application back from the partner and record what it says.

    Read by the partner's reference when known, else by the idempotency key. A key the
    partner never received is a failed application once it is older than
    ``reconcile_after()`` (a younger one may still be on its way), and a new application
    (new key) is then safe. A partner that does not answer changes nothing.
    """
    record = PartnerApplicationRecord.objects.select_related("account").get(pk=application_id)
    if record.status not in PartnerApplicationRecord.OPEN:
        return partner_decision_of(record)
    client = partner_client_for(record.account)
    by_reference = record.partner_reference
    try:
        found = _call(
            record.account,
            lambda: client.get_application(
                partner_reference=by_reference,
                idempotency_key=None if by_reference else record.idempotency_key,
            ),
        )
    except (GatewayTechnicalError, CircuitOpen):
        return partner_decision_of(record)
    with transaction.atomic(durable=True):
        if found is not None:
            record = _record(application_id=record.pk, decision=found, source="reconcile")
        elif by_reference:
            record = PartnerApplicationRecord.objects.select_for_update(no_key=True).get(
                pk=record.pk
            )
            _flag(record, f"the partner has no application {by_reference}")
            record.updated_at = clock.now()
            record.save(update_fields=["flagged", "flag_reason", "updated_at"])
        elif record.created_at <= clock.now() - reconcile_after():
            record = _record(
                application_id=record.pk,
                decision=PartnerDecision(
                    PartnerDecisionKind.FAILED,
                    status="not_received",
                    reasons=(PartnerReason("not_received", "The partner never received it."),),
                ),
                source="reconcile",
            )
    return partner_decision_of(record)


def partner_applications_reconcile(*, older_than: timedelta | None = None) -> dict[str, Any]:
    """Read back every application still open (referred, unknown, submitting) that is
    older than ``older_than`` (default ``reconcile_after()``), and hand up again decisions
    whose owner's handler failed. Returns counts by decision."""
    cutoff = clock.now() - (older_than if older_than is not None else reconcile_after())
    ids = list(
        PartnerApplicationRecord.objects.filter(
            status__in=PartnerApplicationRecord.OPEN, created_at__lte=cutoff
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    counts: dict[str, Any] = {"looked_at": len(ids)}
    untold = list(
        PartnerApplicationRecord.objects.exclude(status__in=NOT_HANDED_UP)
        .filter(owner_notified_at__isnull=True, decided_at__lte=cutoff)
        .filter(reference_type__in=events.partner_decision_reference_types())
        .order_by("id")
        .values_list("id", flat=True)
    )
    if untold:
        counts["handed_up"] = sum(partner_decision_hand_up(application_id=i) for i in untold)
    for application_id in ids:
        try:
            decision = partner_application_reconcile(application_id=application_id)
        except Exception:  # one bad row must not starve the others
            log.exception("reconciling partner application %s failed", application_id)
            counts["errors"] = counts.get("errors", 0) + 1
        else:
            counts[str(decision.decision)] = counts.get(str(decision.decision), 0) + 1
    unsent = list(
        PartnerApplicationRecord.objects.filter(
            cancel_state=PartnerCancelState.REQUESTED, cancel_requested_at__lte=cutoff
        )
        .select_related("account")
        .order_by("id")
    )
    for record in unsent:
        try:
            again = partner_application_cancel(
                account=record.account,
                reference_type=record.reference_type,
                reference_id=record.reference_id,
                reason=record.cancel_reason,
            )
        except Exception:
            log.exception("cancelling partner application %s failed", record.pk)
            counts["errors"] = counts.get("errors", 0) + 1
        else:
            state = f"cancel_{again.cancel_state}" if again else "cancel_missing"
            counts[state] = counts.get(state, 0) + 1
    return counts


# --- cancel -----------------------------------------------------------------------------


def _cancel_state_set(
    record: PartnerApplicationRecord, state: PartnerCancelState, *, note: str = ""
) -> None:
    """Move the cancellation of a locked row to ``state`` and audit it (caller saves)."""
    before = record.cancel_state
    record.cancel_state = state
    audit_record(
        action=f"payments.partner_cancel_{state}",
        target=record,
        actor_label="lending partner",
        changes={"cancel_state": [before, state], "status": record.status},
        note=note,
    )


def partner_application_cancel(
    *, account: ProviderAccount, reference_type: str, reference_id: str, reason: str
) -> PartnerApplicationRecord | None:
    """Ask the partner to cancel the latest application for what it finances; idempotent.

    Must not run inside a transaction: a short one records the request (``requested``),
    the partner is called outside any (its breaker, technical retries, the key
    ``<application key>:cancel`` on every try), a second one records the outcome. A row
    with nothing to cancel (declined, failed) becomes ``not_needed`` without a call; one
    the partner has not answered for yet is read back first to learn its id. A cancel left
    ``requested`` (no answer, partner down) is sent again by the reconciler. Returns the
    row, or ``None`` when the partner was never asked for one.
    """
    found = (
        PartnerApplicationRecord.objects.filter(
            account=account, reference_type=reference_type, reference_id=reference_id
        )
        .order_by("-id")
        .first()
    )
    if found is None:
        return None
    nothing_funded = (PartnerApplicationStatus.DECLINED, PartnerApplicationStatus.FAILED)
    with transaction.atomic(durable=True):
        record = PartnerApplicationRecord.objects.select_for_update(no_key=True).get(pk=found.pk)
        if record.cancel_state not in (PartnerCancelState.NONE, PartnerCancelState.REQUESTED):
            return record
        if record.status == PartnerApplicationStatus.CANCELLED:
            return record
        now = clock.now()
        if record.cancel_state == PartnerCancelState.NONE:
            record.cancel_reason = reason
            record.cancel_requested_at = now
            _cancel_state_set(record, PartnerCancelState.REQUESTED, note=reason)
        if record.status in nothing_funded:
            _cancel_state_set(record, PartnerCancelState.NOT_NEEDED)
        record.updated_at = now
        record.save(
            update_fields=["cancel_state", "cancel_reason", "cancel_requested_at", "updated_at"]
        )
        if record.cancel_state == PartnerCancelState.NOT_NEEDED:
            return record
    if not record.partner_reference:
        partner_application_reconcile(application_id=record.pk)
        record.refresh_from_db()
        if record.status in nothing_funded:
            with transaction.atomic(durable=True):
                record = PartnerApplicationRecord.objects.select_for_update(no_key=True).get(
                    pk=record.pk
                )
                if record.cancel_state == PartnerCancelState.REQUESTED:
                    _cancel_state_set(record, PartnerCancelState.NOT_NEEDED)
                    record.save(update_fields=["cancel_state"])
            return record
        if not record.partner_reference or record.cancel_state != PartnerCancelState.REQUESTED:
            return record  # not received yet, or settled meanwhile
    client = partner_client_for(account)
    reference, key = record.partner_reference, f"{record.idempotency_key}:cancel"
    try:
        answer = _call(
            account,
            lambda: client.cancel_application(
                partner_reference=reference, reason=reason, idempotency_key=key
            ),
        )
    except (GatewayTechnicalError, CircuitOpen):
        return record  # still requested: the reconciler asks again
    if answer.outcome == CancelOutcome.UNKNOWN:
        return record
    if answer.outcome == CancelOutcome.REFUSED and answer.application is not None:
        # What the partner states (e.g. approved and funded) is recorded first, as any
        # report would be: an open row is decided, a decided one keeps it as ignored.
        with transaction.atomic(durable=True):
            _record(application_id=record.pk, decision=answer.application, source="cancel")
    with transaction.atomic(durable=True):
        record = PartnerApplicationRecord.objects.select_for_update(no_key=True).get(pk=record.pk)
        if record.cancel_state != PartnerCancelState.REQUESTED:
            return record
        now = clock.now()
        fields = ["cancel_state", "updated_at"]
        if answer.outcome == CancelOutcome.CANCELLED:
            _cancel_state_set(record, PartnerCancelState.CANCELLED)
            record.status = PartnerApplicationStatus.CANCELLED
            record.partner_status = answer.application.status if answer.application else ""
            record.cancelled_at = now
            fields += ["status", "partner_status", "cancelled_at"]
        else:
            _cancel_state_set(
                record, PartnerCancelState.REFUSED, note=f"{answer.code} {answer.message}".strip()
            )
            funded = answer.application.funded_amount if answer.application else None
            if answer.outcome == CancelOutcome.NOT_FOUND:
                _flag(record, f"the partner has no application {reference} to cancel")
            elif funded is not None:
                record.funded_without_plan = True
                fields.append("funded_without_plan")
                _flag(
                    record,
                    f"the partner funded {funded} and refused to cancel ({answer.code}); "
                    "nothing it financed stands",
                )
            else:
                _flag(record, f"the partner refused to cancel ({answer.code})")
            fields += ["flagged", "flag_reason"]
        record.updated_at = now
        record.save(update_fields=fields)
    return record


def partner_decision_for(*, reference_type: str, reference_id: str) -> PartnerDecision | None:
    """The latest application's decision for what it finances, or ``None``."""
    record = (
        PartnerApplicationRecord.objects.filter(
            reference_type=reference_type, reference_id=reference_id
        )
        .order_by("-id")
        .first()
    )
    return partner_decision_of(record) if record else None
