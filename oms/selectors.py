from __future__ import annotations

from django.db.models import F, Prefetch, Q, QuerySet

from customers.models import Customer
from oms.errors import OrderNotFound
from oms.models import Channel, Dispute, Order, OrderLine, OrderStatus


def orders_with_details() -> QuerySet[Order]:
    """Orders with what the API shows: channel, lines, credit decision, plan, disputes."""
    return Order.objects.select_related(
        "channel", "credit_application", "credit_application__plan"
    ).prefetch_related(
        Prefetch("lines", queryset=OrderLine.objects.order_by("line_no")),
        Prefetch("disputes", queryset=Dispute.objects.order_by("opened_at", "pk")),
    )


def orders_for_caller(*, customer: Customer, channel: Channel | None) -> QuerySet[Order]:
    """The caller's orders; a channel key sees only what its own channel placed."""
    orders = orders_with_details().filter(customer=customer)
    if channel is not None:
        orders = orders.filter(channel=channel)
    return orders


def order_for_caller(*, customer: Customer, channel: Channel | None, order_id: int) -> Order:
    try:
        return orders_for_caller(customer=customer, channel=channel).get(pk=order_id)
    except Order.DoesNotExist:
        raise OrderNotFound() from None


def channel_for_customer_request(code: str) -> Channel | None:
    return Channel.objects.filter(code=code, active=True).first()


def order_invariant_problems(limit: int) -> list[str]:
    """Orders' invariants, registered with ``ledger.invariants`` (see apps.py): an order
    refunds only after it was fulfilled (paid), and never more than its total."""
    rows = (
        Order.objects.filter(refunded__gt=0)
        .filter(Q(refunded__gt=F("total")) | ~Q(status=OrderStatus.FULFILLED))
        .order_by("pk")
        .values_list("pk", "status", "refunded", "total")[:limit]
    )
    return [
        f"order #{pk} ({status}) refunded {refunded} of {total}"
        for pk, status, refunded, total in rows
    ]
