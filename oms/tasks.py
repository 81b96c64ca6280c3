from celery import shared_task

from oms import services


@shared_task(name="oms.settle_split_orders", acks_late=True)
def settle_split_orders() -> int:
    """Settle wallet + card orders still new; idempotent."""
    return services.split_orders_settle()


@shared_task(name="oms.expire_provider_holds", acks_late=True)
def expire_provider_holds() -> int:
    """Cancel orders held too long for a Klarna or Afterpay decision; idempotent."""
    return services.provider_holds_expire()


@shared_task(name="oms.settle_down_payments", acks_late=True)
def settle_down_payments() -> int:
    """Cancel installment orders whose down payment ended declined; idempotent."""
    return services.down_payments_settle()
