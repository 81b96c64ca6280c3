"""Every write to orders: checkout, cancellation, fulfilment, channel keys, stock counts.

Lock order (ARCHITECTURE.md): customer → wallet → stock items → order → … → ledger
accounts. Each service locks in that order and owns its transaction.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Sum

from bnpl.applications import (
    application_decide,
    application_submit,
    application_withdraw,
    decision_timeout,
    plan_cancel_checkout_failed,
    plan_checkout_installment,
    product_for_application,
)
from bnpl.errors import CancelRefused
from bnpl.models import ApplicationStatus, Installment, InstallmentStatus, Plan, PlanStatus
from bnpl.quoting import quote_product
from bnpl.services import INSTALLMENT_REFERENCE, installment_checkout_charge
from bnpl.servicing import plan_cancel_apply, plan_refund_apply
from bnpl.underwriting import customer_reasons
from core import clock
from core.audit import audit_record
from core.db import prefetch_rows, violated_constraint
from core.errors import ApplicationError
from core.idempotency import IdempotencyClaim
from core.money import MAX_MINOR, Money, allocate
from customers.models import Customer, Feature
from customers.services import customer_require_kyc_for
from oms import inventory, signals
from oms.errors import (
    CardDeclined,
    CardUnavailable,
    DuplicateExternalReference,
    InvalidOrder,
    InvalidTransition,
)
from oms.models import Channel, Order, OrderLine, OrderStatus, PaymentMethod, StockItem
from oms.selectors import orders_with_details
from payments.gateway import Decision, GatewayResult, GatewayTechnicalError
from payments.models import Provider
from payments.processing import (
    payment_authorize,
    payment_capture,
    payment_refund,
    payment_request_failed,
    payment_void,
)
from payments.reliability import CircuitOpen
from payments.selectors import (
    account_refusal,
    enabled_account,
    payment_amounts,
    payment_method_owned,
    transaction_for,
)
from wallet.models import TransactionKind, WalletTransaction
from wallet.services import (
    Funding,
    wallet_fund_order,
    wallet_get_or_create,
    wallet_lock,
    wallet_plan_funding,
    wallet_refund,
    wallet_refund_order,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineInput:
    sku: str
    name: str
    quantity: int
    unit_price: Money
    tax: Money
    merchant_category: str = ""

    @property
    def total(self) -> Money:
        return self.unit_price * self.quantity + self.tax


def _order_total(lines: Sequence[LineInput]) -> Money:
    if not lines:
        raise InvalidOrder("An order needs at least one line.", fields={"lines": ["Empty."]})
    currency = lines[0].unit_price.currency
    errors: dict[str, list[str]] = {}
    total = 0
    for index, line in enumerate(lines):
        for name, money in (("unit_price", line.unit_price), ("tax", line.tax)):
            if money.currency != currency:
                errors[f"lines.{index}.{name}.currency"] = [
                    f"Every amount of an order must be in {currency}."
                ]
        if errors:
            continue
        line_total = line.total.minor
        if line_total > MAX_MINOR:
            errors[f"lines.{index}"] = ["The line total is too large."]
        total += line_total
    if errors:
        raise InvalidOrder(fields=errors)
    if total > MAX_MINOR:
        raise InvalidOrder("The order total is too large.", fields={"lines": ["Total too large."]})
    return Money(total, currency)


@transaction.atomic(durable=True)
def _checkout(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    total: Money,
    payment_method: str,
    external_reference: str | None,
    renewal_of: Order | None,
    actor: AbstractBaseUser | None,
    idempotency: IdempotencyClaim | None,
) -> Order:
    wallet = wallet_lock(customer_id=customer.pk, currency=total.currency)
    if wallet is None:
        # A first purchase may be all BNPL: lock a wallet so the debt cap check serializes.
        wallet_get_or_create(customer=customer, currency=total.currency)
        wallet = wallet_lock(customer_id=customer.pk, currency=total.currency)
    # Refuse before touching stock: a short balance is borrowed only if BNPL allows it.
    funding = wallet_plan_funding(
        customer=customer,
        wallet=wallet,
        amount=total,
        categories={line.merchant_category for line in lines if line.merchant_category},
    )
    order = _place_order(
        customer=customer,
        channel=channel,
        lines=lines,
        total=total,
        payment_method=payment_method,
        external_reference=external_reference,
        renewal_of=renewal_of,
        actor=actor,
        confirm=True,
    )
    debt = wallet_fund_order(
        customer=customer,
        funding=funding,
        reference_type="oms.order",
        reference_id=str(order.pk),
        actor=actor,
    )
    audit_record(
        actor=actor,
        actor_label=f"channel:{channel.code}",
        action="oms.checkout",
        target=order,
        changes={
            "total": str(total),
            "lines": len(lines),
            "payment_method": payment_method,
            "borrowed": str(funding.borrowed) if debt else "0",
        },
    )
    if idempotency is not None:
        idempotency.complete(order)
    return order


def _place_order(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    total: Money,
    payment_method: str,
    external_reference: str | None,
    renewal_of: Order | None,
    actor: AbstractBaseUser | None,
    confirm: bool,
    hold: bool = False,
) -> Order:
    """Reserve the stock and write the order and its lines, in the caller's transaction.

    ``confirm``: the order is paid (confirmed); ``hold``: it waits on hold for a credit or
    provider decision; neither: it is new (a split payment's card is being asked).
    """
    now = clock.now()
    allocations = inventory.stock_allocate(demands=[(line.sku, line.quantity) for line in lines])
    if (
        external_reference
        and Order.objects.filter(channel=channel, external_reference=external_reference).exists()
    ):
        raise DuplicateExternalReference(fields={"external_reference": ["Already used."]})

    order = Order(
        customer=customer,
        channel=channel,
        external_reference=external_reference or None,
        currency=total.currency,
        total=total.minor,
        payment_method=payment_method,
        renewal_of=renewal_of,
        placed_by=actor if getattr(actor, "is_authenticated", False) else None,
        created_at=now,
    )
    if confirm:
        order.confirm(at=now)
    elif hold:
        order.hold()
    order.save()
    order_lines = OrderLine.objects.bulk_create(
        OrderLine(
            order=order,
            line_no=index + 1,
            sku=line.sku,
            name=line.name,
            quantity=line.quantity,
            unit_price=line.unit_price.minor,
            tax=line.tax.minor,
            total=line.total.minor,
            merchant_category=line.merchant_category,
        )
        for index, line in enumerate(lines)
    )
    inventory.stock_reserve(order=order, lines=order_lines, allocations=allocations)
    # Serializers read order.lines.all(); give them the rows just written. A new order
    # has no disputes yet.
    prefetch_rows(order, "lines", order_lines)
    prefetch_rows(order, "disputes", [])
    return order


def order_checkout(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    payment_method: str = PaymentMethod.WALLET,
    external_reference: str | None = None,
    renewal_of: Order | None = None,
    actor: AbstractBaseUser | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> Order:
    """Place an order and pay it in one transaction: reserve stock, debit the wallet.

    A short balance becomes a wallet BNPL debt when the customer is eligible. A renewal
    (``renewal_of``, a subscription's next order) follows the same rules.
    Refusals (``wallet.insufficient_balance``, ``oms.out_of_stock``, ``customers.kyc_required``,
    a reused external reference) write nothing.
    """
    if payment_method != PaymentMethod.WALLET:
        raise InvalidOrder(fields={"payment_method": [f"Unknown method {payment_method!r}."]})
    total = _order_total(lines)
    with _unique_external_reference():  # the gates are wallet_plan_funding's
        return _checkout(
            customer=customer,
            channel=channel,
            lines=lines,
            total=total,
            payment_method=payment_method,
            external_reference=external_reference,
            renewal_of=renewal_of,
            actor=actor,
            idempotency=idempotency,
        )


@contextmanager
def _unique_external_reference() -> Iterator[None]:
    """Turn a lost race for a channel's external reference into its stable error.

    The order's insert checks the reference first; a concurrent checkout that commits the
    same reference in between trips the unique constraint instead.
    """
    try:
        yield
    except IntegrityError as exc:
        if violated_constraint(exc) == "order_external_reference_unique_per_channel":
            raise DuplicateExternalReference(
                fields={"external_reference": ["Already used."]}
            ) from None
        raise


def _locked_order(order_id: int) -> tuple[Order, object]:
    """Lock customer (for a financed order), wallet, then order: the documented order, for
    a change that may refund. A financed order's plan services lock the customer too."""
    snapshot = Order.objects.only("customer_id", "currency", "payment_method").get(pk=order_id)
    if snapshot.payment_method == PaymentMethod.INSTALLMENTS:
        customer = Customer.objects.select_for_update(no_key=True).get(pk=snapshot.customer_id)
        wallet_get_or_create(customer=customer, currency=snapshot.currency)
    wallet = wallet_lock(customer_id=snapshot.customer_id, currency=snapshot.currency)
    order = Order.objects.select_for_update(no_key=True).get(pk=order_id)
    return order, wallet


def order_cancel(
    *, order_id: int, reason: str, actor: AbstractBaseUser | None = None, actor_label: str = ""
) -> Order:
    """Cancel a placed or confirmed order: release its stock and refund what it paid.

    A split order's wallet part is given back in the cancelling transaction; its card
    is voided (or refunded) after it, outside any lock.
    """
    order = _cancel(order_id=order_id, reason=reason, actor=actor, actor_label=actor_label)
    provider = _PROVIDER_OF.get(order.payment_method)
    if provider is not None:
        _release_card(order.pk, provider=provider)
    return order


@transaction.atomic(durable=True)
def _cancel(
    *, order_id: int, reason: str, actor: AbstractBaseUser | None, actor_label: str
) -> Order:
    order, wallet = _locked_order(order_id)
    if order.status not in (OrderStatus.NEW, OrderStatus.ON_HOLD, OrderStatus.CONFIRMED):
        raise InvalidTransition(f"A {order.status} order cannot be cancelled.")
    before = order.status
    was_paid = order.status == OrderStatus.CONFIRMED
    inventory.stock_release(order=order)
    order.cancel(at=clock.now(), reason=reason)
    order.save(update_fields=["status", "cancelled_at", "cancel_reason"])
    if was_paid and order.payment_method == PaymentMethod.WALLET:
        wallet_refund_order(
            wallet=wallet,
            amount=order.total_money,
            reference_type="oms.order",
            reference_id=str(order.pk),
            actor=actor,
            note=f"Order cancelled: {reason}",
        )
    elif order.payment_method == PaymentMethod.WALLET_CARD:
        _release_wallet_part(
            order=order, wallet=wallet, actor=actor, reason=f"Order cancelled: {reason}"
        )
    elif was_paid and order.payment_method == PaymentMethod.INSTALLMENTS:
        _cancel_plan(order=order, actor=actor, reason=f"Order cancelled: {reason}")
    elif order.credit_application_id is not None:
        application_withdraw(
            application_id=order.credit_application_id,
            reason=f"Order cancelled: {reason}",
            actor=actor,
        )
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="oms.cancel",
        target=order,
        changes={
            "status": [before, OrderStatus.CANCELLED],
            "refunded": str(order.total_money) if was_paid else "0",
        },
        note=reason,
    )
    _send_on_commit(signals.order_cancelled, order, reason=order.cancel_reason)
    return order


def _financed_plan(order: Order) -> Plan:
    return Plan.objects.get(reference_type="oms.order", reference_id=str(order.pk))


def _down_payment_unpaid(order: Order) -> bool:
    """Whether the financed order's checkout line (its down payment) is still owed: the one
    installment collected at checkout, which has no debit request of its own."""
    return Installment.objects.filter(
        plan__reference_type="oms.order",
        plan__reference_id=str(order.pk),
        debit_request__isnull=True,
        status__in=(InstallmentStatus.SCHEDULED, InstallmentStatus.OVERDUE),
    ).exists()


def _cancel_plan(*, order: Order, actor: AbstractBaseUser | None, reason: str) -> None:
    """End the plan of a financed order being cancelled, in the cancelling transaction.

    Before any installment was debited the plan is cancelled (the down payment, fees
    included, goes back to the wallet); after, what is left of the order is refunded
    through the plan: unpaid installments shrink, money already paid goes to the wallet.
    """
    plan = _financed_plan(order)
    if plan.status == PlanStatus.ACTIVE:
        try:
            with transaction.atomic():  # a savepoint: a refused cancel leaves nothing behind
                plan_cancel_apply(plan_id=plan.pk, actor=actor, reason=reason)
            return
        except CancelRefused:
            pass
    # Debited already, or paid off before shipping: refund what is left of the order.
    left = Money(plan.amount - plan.refunded_amount, plan.currency)
    if left.is_positive():
        plan_refund_apply(plan_id=plan.pk, amount=left, actor=actor, note=reason)


@dataclass(frozen=True)
class RefundLine:
    line_no: int
    quantity: int


def _refund_parts(
    order: Order, lines: Sequence[RefundLine] | None
) -> list[tuple[OrderLine, int, int]]:
    """(line, units, minor units) for each returned line; ``None`` returns all that is left.

    A line's total is split over its units with ``allocate``, and the k-th unit returned
    always gets the k-th part, so refunding every unit, in any number of returns, refunds
    exactly the line's total.
    """
    by_no = {line.line_no: line for line in order.lines.all()}
    if lines is None:
        lines = [
            RefundLine(line.line_no, line.quantity - line.refunded_quantity)
            for line in by_no.values()
            if line.quantity > line.refunded_quantity
        ]
        if not lines:
            raise InvalidOrder(
                "Every line of this order has been refunded.",
                code="oms.nothing_to_refund",
                fields={"lines": ["Nothing left to refund."]},
            )
    errors: dict[str, list[str]] = {}
    seen: set[int] = set()
    parts = []
    for index, item in enumerate(lines):
        line = by_no.get(item.line_no)
        if line is None:
            errors[f"lines.{index}.line_no"] = [f"The order has no line {item.line_no}."]
            continue
        if item.line_no in seen:
            errors[f"lines.{index}.line_no"] = ["Each line may appear once."]
            continue
        seen.add(item.line_no)
        left = line.quantity - line.refunded_quantity
        if not 1 <= item.quantity <= left:
            errors[f"lines.{index}.quantity"] = [f"Between 1 and {left} (units not yet returned)."]
            continue
        units = allocate(line.total, [1] * line.quantity)
        start = line.refunded_quantity
        parts.append((line, item.quantity, sum(units[start : start + item.quantity])))
    if errors:
        raise InvalidOrder(fields=errors)
    return parts


def order_refund(
    *,
    order_id: int,
    lines: Sequence[RefundLine] | None = None,
    reason: str,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
    idempotency: IdempotencyClaim | None = None,
) -> Order:
    """Refund returned lines of a fulfilled order (all that is left when ``lines`` is None).

    A financed order's plan is refunded in the same transaction (unpaid installments
    shrink, money already paid goes to the wallet: ``bnpl.servicing.plan_refund_apply``);
    a wallet order's money goes back to the wallet, settling its own wallet BNPL debt
    first. Orders paid by card or a provider are refunded at the provider, which this
    service does not call: they are refused with ``oms.refund_method_unsupported``.
    """
    return _refund(
        order_id=order_id,
        lines=lines,
        reason=reason,
        actor=actor,
        actor_label=actor_label,
        idempotency=idempotency,
    )


@transaction.atomic(durable=True)
def _refund(
    *,
    order_id: int,
    lines: Sequence[RefundLine] | None,
    reason: str,
    actor: AbstractBaseUser | None,
    actor_label: str,
    idempotency: IdempotencyClaim | None,
) -> Order:
    order, wallet = _locked_order(order_id)
    if order.status != OrderStatus.FULFILLED:
        raise InvalidTransition(
            f"A {order.status} order has nothing returned to refund; cancel it instead.",
            code="oms.not_fulfilled",
        )
    if order.payment_method not in (PaymentMethod.INSTALLMENTS, PaymentMethod.WALLET):
        raise InvalidTransition(
            "Orders paid by card or a provider are refunded at the provider.",
            code="oms.refund_method_unsupported",
        )
    parts = _refund_parts(order, lines)
    amount = Money(sum(minor for _, _, minor in parts), order.currency)
    returned = [{"line_no": line.line_no, "quantity": units} for line, units, _ in parts]
    for line, units, _ in parts:
        line.refunded_quantity += units
    OrderLine.objects.bulk_update([line for line, _, _ in parts], ["refunded_quantity"])
    order.refunded += amount.minor
    order.save(update_fields=["refunded"])
    note = f"Order #{order.pk} refunded: {reason}"
    if order.payment_method == PaymentMethod.INSTALLMENTS:
        plan_refund_apply(
            plan_id=_financed_plan(order).pk, amount=amount, lines=returned, actor=actor, note=note
        )
    else:
        wallet_refund_order(
            wallet=wallet,
            amount=amount,
            reference_type="oms.order",
            reference_id=str(order.pk),
            actor=actor,
            note=note,
        )
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="oms.refund",
        target=order,
        changes={
            "amount": str(amount),
            "lines": returned,
            "refunded": str(Money(order.refunded, order.currency)),
        },
        note=reason,
    )
    _send_on_commit(signals.order_refunded, order, amount=amount, lines=returned)
    refunded = _reload(order.pk)
    if idempotency is not None:
        idempotency.complete(refunded)
    return refunded


