from __future__ import annotations

from django.db.models import QuerySet

from customers.models import Customer
from wallet.models import Wallet


def wallets_for_customer(*, customer: Customer) -> QuerySet[Wallet]:
    return Wallet.objects.filter(customer=customer).select_related("account").order_by("currency")
