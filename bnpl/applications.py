"""Credit applications: the dual authorization behind an order paid in installments.

Life of an application (``bnpl.models.ApplicationStatus``):

- ``application_submit`` writes it ``pending`` in the caller's transaction (the one that
  puts the order on hold), with ``expires_at = now + settings.BNPL_DECISION_TIMEOUT``.
- ``application_decide`` runs the decision once that transaction has committed. The
  product's decider says who decides:

  - **internal** — ``bnpl.underwriting.credit_decide``: ``approve`` creates the plan
    (``bnpl.services.plan_create``), ``decline`` records the reasons, ``review`` puts the
    application in the admin's review queue, where ``application_review`` (a staff member,
    audited, the reviewer recorded) approves or declines it.
  - **partner** — the application goes to the lending partner through
    ``payments.lending.partner_application_submit``. Its final decision comes back through
    ``payments.events.register_partner_decision`` (``partner_decision_received``), whatever
    route brings it: the submit's answer, the partner's signed webhook for a ``referred``
    application, or the reconciler. Approval creates a plan on the partner's terms, funded
    by the partner (``funded_by=partner``, its reference kept).

- ``application_expire`` (the periodic job ``bnpl.expire_applications``) ends an
  application still open at ``expires_at``; ``application_withdraw`` ends it when the order
  is cancelled.

The owner of what an application finances (oms, for ``("oms.order", id)``) is a higher
layer: it registers ``register_owner(reference_type, settle)`` at start-up. Every decision
is applied through ``settle(reference_id=…, apply=…)``: the owner opens one durable
transaction, locks its own rows first (customer → wallet → order), calls ``apply()``
exactly once — which locks the application, records the decision and creates the plan —
and updates its rows from the application ``apply()`` returns (hold released, or order
cancelled). So the order, the application and the plan change together, in the documented
lock order. Without an owner the decision is applied in a transaction of its own.

Applying a decision is idempotent: an application no longer open is left as it is.

A partner's application that ends while still open at the partner (withdrawn, expired) is
cancelled at the partner after commit (the task ``bnpl.cancel_partner_application`` →
``application_partner_cancel``); so is one the partner approves after it ended, so no
funding stands without a plan. A partner that refuses because it already funded the
merchant is audited (``bnpl.partner_funded_without_plan``) and flagged for finance on its
``payments.PartnerApplication``; no ledger entry is invented for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction

from bnpl import signals
from bnpl.errors import (
    AmountOutsideProductLimits,
    ApplicationNotFound,
    ApplicationNotOpen,
    ProductCurrencyMismatch,
    UnknownProduct,
)
from bnpl.models import (
    ApplicationStatus,
    CreditApplication,
    DebitRequest,
    DebitRequestStatus,
    Decider,
    Installment,
    InstallmentStatus,
    Plan,
    PlanProduct,
    PlanStatus,
    Promotion,
)
from bnpl.pricing import DOWN_NONE, INTEREST_DECLINING, INTEREST_ZERO, Terms, price_schedule
from bnpl.selectors import income_aligned_due_dates
from bnpl.services import plan_create
from bnpl.underwriting import APPROVE, DECLINE, credit_decide
from core import clock
from core.audit import audit_record
from core.models import AuditEntry
from core.money import Money
from customers.models import Customer
from ledger.models import JournalEntry
from ledger.services import ledger_reverse
from payments.adapters.lending_partner import (
    PartnerApplication,
    PartnerCustomer,
    PartnerDecision,
    PartnerDecisionKind,
    PartnerLine,
    PartnerTerms,
    RequestedProduct,
)
from payments.lending import partner_application_cancel, partner_application_submit

log = logging.getLogger(__name__)

# The reference a lending partner knows an application by: "bnpl.credit_application:<id>".
PARTNER_REFERENCE = "bnpl.credit_application"
DEFAULT_DECISION_TIMEOUT = timedelta(hours=24)


def decision_timeout() -> timedelta:
    """How long an order may wait on hold for its credit decision."""
    return getattr(settings, "BNPL_DECISION_TIMEOUT", DEFAULT_DECISION_TIMEOUT)


# --- the owner hand-up ---------------------------------------------------------------


class Settle(Protocol):
    def __call__(self, *, reference_id: str, apply: Callable[[], CreditApplication]) -> None: ...


_owners: dict[str, Settle] = {}


def register_owner(reference_type: str, settle: Settle) -> None:
    """Called from the owner's ``AppConfig.ready`` (see the module docstring)."""
    _owners[reference_type] = settle