def order_fulfil(*, order_id: int, actor: AbstractBaseUser | None = None) -> Order:
    """Mark a confirmed order shipped: what a card or a provider authorized is captured
    first, then stock leaves."""
    method = (
        Order.objects.filter(pk=order_id, status=OrderStatus.CONFIRMED)
        .values_list("payment_method", flat=True)
        .first()
    )
    if method in _PROVIDER_OF:
        _capture_card_part(order_id, provider=_PROVIDER_OF[method])
    return _fulfil(order_id=order_id, actor=actor)


@transaction.atomic(durable=True)
def _fulfil(*, order_id: int, actor: AbstractBaseUser | None) -> Order:
    order = Order.objects.select_for_update(no_key=True).get(pk=order_id)
    if order.status != OrderStatus.CONFIRMED:
        raise InvalidTransition(f"A {order.status} order cannot be fulfilled.")
    if order.payment_method == PaymentMethod.INSTALLMENTS and _down_payment_unpaid(order):
        raise InvalidTransition(
            "The plan's down payment has not been paid yet: the order ships once it is.",
            code="oms.down_payment_unpaid",
        )
    inventory.stock_consume(order=order)
    order.fulfil(at=clock.now())
    order.save(update_fields=["status", "fulfilled_at"])
    audit_record(
        actor=actor,
        action="oms.fulfil",
        target=order,
        changes={"status": [OrderStatus.CONFIRMED, OrderStatus.FULFILLED]},
    )
    return order


