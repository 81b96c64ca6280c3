from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db.models import Exists, F, OuterRef, Q, QuerySet, Sum

from core.money import Money
from payments.errors import PaymentMethodNotFound, PaymentMethodUnknown
from payments.models import (
    EventKind,
    Outcome,
    PaymentEvent,
    PaymentTransaction,
    Provider,
    SavedPaymentMethod,
)


@dataclass(frozen=True)
class PaymentAmounts:
    """What a transaction's succeeded events add up to. Never stored, always derived."""

    authorized: Money
    captured: Money
    refunded: Money
    cancelled: Money

    @property
    def capturable(self) -> Money:
        return self.authorized - self.captured - self.cancelled

    @property
    def refundable(self) -> Money:
        return self.captured - self.refunded

    @property
    def status(self) -> str:
        if self.refunded.is_positive() and self.refunded >= self.captured:
            return "refunded"
        if self.refunded.is_positive():
            return "partially_refunded"
        if self.captured.is_positive() and not self.capturable.is_positive():
            return "captured"
        if self.captured.is_positive():
            return "partially_captured"
        if self.cancelled.is_positive() and not self.capturable.is_positive():
            return "cancelled"
        if self.authorized.is_positive():
            return "authorized"
        return "pending"


def payment_amounts(transaction: PaymentTransaction) -> PaymentAmounts:
    """One aggregate query over the transaction's succeeded events."""
    succeeded = Q(outcome=Outcome.SUCCEEDED)
    # A fact in another currency is flagged for a person, never added in.
    sums = PaymentEvent.objects.filter(
        transaction=transaction, currency=transaction.currency
    ).aggregate(
        **{
            kind: Sum("amount", filter=succeeded & Q(kind=kind), default=0)
            for kind in EventKind.values
        }
    )
    currency = transaction.currency
    return PaymentAmounts(
        authorized=Money(sums[EventKind.AUTHORIZATION], currency),
        captured=Money(sums[EventKind.CAPTURE], currency),
        refunded=Money(sums[EventKind.REFUND], currency),
        cancelled=Money(sums[EventKind.CANCEL], currency),
    )


def pending_charge_exists(*, references: Mapping[str, Iterable[str]]) -> bool:
    """Whether a payment for one of ``references`` (reference type → reference ids) may
    still take money without being asked again; one query when none of them has a payment
    (the debit run's usual case), two otherwise.

    Such a payment has an authorization request on record and no final outcome yet: not a
    failed authorization, not a succeeded cancel, and, for a charge asked to capture at once
    (``detail.capture``: an off-session charge), no capture outcome; for a plain
    authorization, no authorization outcome. A charge under review, one whose answer never
    came (until ``payment_reconcile`` records it) and one approved but whose capture is not
    recorded yet are all pending.
    """
    match = Q()
    for reference_type, ids in references.items():
        ids = [str(i) for i in ids]
        if ids:
            match |= Q(reference_type=reference_type, reference_id__any=ids)
    if not match:
        return False
    # The references' payments first, by their index; the facts of those only. (Asked in
    # one statement, the planner may start from the facts instead: a scan of every payment
    # event there is, per call, wherever the table's statistics lag behind its growth.)
    payments = list(PaymentTransaction.objects.filter(match).values_list("pk", flat=True))
    if not payments:
        return False
    events = PaymentEvent.objects.filter(transaction=OuterRef("pk"))
    requested = events.filter(kind=EventKind.AUTHORIZATION, outcome=Outcome.REQUESTED)
    final = events.filter(
        Q(kind=EventKind.AUTHORIZATION, outcome=Outcome.FAILED)
        | Q(kind=EventKind.CANCEL, outcome=Outcome.SUCCEEDED)
        | Q(kind=EventKind.CAPTURE, outcome__in=(Outcome.SUCCEEDED, Outcome.FAILED))
    )
    authorized = events.filter(kind=EventKind.AUTHORIZATION, outcome=Outcome.SUCCEEDED)
    return (
        PaymentTransaction.objects.filter(pk__any=payments)
        .filter(Exists(requested))
        .exclude(Exists(final))
        .exclude(Exists(authorized) & ~Exists(requested.filter(detail__capture=True)))
        .exists()
    )


def enabled_account(provider: str):
    from payments.models import ProviderAccount

    return ProviderAccount.objects.filter(provider=provider, enabled=True).first()