def has_owner(reference_type: str) -> bool:
    """Whether what a plan of this reference type finances is owned by a higher app."""
    return reference_type in _owners


def _settle(
    application: CreditApplication, apply: Callable[[], CreditApplication]
) -> CreditApplication:
    owner = _owners.get(application.reference_type)
    if owner is None:
        with transaction.atomic(durable=True):
            return apply()
    applied: list[CreditApplication] = []

    def once() -> CreditApplication:
        if applied:
            raise RuntimeError("apply() runs once per settle")
        applied.append(apply())
        return applied[0]

    owner(reference_id=application.reference_id, apply=once)
    if not applied:
        raise RuntimeError(f"the owner of {application.reference_type} did not apply")
    return applied[0]


def _locked(application_id: int) -> CreditApplication:
    return (
        CreditApplication.objects.select_for_update(no_key=True, of=("self",))
        .select_related("product")
        .get(pk=application_id)
    )


def _get(application_id: int) -> CreditApplication:
    try:
        return CreditApplication.objects.select_related(
            "product__partner_account", "customer__user"
        ).get(pk=application_id)
    except CreditApplication.DoesNotExist:
        raise ApplicationNotFound() from None


# --- submit ---------------------------------------------------------------------------


def product_for_application(*, code: str, amount: Money) -> PlanProduct:
    """The active product ``code`` if it may finance ``amount``; else a 400 naming why."""
    product = PlanProduct.objects.filter(code=code, active=True).first()
    if product is None:
        raise UnknownProduct(fields={"plan_product": [f"No active product {code!r}."]})
    if product.currency != amount.currency:
        raise ProductCurrencyMismatch(
            f"{product.code} is offered in {product.currency}, the order is in {amount.currency}.",
            fields={"plan_product": [f"Offered in {product.currency} only."]},
        )
    low, high = (
        Money(product.min_amount, product.currency),
        Money(product.max_amount, product.currency),
    )
    if not low <= amount <= high:
        raise AmountOutsideProductLimits(
            f"{product.code} finances {low} to {high}; the order is {amount}.",
            fields={"plan_product": [f"Finances {low} to {high}."]},
        )
    return product