# --- channels ---------------------------------------------------------------------------


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def channel_rotate_key(*, channel_id: int, actor: AbstractBaseUser | None = None) -> str:
    """Give a channel a new API key and return it; it is shown once and never stored."""
    channel = Channel.objects.select_for_update(no_key=True).get(pk=channel_id)
    prefix = secrets.token_hex(4)
    raw_key = f"ch_{prefix}_{secrets.token_urlsafe(32)}"
    channel.api_key_prefix = prefix
    channel.api_key_hash = hash_api_key(raw_key)
    channel.save(update_fields=["api_key_prefix", "api_key_hash"])
    audit_record(
        actor=actor,
        action="oms.channel_key_rotated",
        target=channel,
        changes={"api_key_prefix": prefix},
    )
    return raw_key


@transaction.atomic
def stock_set_on_hand(
    *, stock_item_id: int, on_hand: int, actor: AbstractBaseUser | None = None
) -> StockItem:
    """Record a stock count. Audited."""
    item, before = inventory.stock_adjust(stock_item_id=stock_item_id, on_hand=on_hand)
    audit_record(
        actor=actor, action="oms.stock_count", target=item, changes={"on_hand": [before, on_hand]}
    )
    return item


# --- split payment: wallet balance first, the rest on a card --------------------------