def transaction_for(*, reference_type: str, reference_id: str, provider: str):
    return (
        PaymentTransaction.objects.select_related("account")
        .filter(
            reference_type=reference_type, reference_id=reference_id, account__provider=provider
        )
        .order_by("-id")
        .first()
    )


def account_refusal(account, *, amount: Money, categories: set[str]) -> str | None:
    """Why this provider account may not take this payment, or ``None`` if it may."""
    if amount.currency != account.currency:
        return f"{account} takes {account.currency}, not {amount.currency}."
    if account.min_order is not None and amount.minor < account.min_order:
        return f"{account} takes {Money(account.min_order, account.currency)} or more."
    if account.max_order is not None and amount.minor > account.max_order:
        return f"{account} takes at most {Money(account.max_order, account.currency)}."
    allowed = set(account.merchant_categories or [])
    if allowed and not categories <= allowed:
        return f"{account} does not serve {', '.join(sorted(categories - allowed))}."
    return None


def payment_methods_for_customer(*, customer_id: int) -> QuerySet[SavedPaymentMethod]:
    """The customer's saved payment methods that are not removed, newest first."""
    return SavedPaymentMethod.objects.filter(customer_id=customer_id, removed_at__isnull=True)


def payment_method_for_customer(*, customer_id: int, method_id: int) -> SavedPaymentMethod:
    """One of the customer's own saved methods (not removed); another's is a 404."""
    method = payment_methods_for_customer(customer_id=customer_id).filter(pk=method_id).first()
    if method is None:
        raise PaymentMethodNotFound()
    return method


def payment_method_saved(*, customer_id, token, processor: str = Provider.CARD) -> Exists:
    """Whether ``token`` is a saved method of ``customer_id``, not removed, as an ``Exists``
    (either may be an ``OuterRef``): set-based reads, such as the debit run's claim, check a
    token's owner with it in the query they already make."""
    return Exists(
        SavedPaymentMethod.objects.filter(
            processor=processor, token=token, customer_id=customer_id, removed_at__isnull=True
        )
    )


def payment_method_owned(
    *,
    customer_id: int,
    token: str,
    field: str,
    lock: bool = False,
    processor: str = Provider.CARD,
    message: str = "Not one of your saved payment methods (GET /api/v1/payment-methods).",
) -> SavedPaymentMethod:
    """The customer's own saved method with ``token``, not removed; else
    ``payments.payment_method_unknown`` on ``field`` (another customer's token reads the
    same as one nobody saved). ``lock`` takes its row lock (after the plan's)."""
    rows = SavedPaymentMethod.objects.filter(
        processor=processor, token=token, customer_id=customer_id, removed_at__isnull=True
    )
    method = (rows.select_for_update(no_key=True) if lock else rows).first()
    if method is None:
        raise PaymentMethodUnknown(message, fields={field: [message]})
    return method


def payment_invariant_problems(limit: int) -> list[str]:
    """Payment transactions' invariants, registered with ``ledger.invariants`` (see
    apps.py): what succeeded never refunds more than it captured, nor captures more than
    it authorized."""
    succeeded = Q(events__outcome=Outcome.SUCCEEDED, events__currency=F("currency"))

    def total(kind: str) -> Sum:
        return Sum("events__amount", filter=succeeded & Q(events__kind=kind), default=0)

    rows = (
        PaymentTransaction.objects.annotate(
            authorized=total(EventKind.AUTHORIZATION),
            captured=total(EventKind.CAPTURE),
            refunded=total(EventKind.REFUND),
        )
        .filter(Q(refunded__gt=F("captured")) | Q(captured__gt=F("authorized")))
        .order_by("pk")
        .values_list("pk", "authorized", "captured", "refunded")[:limit]
    )
    return [
        f"payment #{pk} authorized {authorized}, captured {captured}, refunded {refunded}"
        for pk, authorized, captured, refunded in rows
    ]


def webhook_url(provider: str) -> str:
    """Where a provider sends its notifications, as registered with it: the public URL
    (``PUBLIC_BASE_URL``), which a signature covering the URL (Afterpay's) is checked against."""
    from django.conf import settings
    from django.urls import reverse

    return settings.PUBLIC_BASE_URL.rstrip("/") + reverse("payments-webhook", args=[provider])