def application_submit(
    *,
    customer: Customer,
    product: PlanProduct,
    terms: Terms,
    amount: Money,
    reference_type: str,
    reference_id: str,
    payment_method: str,
    lines: Sequence[dict[str, Any]] = (),
    promotion: Promotion | None = None,
    actor: Any = None,
) -> CreditApplication:
    """Write a pending application in the caller's transaction (the one holding the order).

    ``terms`` are the priced terms offered (the product's, after its promotion); ``lines``
    what is financed, amounts in minor units. The decision runs after commit
    (``application_decide``).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("application_submit runs in the transaction that holds the order")
    now = clock.now()
    application = CreditApplication.objects.create(
        customer=customer,
        product=product,
        promotion=promotion,
        reference_type=reference_type,
        reference_id=reference_id,
        currency=amount.currency,
        amount=amount.minor,
        terms=terms.to_json(),
        payment_method=payment_method,
        lines=list(lines),
        created_at=now,
        expires_at=now + decision_timeout(),
    )
    audit_record(
        actor=actor,
        action="bnpl.application_submitted",
        target=application,
        changes={
            "amount": str(amount),
            "product": product.code,
            "promotion": promotion.code if promotion else "",
            "reference": f"{reference_type}:{reference_id}",
        },
    )
    return application


# --- decide ---------------------------------------------------------------------------


def application_decide(*, application_id: int) -> CreditApplication:
    """Decide a pending application (internally or through the partner); idempotent.

    The internal decision reads the facts outside any lock (``credit_decide`` is
    read-only) and applies them under the owner's locks. Exposure counts the customer's
    other open applications, so two concurrent applications cannot both fit one limit.
    """
    application = _get(application_id)
    if application.status != ApplicationStatus.PENDING:
        return application
    if application.product.decider == Decider.PARTNER:
        return _partner_submit(application)
    decision = credit_decide(
        customer=application.customer,
        amount=application.amount_money,
        product=application.product,
        payment_method=application.payment_method,
        on=clock.now(),
        application_id=application.pk,
    )

    def apply() -> CreditApplication:
        locked = _locked(application_id)
        if locked.status != ApplicationStatus.PENDING:
            return locked
        locked.reasons = decision.reasons
        locked.score = decision.score
        locked.explanation = decision.explanation
        now = clock.now()
        if decision.outcome == APPROVE:
            locked.approve(at=now, decided_by=Decider.INTERNAL)
        elif decision.outcome == DECLINE:
            locked.decline(at=now, decided_by=Decider.INTERNAL)
        else:
            locked.refer_to_staff()
        locked.save()
        audit_record(
            action=f"bnpl.application_{decision.outcome}",
            target=locked,
            actor_label="credit decision",
            changes={
                "status": [ApplicationStatus.PENDING, locked.status],
                "score": decision.score,
                "reasons": [r["code"] for r in decision.reasons],
            },
        )
        _after_decision(locked)
        return locked

    return _settle(application, apply)


def _after_decision(application: CreditApplication, *, actor: Any = None) -> None:
    """Create the plan of an approved application; tell integrators about a decline."""
    if application.status == ApplicationStatus.APPROVED:
        funded_by = application.decided_by or Decider.INTERNAL
        start = clock.business_date()
        plan_create(
            application=application,
            start_date=start,
            due_dates=_income_aligned_dates(application, start)
            if funded_by != Decider.PARTNER
            else None,
            funded_by=funded_by,
            partner_reference=application.partner_reference,
            actor=actor,
        )
    elif application.status in (ApplicationStatus.DECLINED, ApplicationStatus.EXPIRED):
        reasons = list(application.reasons)
        transaction.on_commit(
            lambda: signals.plan_declined.send(
                sender=CreditApplication, application=application, reasons=reasons
            )
        )


def _income_aligned_dates(application: CreditApplication, start: date) -> list[date] | None:
    """Due dates after the customer's income days, when the product is cash-flow aware and
    the customer opted in (``bnpl.selectors.income_aligned_due_dates``); else ``None``.
    A partner's plan keeps the partner's dates."""
    schedule = price_schedule(
        terms=Terms.from_json(application.terms),
        amount=application.amount_money,
        start_date=start,
    )
    return income_aligned_due_dates(
        customer=application.customer, product=application.product, schedule=schedule
    )


# --- staff review ---------------------------------------------------------------------


def application_review(
    *, application_id: int, approve: bool, reviewer: Any, note: str = ""
) -> CreditApplication:
    """A staff member decides an application in the review queue. Audited.

    Approval creates the plan as an internal approval would; a decline adds the reviewer's
    note as the reason ``staff_declined``. An application that is not in review is
    ``bnpl.application_not_open``.
    """
    application = _get(application_id)

    def apply() -> CreditApplication:
        locked = _locked(application_id)
        if locked.status != ApplicationStatus.REVIEW:
            raise ApplicationNotOpen(
                f"Application #{locked.pk} is {locked.status}, not in review.",
                extra={"status": locked.status},
            )
        now = clock.now()
        locked.reviewer = reviewer if getattr(reviewer, "is_authenticated", False) else None
        if approve:
            locked.approve(at=now, decided_by=Decider.INTERNAL)
        else:
            locked.reasons = [
                *locked.reasons,
                {"code": "staff_declined", "message": note or "Declined on review."},
            ]
            locked.decline(at=now, decided_by=Decider.INTERNAL)
        locked.save()
        audit_record(
            actor=reviewer,
            action="bnpl.application_reviewed",
            target=locked,
            changes={
                "status": [ApplicationStatus.REVIEW, locked.status],
                "approved": approve,
            },
            note=note,
        )
        _after_decision(locked, actor=reviewer)
        return locked

    return _settle(application, apply)


# --- expiry and withdrawal ------------------------------------------------------------


def application_expire(*, application_id: int) -> CreditApplication:
    """End an application still open past ``expires_at``; the owner releases the hold."""
    application = _get(application_id)
    if application.status not in CreditApplication.OPEN:
        return application

    def apply() -> CreditApplication:
        locked = _locked(application_id)
        now = clock.now()
        if locked.status not in CreditApplication.OPEN or locked.expires_at > now:
            return locked
        before = locked.status
        waited = decision_timeout()
        locked.reasons = [
            *locked.reasons,
            {
                "code": "decision_timeout",
                "message": f"No credit decision within {waited} (was {before}).",
            },
        ]
        locked.expire(at=now)
        locked.save()
        audit_record(
            action="bnpl.application_expired",
            target=locked,
            actor_label="decision timeout",
            changes={"status": [before, locked.status]},
        )
        _partner_cancel_on_commit(locked, reason=f"The credit decision timed out (was {before}).")
        _after_decision(locked)
        return locked

    return _settle(application, apply)


def applications_due(*, now=None, limit: int = 10_000) -> dict[str, list[int]]:
    """Ids of open applications past their expiry, and of pending ones left undecided for
    five minutes (a crash between the hold and the decision)."""
    now = now or clock.now()
    expired = list(
        CreditApplication.objects.filter(status__in=CreditApplication.OPEN, expires_at__lte=now)
        .order_by("expires_at", "id")
        .values_list("id", flat=True)[:limit]
    )
    stale = list(
        CreditApplication.objects.filter(
            status=ApplicationStatus.PENDING,
            created_at__lte=now - timedelta(minutes=5),
            expires_at__gt=now,
        )
        .order_by("created_at", "id")
        .values_list("id", flat=True)[:limit]
    )
    return {"expire": expired, "decide": stale}


def application_withdraw(
    *, application_id: int, reason: str, actor: Any = None
) -> CreditApplication:
    """Withdraw an open application in the caller's transaction (its order is cancelled).

    The caller holds the owner's locks. An application already decided is returned as
    it is: the caller looks at its status.
    """
    locked = _locked(application_id)
    if locked.status not in CreditApplication.OPEN:
        return locked
    before = locked.status
    locked.reasons = [*locked.reasons, {"code": "withdrawn", "message": reason[:255]}]
    locked.withdraw(at=clock.now())
    locked.save()
    audit_record(
        actor=actor,
        action="bnpl.application_withdrawn",
        target=locked,
        changes={"status": [before, locked.status]},
        note=reason,
    )
    _partner_cancel_on_commit(locked, reason=f"Withdrawn: {reason}"[:255])
    return locked


# --- the lending partner --------------------------------------------------------------


def _partner_application(application: CreditApplication) -> PartnerApplication:
    currency = application.currency
    customer = application.customer
    lines = tuple(
        PartnerLine(
            sku=str(line["sku"]),
            name=str(line.get("name", line["sku"])),
            quantity=int(line["quantity"]),
            unit_price=Money(int(line["unit_price"]), currency),
            total=Money(int(line["total"]), currency),
            merchant_category=str(line.get("merchant_category", "")),
        )
        for line in application.lines
    ) or (
        PartnerLine(
            sku=application.reference_type,
            name=f"{application.reference_type} {application.reference_id}",
            quantity=1,
            unit_price=application.amount_money,
            total=application.amount_money,
        ),
    )
    product = application.product
    return PartnerApplication(
        amount=application.amount_money,
        customer=PartnerCustomer(
            id=str(customer.pk),
            email=customer.user.email,
            tier=customer.tier,
            kyc="verified" if customer.is_kyc_approved else customer.kyc_status,
        ),
        lines=lines,
        product=RequestedProduct(
            code=product.code,
            installment_count=product.installment_count,
            frequency=str(product.frequency),
        ),
    )


def _partner_submit(application: CreditApplication) -> CreditApplication:
    """Send the application to the product's partner (outside any transaction).

    A final answer is applied by ``partner_decision_received`` as soon as it is recorded;
    ``referred`` moves the application to wait for the partner's webhook; ``unknown``
    leaves it pending (the payments reconciler reads it back).
    """
    decision = partner_application_submit(
        account=application.product.partner_account,
        reference_type=PARTNER_REFERENCE,
        reference_id=str(application.pk),
        application=_partner_application(application),
        idempotency_key=f"bnpl:application:{application.pk}:partner",
    )
    if decision.decision == PartnerDecisionKind.REFERRED:
        with transaction.atomic(durable=True):
            locked = _locked(application.pk)
            if locked.status == ApplicationStatus.PENDING:
                locked.refer_to_partner(partner_reference=decision.partner_reference or "")
                locked.save()
                audit_record(
                    action="bnpl.application_referred",
                    target=locked,
                    actor_label="lending partner",
                    changes={"status": [ApplicationStatus.PENDING, locked.status]},
                )
    return _get(application.pk)


_ENDED = (ApplicationStatus.EXPIRED, ApplicationStatus.CANCELLED)


def _partner_cancel_on_commit(application: CreditApplication, *, reason: str) -> None:
    """After commit, have the partner cancel an application that ended before its decision
    (only a partner-decided one: an internal decision has nobody to tell)."""
    if application.product.decider != Decider.PARTNER or application.status not in _ENDED:
        return
    from bnpl.tasks import cancel_partner_application

    application_id = application.pk
    transaction.on_commit(lambda: cancel_partner_application.delay(application_id, reason))


def application_partner_cancel(*, application_id: int, reason: str) -> CreditApplication:
    """Cancel at the partner an application that ended (expired or withdrawn); idempotent.

    Runs outside any transaction (the partner is called). A partner that refuses because
    it funded the merchant is audited once as ``bnpl.partner_funded_without_plan`` (its
    ``payments.PartnerApplication`` flagged ``funded_without_plan``): finance settles it
    with the partner; no plan and no ledger entry stand for it.
    """
    application = _get(application_id)
    account = application.product.partner_account
    if application.status not in _ENDED or account is None:
        return application
    record = partner_application_cancel(
        account=account,
        reference_type=PARTNER_REFERENCE,
        reference_id=str(application.pk),
        reason=reason,
    )
    if record is None or not record.funded_without_plan:
        return application
    with transaction.atomic(durable=True):
        locked = _locked(application.pk)
        already = AuditEntry.objects.filter(
            action="bnpl.partner_funded_without_plan",
            target_type=locked._meta.label_lower,
            target_id=str(locked.pk),
        ).exists()
        if not already:
            audit_record(
                action="bnpl.partner_funded_without_plan",
                target=locked,
                actor_label="lending partner",
                changes={
                    "status": locked.status,
                    "partner_application": record.pk,
                    "partner_reference": record.partner_reference,
                    "funded_amount": record.funded_amount,
                    "currency": record.currency,
                },
                note=record.flag_reason,
            )
    return locked


def partner_terms(base: Terms, terms: PartnerTerms) -> Terms:
    """The plan terms the partner approved, on top of the product's servicing terms.

    The partner's count, frequency, APR (declining-balance amortization when above 0) and
    fees replace the product's; there is no down payment (the partner funds it all). Late
    fees, refund and reschedule policy stay the product's.
    """
    return base.replace(
        installment_count=terms.installment_count,
        frequency=terms.frequency,
        apr=Decimal(terms.apr),
        interest_method=INTEREST_DECLINING if terms.apr > 0 else INTEREST_ZERO,
        origination_fee_flat=terms.origination_fee.minor,
        origination_fee_percent=Decimal(0),
        installment_fee=terms.installment_fee.minor,
        down_payment=DOWN_NONE,
        down_payment_percent=Decimal(0),
        promotion="",
    )


def partner_decision_received(reference_id: str, decision: PartnerDecision) -> None:
    """Registered with payments: the partner's final decision on an application."""
    if not reference_id.isdigit():
        return
    application = CreditApplication.objects.filter(pk=int(reference_id)).first()
    if application is None:
        return

    def apply() -> CreditApplication:
        locked = _locked(application.pk)
        if locked.status not in CreditApplication.OPEN:
            if decision.decision == PartnerDecisionKind.APPROVED:
                # The hold ended first (expired or withdrawn): nothing is financed.
                audit_record(
                    action="bnpl.partner_decision_ignored",
                    target=locked,
                    actor_label="lending partner",
                    changes={"status": locked.status, "decision": str(decision.decision)},
                    note="The partner approved after the application had ended.",
                )
                _partner_cancel_on_commit(
                    locked, reason=f"Approved after the application was {locked.status}."
                )
            return locked
        before = locked.status
        now = clock.now()
        locked.partner_reference = decision.partner_reference or locked.partner_reference
        if decision.decision == PartnerDecisionKind.APPROVED and decision.terms is not None:
            locked.terms = partner_terms(Terms.from_json(locked.terms), decision.terms).to_json()
            locked.approve(at=now, decided_by=Decider.PARTNER)
        elif decision.decision == PartnerDecisionKind.DECLINED:
            locked.reasons = [r.to_json() for r in decision.reasons] or [
                {"code": "partner_declined", "message": "The lending partner declined."}
            ]
            locked.decline(at=now, decided_by=Decider.PARTNER)
        else:
            locked.reasons = [
                {
                    "code": "partner_unavailable",
                    "message": "The lending partner could not decide: "
                    + (", ".join(r.code for r in decision.reasons) or str(decision.decision)),
                }
            ]
            locked.decline(at=now, decided_by=Decider.PARTNER)
        locked.save()
        audit_record(
            action="bnpl.application_partner_decided",
            target=locked,
            actor_label="lending partner",
            changes={
                "status": [before, locked.status],
                "partner_reference": locked.partner_reference,
                "reasons": [r["code"] for r in locked.reasons],
            },
        )
        _after_decision(locked)
        return locked

    _settle(application, apply)