@transaction.atomic(durable=True)
def _split_begin(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    total: Money,
    card_payment_method: str,
    external_reference: str | None,
    renewal_of: Order | None,
    actor: AbstractBaseUser | None,
) -> tuple[Order, Money]:
    """Place the order unconfirmed and take the wallet part; returns (order, card part)."""
    wallet = wallet_lock(customer_id=customer.pk, currency=total.currency)
    balance = wallet.balance if wallet is not None else Money.zero(total.currency)
    from_wallet = min(balance, total)
    order = _place_order(
        customer=customer,
        channel=channel,
        lines=lines,
        total=total,
        payment_method=PaymentMethod.WALLET_CARD,
        external_reference=external_reference,
        renewal_of=renewal_of,
        actor=actor,
        confirm=False,
    )
    # Again under the card's lock (after the order's), so a removal and this checkout
    # serialize: the card is still the customer's when the order takes it.
    payment_method_owned(
        customer_id=customer.pk, token=card_payment_method, field="card_payment_method", lock=True
    )
    if from_wallet.is_positive():
        wallet_fund_order(
            customer=customer,
            funding=Funding(wallet, from_wallet, Money.zero(total.currency)),
            reference_type="oms.order",
            reference_id=str(order.pk),
            actor=actor,
        )
    audit_record(
        actor=actor,
        actor_label=f"channel:{channel.code}",
        action="oms.checkout",
        target=order,
        changes={
            "total": str(total),
            "from_wallet": str(from_wallet),
            "on_card": str(total - from_wallet),
        },
    )
    return order, total - from_wallet


