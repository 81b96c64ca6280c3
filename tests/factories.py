"""Test data, built through the services wherever the product has one."""

from __future__ import annotations

import itertools
from decimal import Decimal

import factory
from rest_framework.authtoken.models import Token

from core import clock
from core.money import Money
from customers.models import Customer
from customers.services import customer_create
from oms.models import Channel, ChannelKind, Location, LocationKind, StockItem
from oms.services import channel_rotate_key
from payments.models import Provider, SavedPaymentMethod
from wallet.models import TransactionKind
from wallet.services import wallet_credit

_seq = itertools.count(1)


class ChannelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Channel
        django_get_or_create = ("code",)

    code = "web"
    name = factory.LazyAttribute(lambda o: o.code.title())
    kind = ChannelKind.WEB
    created_at = factory.LazyFunction(clock.now)


class LocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Location
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"loc-{n}")
    name = factory.LazyAttribute(lambda o: o.code)
    kind = LocationKind.WAREHOUSE
    priority = 10


class StockItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StockItem

    sku = factory.Sequence(lambda n: f"SKU-{n}")
    location = factory.SubFactory(LocationFactory)
    on_hand = 100


def make_customer(
    *, email: str | None = None, password: str = "correct-horse-battery", **kwargs
) -> Customer:
    return customer_create(
        email=email or f"customer{next(_seq)}@example.com", password=password, **kwargs
    )


def fund(customer: Customer, amount: str, currency: str = "EUR") -> None:
    wallet_credit(
        customer_id=customer.pk,
        amount=Money.parse(amount, currency),
        kind=TransactionKind.TOP_UP,
        idempotency_key=f"test-fund-{next(_seq)}",
    )


def saved_card(
    customer: Customer,
    token: str = "pm_card_visa",
    *,
    brand: str = "visa",
    last4: str = "4242",
    fingerprint: str = "",
) -> SavedPaymentMethod:
    """One of the customer's saved cards, written directly with a sandbox token (magic ones
    such as ``pm_decline`` script the processor). ``tests/payments/test_saved_methods.py``
    tokenizes real card details at the sandbox instead."""
    method, _ = SavedPaymentMethod.objects.get_or_create(
        processor=Provider.CARD,
        token=token,
        customer=customer,
        defaults={
            "brand": brand,
            "last4": last4,
            "exp_month": 12,
            "exp_year": clock.business_date().year + 3,
            "fingerprint": fingerprint,
            "created_at": clock.now(),
        },
    )
    return method


def saved_cards(customer: Customer, *tokens: str) -> None:
    for token in tokens:
        saved_card(customer, token)


def token_for(customer: Customer) -> str:
    return Token.objects.get_or_create(user=customer.user)[0].key


def channel_with_key(code: str, kind: ChannelKind) -> tuple[Channel, str]:
    channel = ChannelFactory(code=code, kind=kind)
    return channel, channel_rotate_key(channel_id=channel.pk)


def money(amount: str | Decimal, currency: str = "EUR") -> dict[str, str]:
    return {"amount": str(amount), "currency": currency}


def line(
    sku: str,
    quantity: int = 1,
    price: str = "10.00",
    tax: str = "0.00",
    currency: str = "EUR",
    **extra,
) -> dict:
    return {
        "sku": sku,
        "name": f"Item {sku}",
        "quantity": quantity,
        "unit_price": money(price, currency),
        "tax": money(tax, currency),
        **extra,
    }


def enable_wallet_bnpl(**overrides) -> None:
    """Switch wallet BNPL on for every KYC-approved customer (overrides change the rest)."""
    from wallet.bnpl import bnpl_settings
    from wallet.models import EligibilityMode

    conf = bnpl_settings()
    conf.enabled = True
    conf.eligibility_mode = EligibilityMode.ALL_KYC_APPROVED
    conf.min_order = 0
    for name, value in overrides.items():
        setattr(conf, name, value)
    conf.save()


def approve_kyc(customer: Customer) -> Customer:
    from customers.services import customer_kyc_approve

    return customer_kyc_approve(customer_id=customer.pk, actor=None, note="test")


def borrow(customer: Customer, amount: str, *, sku: str = "BNPL-SKU") -> int:
    """Give the customer a wallet BNPL debt of ``amount`` (balance must be zero) via checkout."""
    from oms.services import LineInput, order_checkout

    if not StockItem.objects.filter(sku=sku).exists():
        StockItemFactory(sku=sku, on_hand=10_000)
    order = order_checkout(
        customer=Customer.objects.get(pk=customer.pk),
        channel=ChannelFactory(code="web"),
        lines=[
            LineInput(
                sku=sku,
                name=sku,
                quantity=1,
                unit_price=Money.parse(amount, "EUR"),
                tax=Money.zero("EUR"),
            )
        ],
    )
    from wallet.models import WalletDebt

    return WalletDebt.objects.get(reference_type="oms.order", reference_id=str(order.pk)).pk