# --- a down payment that failed -------------------------------------------------------


def plan_checkout_installment(*, plan: Plan) -> Installment | None:
    """The line charged at checkout (it has no debit request), if it is still unpaid."""
    return (
        plan.installments.filter(debit_request__isnull=True, status=InstallmentStatus.SCHEDULED)
        .order_by("number")
        .first()
    )


def plan_cancel_checkout_failed(*, plan_id: int, reason: str, actor: Any = None) -> Plan:
    """Cancel a plan whose down payment was declined, in the caller's transaction.

    Nothing was collected: the funding entries are reversed (the customer owes nothing,
    the merchant sold nothing), every installment and debit request is cancelled.
    Idempotent: a plan no longer active is left as it is. The caller holds the order lock.
    """
    plan = Plan.objects.select_for_update(no_key=True).get(pk=plan_id)
    if plan.status != PlanStatus.ACTIVE:
        return plan
    installments = list(
        Installment.objects.select_for_update(no_key=True).filter(plan=plan).order_by("number")
    )
    if any(i.paid for i in installments):
        raise ApplicationNotOpen(
            f"Plan #{plan.pk} has payments; it is cancelled by a refund, not here."
        )
    for entry in (
        JournalEntry.objects.filter(
            reference_type="bnpl.plan",
            reference_id=str(plan.pk),
            kind__in=("bnpl.plan_funded", "bnpl.partner_funded"),
            reversed_by__isnull=True,
        )
        .prefetch_related("postings")
        .order_by("-id")
    ):
        ledger_reverse(entry=entry, kind="bnpl.plan_cancelled", memo=reason)
    Installment.objects.filter(plan=plan).update(status=InstallmentStatus.CANCELLED)
    DebitRequest.objects.filter(plan=plan).update(
        status=DebitRequestStatus.CANCELLED, next_attempt_at=None
    )
    plan.cancel(at=clock.now())
    plan.save(update_fields=["status", "cancelled_at"])
    audit_record(
        actor=actor,
        action="bnpl.plan_cancelled",
        target=plan,
        changes={"status": [PlanStatus.ACTIVE, PlanStatus.CANCELLED]},
        note=reason,
    )
    return plan