def _release_wallet_part(
    *, order: Order, wallet, actor: AbstractBaseUser | None, reason: str
) -> Money:
    """Give a split order's wallet part back, exactly what it took; returns it. Like every
    credit, it repays the customer's open wallet BNPL debts first."""
    paid = (
        WalletTransaction.objects.filter(
            reference_type="oms.order", reference_id=str(order.pk), kind=TransactionKind.PAYMENT
        ).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    released = (
        WalletTransaction.objects.filter(
            reference_type="oms.order", reference_id=str(order.pk), kind=TransactionKind.REFUND
        ).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    owed = Money(paid - released, order.currency)
    if owed.is_positive():
        wallet_refund(
            wallet=wallet,
            amount=owed,
            reference_type="oms.order",
            reference_id=str(order.pk),
            actor=actor,
            note=reason,
        )
    return owed


@transaction.atomic(durable=True)
def _split_settle(
    *,
    order_id: int,
    approved: bool,
    reason: str,
    actor: AbstractBaseUser | None,
    idempotency: IdempotencyClaim | None,
) -> tuple[Order, bool]:
    """Confirm a new split order, or cancel it and give the wallet part back.

    Idempotent: an order already settled is left as it is. Returns (order, release the
    card): true when the card was approved for an order cancelled in the meantime.
    """
    order, wallet = _locked_order(order_id)
    now = clock.now()
    release_card = approved and order.status == OrderStatus.CANCELLED
    if order.status == OrderStatus.NEW and approved:
        order.confirm(at=now)
        order.save(update_fields=["status", "confirmed_at"])
        audit_record(
            actor=actor,
            action="oms.confirm",
            target=order,
            changes={"status": [OrderStatus.NEW, OrderStatus.CONFIRMED]},
        )
    elif order.status == OrderStatus.NEW:
        inventory.stock_release(order=order)
        order.cancel(at=now, reason=reason)
        order.save(update_fields=["status", "cancelled_at", "cancel_reason"])
        released = _release_wallet_part(order=order, wallet=wallet, actor=actor, reason=reason)
        audit_record(
            actor=actor,
            action="oms.cancel",
            target=order,
            changes={
                "status": [OrderStatus.NEW, OrderStatus.CANCELLED],
                "wallet_released": str(released),
            },
            note=reason,
        )
    if idempotency is not None:
        idempotency.complete(order)
    return order, release_card


def _finish_split(
    *,
    order_id: int,
    approved: bool,
    reason: str = "",
    actor: AbstractBaseUser | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> Order:
    order, release_card = _split_settle(
        order_id=order_id, approved=approved, reason=reason, actor=actor, idempotency=idempotency
    )
    if release_card:
        _release_card(order_id)
    return order


def split_order_card_settled(reference_id: str, approved: bool) -> None:
    """Registered with payments: an authorization for an order was decided.

    A split order is confirmed or cancelled (``_finish_split``); an order on hold for
    Klarna or Afterpay is released or cancelled (``_provider_settle``).
    """
    if not reference_id.isdigit():
        return
    order = (
        Order.objects.filter(pk=int(reference_id), payment_method__in=tuple(_PROVIDER_OF))
        .only("pk", "payment_method")
        .first()
    )
    if order is None:
        return
    if order.payment_method == PaymentMethod.WALLET_CARD:
        _finish_split(
            order_id=order.pk, approved=approved, reason="Card declined" if not approved else ""
        )
    else:
        _provider_settle(order_id=order.pk, approved=approved)


def order_checkout_split(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    card_payment_method: str,
    external_reference: str | None = None,
    renewal_of: Order | None = None,
    actor: AbstractBaseUser | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> Order:
    """Pay with the wallet balance first and authorize the rest on a card: one of the
    customer's saved cards (``payments.payment_method_unknown`` otherwise, nothing written).

    The card call happens between two short transactions, outside any lock, and the
    order is settled when the card's outcome is recorded, by whichever route it comes
    (this call's answer, the processor's webhook, the reconciler): confirmed, or
    cancelled with its stock released and the wallet part given back. A declined card
    raises ``payments.card_declined``; a pending or unanswered one leaves the order
    ``new`` (the answer, or ``oms.settle_split_orders``, settles it later). Once the
    order exists the idempotency key is completed with it, so a retry never places a
    second order.
    """
    total = _order_total(lines)
    customer_require_kyc_for(customer=customer, feature=Feature.WALLET_USAGE)
    account = enabled_account(Provider.CARD)
    if account is None:
        raise CardUnavailable()
    refusal = account_refusal(
        account,
        amount=total,
        categories={line.merchant_category for line in lines if line.merchant_category},
    )
    if refusal:
        raise CardUnavailable(refusal, fields={"payment_method": [refusal]})
    payment_method_owned(
        customer_id=customer.pk, token=card_payment_method, field="card_payment_method"
    )
    order, on_card = _split_begin(
        customer=customer,
        channel=channel,
        lines=lines,
        total=total,
        card_payment_method=card_payment_method,
        external_reference=external_reference,
        renewal_of=renewal_of,
        actor=actor,
    )
    if not on_card.is_positive():
        return _finish_split(order_id=order.pk, approved=True, actor=actor, idempotency=idempotency)
    result = _authorize_for_order(
        account=account,
        order_id=order.pk,
        amount=on_card,
        payment_method=card_payment_method,
        key=f"order:{order.pk}:card",
    )
    if result is None:
        _finish_split(
            order_id=order.pk, approved=False, actor=actor, reason="Card processor unavailable"
        )
        raise CardUnavailable(extra={"order_id": order.pk})
    if result.decision == Decision.DECLINED:
        reason = f"Card declined ({result.decline_code or 'no reason given'})"
        _finish_split(order_id=order.pk, approved=False, reason=reason, actor=actor)
        raise CardDeclined(extra={"order_id": order.pk, "decline_code": result.decline_code})
    if result.decision == Decision.APPROVED:
        return _finish_split(order_id=order.pk, approved=True, actor=actor, idempotency=idempotency)
    return _answer_pending(order_id=order.pk, idempotency=idempotency)


def _authorize_for_order(
    *, account, order_id: int, amount: Money, payment_method: str, key: str
) -> GatewayResult | None:
    """Authorize an order's payment, outside any lock.

    ``None``: the circuit was open, nothing reached the provider, and the request is
    recorded as failed (so the order's handler settles it). A technical failure is an
    unknown outcome: the reconciler asks the provider.
    """
    try:
        _, result = payment_authorize(
            account=account,
            reference_type="oms.order",
            reference_id=str(order_id),
            amount=amount,
            payment_method=payment_method,
            idempotency_key=key,
        )
    except CircuitOpen:
        payment_request_failed(
            reference_type="oms.order",
            reference_id=str(order_id),
            idempotency_key=key,
            reason="provider_unavailable",
        )
        return None
    except GatewayTechnicalError:
        return GatewayResult(Decision.UNKNOWN)
    return result


@transaction.atomic(durable=True)
def _answer_pending(*, order_id: int, idempotency: IdempotencyClaim | None) -> Order:
    """The card is pending or unanswered: the order stays new, and the key is used up."""
    order = Order.objects.get(pk=order_id)
    if idempotency is not None:
        idempotency.complete(order)
    return order


def _release_card(order_id: int, provider: str = Provider.CARD) -> None:
    """Void what the card (or provider) still holds for an order and refund what it
    captured (no lock)."""
    txn = transaction_for(reference_type="oms.order", reference_id=str(order_id), provider=provider)
    if txn is None or txn.provider_reference is None:
        return
    amounts = payment_amounts(txn)
    if amounts.capturable.is_positive():
        payment_void(transaction_id=txn.pk, idempotency_key=f"order:{order_id}:void")
    if amounts.refundable.is_positive():
        payment_refund(
            transaction_id=txn.pk,
            amount=amounts.refundable,
            idempotency_key=f"order:{order_id}:refund",
        )


def _capture_card_part(order_id: int, provider: str = Provider.CARD) -> None:
    """Before shipping, capture what the card (or provider) authorized (no lock held)."""
    txn = transaction_for(reference_type="oms.order", reference_id=str(order_id), provider=provider)
    if txn is None:
        return
    capturable = payment_amounts(txn).capturable
    if capturable.is_positive():
        # A new key after each definite failure, the same one while the outcome is unknown.
        attempt = txn.events.filter(kind="capture", outcome="failed").count() + 1
        result = payment_capture(
            transaction_id=txn.pk,
            amount=capturable,
            idempotency_key=f"order:{order_id}:capture:{attempt}",
        )
        if result.decision != Decision.APPROVED:
            raise CardDeclined(
                "The card capture failed; the order was not fulfilled.",
                extra={"order_id": order_id, "decline_code": result.decline_code},
            )


def split_orders_settle(*, older_than_minutes: int = 15, give_up_hours: int = 24) -> int:
    """Settle split orders still new: by the card's recorded outcome, or give up.

    Normally the outcome settles the order as it is recorded; this catches what a
    crash between the two transactions left behind. An order whose card never answered
    is cancelled after ``give_up_hours`` (its card released if it was approved after all).
    """
    now = clock.now()
    stale = Order.objects.filter(
        status=OrderStatus.NEW,
        payment_method=PaymentMethod.WALLET_CARD,
        created_at__lt=now - timedelta(minutes=older_than_minutes),
    )
    settled = 0
    for order_id, created_at in stale.values_list("pk", "created_at"):
        txn = transaction_for(
            reference_type="oms.order", reference_id=str(order_id), provider=Provider.CARD
        )
        outcomes = (
            set(txn.events.filter(kind="authorization").values_list("outcome", flat=True))
            if txn
            else set()
        )
        if "succeeded" in outcomes:
            _finish_split(order_id=order_id, approved=True)
        elif "failed" in outcomes or txn is None:
            _finish_split(order_id=order_id, approved=False, reason="Card not authorized")
        elif created_at < now - timedelta(hours=give_up_hours):
            _finish_split(order_id=order_id, approved=False, reason="Card never answered")
        else:
            continue
        settled += 1
    return settled


# --- orders on hold: installments (a credit decision), Klarna and Afterpay --------------

# The payment provider that holds an order's money, by payment method.
_PROVIDER_OF: dict[str, str] = {
    PaymentMethod.WALLET_CARD: Provider.CARD,
    PaymentMethod.KLARNA: Provider.KLARNA,
    PaymentMethod.AFTERPAY: Provider.AFTERPAY,
}


def _send_on_commit(signal, order: Order, **kwargs) -> None:
    transaction.on_commit(lambda: signal.send(sender=Order, order=order, **kwargs))


def _release_hold(*, order: Order, actor: AbstractBaseUser | None, actor_label: str) -> None:
    """Confirm a locked order on hold: its stock stays reserved, its payment is in place."""
    order.release_hold(at=clock.now())
    order.save(update_fields=["status", "confirmed_at"])
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="oms.hold_released",
        target=order,
        changes={"status": [OrderStatus.ON_HOLD, OrderStatus.CONFIRMED]},
    )
    _send_on_commit(signals.order_hold_released, order)


def _cancel_locked(
    *, order: Order, reason: str, actor: AbstractBaseUser | None, actor_label: str
) -> None:
    """Cancel a locked order that holds no wallet money: release its stock. Audited."""
    before = order.status
    inventory.stock_release(order=order)
    order.cancel(at=clock.now(), reason=reason)
    order.save(update_fields=["status", "cancelled_at", "cancel_reason"])
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="oms.cancel",
        target=order,
        changes={"status": [before, OrderStatus.CANCELLED], "refunded": "0"},
        note=reason,
    )
    _send_on_commit(signals.order_cancelled, order, reason=order.cancel_reason)


def _reload(order_id: int) -> Order:
    """The order as the API shows it (lines, channel, credit decision and plan)."""
    return orders_with_details().get(pk=order_id)


def order_checkout_installments(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    plan_product: str,
    card_payment_method: str,
    external_reference: str | None = None,
    renewal_of: Order | None = None,
    actor: AbstractBaseUser | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> Order:
    """Pay an order with an installment plan: hold the order, then decide the credit.

    1. Checks that write nothing: the lines, ``customers.kyc_required`` (when an admin put
       installments behind KYC), the product (``bnpl.unknown_product``,
       ``bnpl.product_currency_mismatch``, ``bnpl.amount_outside_limits``), a card processor
       when the terms charge a down payment, the card is one of the customer's saved cards
       (``payments.payment_method_unknown``).
    2. One durable transaction: the stock is reserved, the order is written ``on_hold`` and
       a pending credit application (the terms priced with the best promotion) points at it.
       The idempotency key is completed here, so a retry never places a second order.
    3. After commit, the decision runs in this request (``bnpl.applications.
       application_decide``): the internal decision answers at once, a lending partner
       answers or refers. The order comes back ``confirmed`` (plan created, down payment
       charged), ``cancelled`` (declined, with the reason) or still ``on_hold`` (staff
       review, a partner's referral): poll ``GET /api/v1/orders/{id}``.
    """
    total = _order_total(lines)
    customer_require_kyc_for(customer=customer, feature=Feature.INSTALLMENTS)
    product = product_for_application(code=plan_product, amount=total)
    quote = quote_product(
        customer=customer,
        product=product,
        amount=total,
        merchant_categories=[line.merchant_category for line in lines],
    )
    if quote.schedule.down_payment_line is not None and enabled_account(Provider.CARD) is None:
        raise CardUnavailable(
            "The down payment needs a card processor; none is available.",
            fields={"card_payment_method": ["Card payments are not available right now."]},
        )
    payment_method_owned(
        customer_id=customer.pk, token=card_payment_method, field="card_payment_method"
    )
    with _unique_external_reference():
        order = _hold_for_credit(
            customer=customer,
            channel=channel,
            lines=lines,
            total=total,
            quote=quote,
            card_payment_method=card_payment_method,
            external_reference=external_reference,
            renewal_of=renewal_of,
            actor=actor,
            idempotency=idempotency,
        )
    application_decide(application_id=order.credit_application_id)
    return _reload(order.pk)


@transaction.atomic(durable=True)
def _hold_for_credit(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    total: Money,
    quote,
    card_payment_method: str,
    external_reference: str | None,
    renewal_of: Order | None,
    actor: AbstractBaseUser | None,
    idempotency: IdempotencyClaim | None,
) -> Order:
    order = _place_order(
        customer=customer,
        channel=channel,
        lines=lines,
        total=total,
        payment_method=PaymentMethod.INSTALLMENTS,
        external_reference=external_reference,
        renewal_of=renewal_of,
        actor=actor,
        confirm=False,
        hold=True,
    )
    # Again under the card's lock (after the order's): a removal that committed since the
    # first check is seen, and one that comes later waits and then sees the application.
    payment_method_owned(
        customer_id=customer.pk, token=card_payment_method, field="card_payment_method", lock=True
    )
    application = application_submit(
        customer=customer,
        product=quote.product,
        terms=quote.terms,
        amount=total,
        reference_type="oms.order",
        reference_id=str(order.pk),
        payment_method=card_payment_method,
        lines=[
            {
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": line.unit_price.minor,
                "total": line.total.minor,
                "merchant_category": line.merchant_category,
            }
            for line in lines
        ],
        promotion=quote.promotion.promotion if quote.promotion else None,
        actor=actor,
    )
    order.credit_application = application
    order.save(update_fields=["credit_application"])
    audit_record(
        actor=actor,
        actor_label=f"channel:{channel.code}",
        action="oms.checkout",
        target=order,
        changes={
            "total": str(total),
            "lines": len(lines),
            "payment_method": PaymentMethod.INSTALLMENTS,
            "plan_product": quote.product.code,
            "promotion": quote.promotion.code if quote.promotion else "",
        },
    )
    if idempotency is not None:
        idempotency.complete(order)
    return order


def _credit_cancel_reason(application) -> str:
    """The order's cancel reason: what the customer may be told (no staff-only signals)."""
    shown = customer_reasons(status=application.status, reasons=application.reasons)
    codes = ", ".join(r["code"] for r in shown if r["code"])
    if application.status == ApplicationStatus.EXPIRED:
        return "No credit decision in time"
    if application.status == ApplicationStatus.DECLINED:
        return f"Credit declined ({codes or 'no reason given'})"
    return f"Credit application {application.status}"


def installments_settle(*, reference_id: str, apply) -> None:
    """Registered with bnpl as the owner of ``oms.order`` applications.

    One durable transaction, in the documented lock order: wallet → order (here), then the
    application and the plan (``apply``). An approval confirms the order on hold; a
    decline, an expiry or a withdrawal cancels it with the reason and releases its stock.
    After commit an approved plan's down payment is charged on the card; a declined
    charge cancels the plan and the order.
    """
    order_id = int(reference_id)
    with transaction.atomic(durable=True):
        order, _ = _locked_order(order_id)
        application = apply()
        approved_now = False
        if order.status == OrderStatus.ON_HOLD:
            if application.status == ApplicationStatus.APPROVED:
                _release_hold(order=order, actor=None, actor_label="credit decision")
                approved_now = True
            elif application.status not in application.OPEN:
                _cancel_locked(
                    order=order,
                    reason=_credit_cancel_reason(application),
                    actor=None,
                    actor_label="credit decision",
                )
    if approved_now:
        _charge_down_payment(order_id=order_id, application_id=application.pk)


def _charge_down_payment(*, order_id: int, application_id: int) -> None:
    """Charge an approved plan's down payment now (outside any lock).

    A declined charge cancels the plan and the order; an unanswered one is left to the
    payments reconciler (the installment is paid when the capture is recorded).
    """
    plan = Plan.objects.filter(application_id=application_id).first()
    installment = plan_checkout_installment(plan=plan) if plan is not None else None
    if installment is None:
        return
    try:
        result = installment_checkout_charge(installment_id=installment.pk)
    except CircuitOpen:
        result = GatewayResult(Decision.DECLINED, decline_code="provider_unavailable")
    except GatewayTechnicalError:
        return
    if result.decision == Decision.DECLINED:
        _down_payment_failed(
            order_id=order_id,
            plan_id=plan.pk,
            reason=f"Down payment declined ({result.decline_code or 'no reason given'})",
        )


@transaction.atomic(durable=True)
def _down_payment_failed(*, order_id: int, plan_id: int, reason: str) -> None:
    order, _ = _locked_order(order_id)
    plan_cancel_checkout_failed(plan_id=plan_id, reason=reason)
    if order.status == OrderStatus.CONFIRMED:
        _cancel_locked(order=order, reason=reason, actor=None, actor_label="down payment")


# --- Klarna and Afterpay: authorized at checkout, held while the provider reviews -------


def order_checkout_provider(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    provider: str,
    authorization_token: str,
    external_reference: str | None = None,
    renewal_of: Order | None = None,
    actor: AbstractBaseUser | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> Order:
    """Pay an order with Klarna or Afterpay: hold it, authorize, release on approval.

    The order is written ``on_hold`` (stock reserved, nothing captured) and committed; the
    provider is asked outside any transaction. Its outcome settles the order by whatever
    route it comes (this call's answer, a webhook, the reconciler) through the ``oms.order``
    payments hand-up: approved → ``confirmed``; declined → ``cancelled`` with the reason. A
    pending fraud review (Klarna's ``PENDING``) keeps the order on hold until the
    provider's notification. Capture happens at fulfilment, a cancellation voids.
    """
    total = _order_total(lines)
    account = enabled_account(provider)
    if account is None:
        raise CardUnavailable(
            f"{Provider(provider).label} is not available right now.",
            fields={"payment_method": ["Not available right now."]},
        )
    refusal = account_refusal(
        account,
        amount=total,
        categories={line.merchant_category for line in lines if line.merchant_category},
    )
    if refusal:
        raise CardUnavailable(refusal, fields={"payment_method": [refusal]})
    with _unique_external_reference():
        order = _hold_for_provider(
            customer=customer,
            channel=channel,
            lines=lines,
            total=total,
            payment_method=provider,
            external_reference=external_reference,
            renewal_of=renewal_of,
            actor=actor,
            idempotency=idempotency,
        )
    # The outcome reaches the order through the payments hand-up (an open circuit is a
    # failed authorization too); unknown stays on hold for the reconciler.
    _authorize_for_order(
        account=account,
        order_id=order.pk,
        amount=total,
        payment_method=authorization_token,
        key=f"order:{order.pk}:{provider}",
    )
    return _reload(order.pk)


@transaction.atomic(durable=True)
def _hold_for_provider(
    *,
    customer: Customer,
    channel: Channel,
    lines: Sequence[LineInput],
    total: Money,
    payment_method: str,
    external_reference: str | None,
    renewal_of: Order | None,
    actor: AbstractBaseUser | None,
    idempotency: IdempotencyClaim | None,
) -> Order:
    order = _place_order(
        customer=customer,
        channel=channel,
        lines=lines,
        total=total,
        payment_method=payment_method,
        external_reference=external_reference,
        renewal_of=renewal_of,
        actor=actor,
        confirm=False,
        hold=True,
    )
    audit_record(
        actor=actor,
        actor_label=f"channel:{channel.code}",
        action="oms.checkout",
        target=order,
        changes={"total": str(total), "lines": len(lines), "payment_method": payment_method},
    )
    if idempotency is not None:
        idempotency.complete(order)
    return order


def _provider_decline_reason(order: Order) -> str:
    provider = _PROVIDER_OF[order.payment_method]
    txn = transaction_for(reference_type="oms.order", reference_id=str(order.pk), provider=provider)
    detail = {}
    if txn is not None:
        failed = txn.events.filter(kind="authorization", outcome="failed").order_by("-id").first()
        detail = failed.detail if failed is not None else {}
    why = detail.get("decline_code") or str(detail.get("status", "")).lower() or "declined"
    return f"{Provider(provider).label} declined the payment ({why})"


def _provider_settle(*, order_id: int, approved: bool) -> None:
    """Release or cancel an order on hold for its provider's decision; idempotent.

    An approval that arrives for an order cancelled meanwhile is voided after commit.
    """
    with transaction.atomic(durable=True):
        order, _ = _locked_order(order_id)
        release = approved and order.status == OrderStatus.CANCELLED
        if order.status == OrderStatus.ON_HOLD and approved:
            _release_hold(order=order, actor=None, actor_label=f"provider:{order.payment_method}")
        elif order.status == OrderStatus.ON_HOLD:
            _cancel_locked(
                order=order,
                reason=_provider_decline_reason(order),
                actor=None,
                actor_label=f"provider:{order.payment_method}",
            )
    if release:
        _release_card(order_id, provider=_PROVIDER_OF[order.payment_method])


def provider_holds_expire() -> int:
    """Cancel orders held for Klarna or Afterpay past ``BNPL_DECISION_TIMEOUT``.

    The provider never decided: the stock goes back and the order is cancelled with the
    reason. An approval that still arrives later finds the order cancelled and is voided
    (``_provider_settle``). Returns how many orders were cancelled; idempotent.
    """
    cutoff = clock.now() - decision_timeout()
    cancelled = 0
    for order_id in Order.objects.filter(
        status=OrderStatus.ON_HOLD,
        payment_method__in=(PaymentMethod.KLARNA, PaymentMethod.AFTERPAY),
        created_at__lte=cutoff,
    ).values_list("pk", flat=True):
        with transaction.atomic(durable=True):
            order, _ = _locked_order(order_id)
            if order.status != OrderStatus.ON_HOLD:
                continue
            _cancel_locked(
                order=order,
                reason=f"No decision from {Provider(order.payment_method).label} in time",
                actor=None,
                actor_label="hold timeout",
            )
            cancelled += 1
    return cancelled


def down_payments_settle(*, older_than_minutes: int = 15, within_days: int = 7) -> int:
    """Finish the down payments checkout left open; returns how many orders were looked at.

    A down payment whose card answer was pending (a review) or never came is settled by the
    payments layer later; this job then acts on it: a charge that ended declined cancels the
    plan and the order, as at checkout; a charge never sent (a crash right after the
    approval) is sent now, under the same key. An unanswered one is left to the payments
    reconciler. Only orders confirmed between ``within_days`` and ``older_than_minutes``
    ago are looked at.
    """
    now = clock.now()
    candidates = (
        Order.objects.filter(
            status=OrderStatus.CONFIRMED,
            payment_method=PaymentMethod.INSTALLMENTS,
            confirmed_at__lte=now - timedelta(minutes=older_than_minutes),
            confirmed_at__gte=now - timedelta(days=within_days),
            credit_application__plan__status=PlanStatus.ACTIVE,
            credit_application__plan__installments__debit_request__isnull=True,
            credit_application__plan__installments__status=InstallmentStatus.SCHEDULED,
        )
        .values_list("pk", "credit_application_id")
        .distinct()
    )
    looked_at = 0
    for order_id, application_id in candidates:
        looked_at += 1
        plan = Plan.objects.get(application_id=application_id)
        installment = plan_checkout_installment(plan=plan)
        if installment is None:
            continue
        txn = transaction_for(
            reference_type=INSTALLMENT_REFERENCE,
            reference_id=str(installment.pk),
            provider=Provider.CARD,
        )
        if txn is None:
            _charge_down_payment(order_id=order_id, application_id=application_id)
            continue
        failed = txn.events.filter(kind="authorization", outcome="failed").order_by("-id").first()
        if failed is not None and not payment_amounts(txn).captured.is_positive():
            code = failed.detail.get("decline_code") or "declined"
            try:
                _down_payment_failed(
                    order_id=order_id, plan_id=plan.pk, reason=f"Down payment declined ({code})"
                )
            except ApplicationError:
                # Something was paid meanwhile: a person decides (plan servicing).
                log.exception("order %s: its down payment failed after a payment", order_id)
    return looked_at
