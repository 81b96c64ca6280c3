"""Demo data for ``make run``. Idempotent: running it again changes nothing."""

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token

from bnpl.models import PlanProduct, Promotion, PromotionKind
from core import clock
from core.money import Money
from customers.models import Customer, KycStatus
from customers.services import customer_create, customer_kyc_approve
from oms.models import Channel, ChannelKind, Location, LocationKind, Order, StockItem
from oms.services import LineInput, hash_api_key, order_checkout_installments
from payments.crypto import encrypt
from payments.methods import payment_method_record
from payments.models import Provider, ProviderAccount
from wallet.bnpl import bnpl_settings
from wallet.models import BnplWhitelistEntry, TransactionKind
from wallet.services import wallet_credit

ADMIN = ("admin", "admin")
FINANCE = ("finance", "finance")
CUSTOMERS = [
    # email, password, first name, KYC approved?, opening wallet balance (EUR)
    ("alice@example.com", "alice-demo-pass", "Alice", True, "500.00"),
    ("bob@example.com", "bob-demo-pass", "Bob", False, "40.00"),
]
# Saved cards (the payment sandbox's tokens; pm_decline and pm_review script its answer):
# email, token, brand, last4. A token is accepted only from the customer who saved it.
CARDS = [
    ("alice@example.com", "pm_card_visa", "visa", "4242"),
    ("alice@example.com", "pm_decline", "visa", "0002"),
    ("alice@example.com", "pm_review", "mastercard", "4444"),
    ("bob@example.com", "pm_card_bob", "visa", "1881"),
]
CHANNELS = [
    ("web", "Web shop", ChannelKind.WEB),
    ("app", "Mobile app", ChannelKind.APP),
    ("marketplace", "Marketplace", ChannelKind.MARKETPLACE),
    ("pos", "Stores (point of sale)", ChannelKind.POS),
    ("subscriptions", "Subscriptions", ChannelKind.SUBSCRIPTIONS),
]
LOCATIONS = [
    ("wh-central", "Central warehouse", LocationKind.WAREHOUSE, 10),
    ("store-amsterdam", "Amsterdam store", LocationKind.STORE, 20),
]
STOCK = [
    ("TEE-BLK-M", "wh-central", 120), ("TEE-BLK-M", "store-amsterdam", 10),
    ("HOODIE-GRY-L", "wh-central", 40), ("SNEAKER-WHT-42", "wh-central", 25),
    ("CAP-RED", "store-amsterdam", 5), ("MUG-LOGO", "wh-central", 300),
]  # fmt: skip
# Installment products: code, name, count, frequency, down payment, interest, APR (%).
PLAN_PRODUCTS = [
    ("pay-in-3", "Pay in 3 (0%)", 3, "monthly", "none", "zero", "0"),
    ("pay-in-4", "Pay in 4, every 2 weeks (first at checkout)", 4, "biweekly",
     "first_installment", "zero", "0"),
    ("finance-12", "12 monthly payments (19.99% APR)", 12, "monthly", "none", "declining",
     "19.99"),
]  # fmt: skip
# The payment sandbox's providers: provider, path under the sandbox, demo secret. The
# sandbox takes any credentials; the README's Afterpay example uses demo:ap_demo_sandbox.
SANDBOX_ACCOUNTS = [
    (Provider.CARD, "card", "sk_demo_sandbox"),
    (Provider.LENDING_PARTNER, "partner", "lp_demo_sandbox"),
    (Provider.KLARNA, "klarna", "kl_demo_sandbox"),
    (Provider.AFTERPAY, "afterpay", "ap_demo_sandbox"),
]
FINANCE_VIEW = ["ledger", "wallet", "oms", "customers", "core", "bnpl", "collections", "payments"]


def demo_api_key(code: str) -> str:
    """Fixed demo keys so the README can show a working curl; production rotates them.

    The part between the underscores is the key's lookup prefix, "demo" and at most nine
    characters of the code; the README lists each key (tests/oms/test_demo_channel_keys.py).
    """
    return f"ch_demo{code[:9]}_demo-key-{code}"


class Command(BaseCommand):
    help = "Load demo users, channels, stock, funded wallets and plans (idempotent)."

    def handle(self, *args, **options) -> None:
        user_model = get_user_model()
        now = clock.now()
        with transaction.atomic():
            admin_user = user_model.objects.filter(username=ADMIN[0]).first()
            if admin_user is None:
                admin_user = user_model.objects.create_superuser(
                    ADMIN[0], "admin@example.com", ADMIN[1]
                )
            finance_group, _ = Group.objects.get_or_create(name="finance")
            finance_group.permissions.set(
                Permission.objects.filter(
                    codename__startswith="view_", content_type__app_label__in=FINANCE_VIEW
                )
            )
            if not user_model.objects.filter(username=FINANCE[0]).exists():
                finance = user_model.objects.create_user(
                    FINANCE[0], "finance@example.com", FINANCE[1], is_staff=True
                )
                finance.groups.add(finance_group)
            for code, name, kind in CHANNELS:
                channel, _ = Channel.objects.get_or_create(
                    code=code, defaults={"name": name, "kind": kind, "created_at": now}
                )
                if not channel.api_key_hash:
                    key = demo_api_key(code)
                    channel.api_key_prefix = key.split("_")[1]
                    channel.api_key_hash = hash_api_key(key)
                    channel.save(update_fields=["api_key_prefix", "api_key_hash"])
            for code, name, kind, priority in LOCATIONS:
                Location.objects.get_or_create(
                    code=code, defaults={"name": name, "kind": kind, "priority": priority}
                )
            for sku, location, on_hand in STOCK:
                StockItem.objects.get_or_create(
                    sku=sku,
                    location=Location.objects.get(code=location),
                    defaults={"on_hand": on_hand},
                )

        for email, password, first_name, approved, opening in CUSTOMERS:
            customer = Customer.objects.filter(user__username=email).first()
            if customer is None:
                customer = customer_create(email=email, password=password, first_name=first_name)
            if approved and customer.kyc_status != KycStatus.APPROVED:
                customer_kyc_approve(customer_id=customer.pk, actor=admin_user, note="Demo data")
            wallet_credit(
                customer_id=customer.pk,
                amount=Money.parse(opening, "EUR"),
                kind=TransactionKind.TOP_UP,
                idempotency_key="demo-seed-opening",
                actor=admin_user,
                note="Demo opening balance",
            )
            Token.objects.get_or_create(user=customer.user)
        for email, token, brand, last4 in CARDS:
            payment_method_record(
                customer_id=Customer.objects.get(user__username=email).pk,
                token=token,
                brand=brand,
                last4=last4,
                exp_month=12,
                exp_year=now.year + 3,
            )

        # Wallet BNPL on, for a whitelisted pilot of one: alice. Settings an admin has
        # since changed are left alone.
        conf = bnpl_settings()
        if conf.updated_at is None:
            conf.enabled, conf.updated_at = True, now
            conf.save(update_fields=["enabled", "updated_at"])
        alice = Customer.objects.get(user__username=CUSTOMERS[0][0])
        BnplWhitelistEntry.objects.get_or_create(
            user=alice.user, defaults={"added_by": admin_user, "added_at": now}
        )
        # Every provider, pointed at the local payment sandbox that make run starts.
        sandbox = os.environ.get("PAYMENT_SANDBOX_URL", "http://127.0.0.1:8100")
        for provider, path, secret in SANDBOX_ACCOUNTS:
            if not ProviderAccount.objects.filter(provider=provider).exists():
                ProviderAccount.objects.create(
                    provider=provider,
                    enabled=True,
                    base_url=f"{sandbox}/{path}",
                    credentials_encrypted=encrypt({"id": "demo", "secret": secret}),
                    created_at=now,
                    updated_at=now,
                )
        self._installments(alice, now)
        self.stdout.write(self.style.SUCCESS("Demo data is in place."))

    def _installments(self, alice: Customer, now) -> None:
        """Plan products, a promotion, and one running plan for alice (nothing charged yet:
        the demo product has no down payment, so no card is needed while seeding)."""
        for code, name, count, frequency, down, interest, apr in PLAN_PRODUCTS:
            PlanProduct.objects.get_or_create(
                code=code,
                defaults={
                    "name": name,
                    "installment_count": count,
                    "frequency": frequency,
                    "down_payment": down,
                    "interest_method": interest,
                    "apr": apr,
                    "min_amount": 3_000,
                    "max_amount": 500_000,
                    "late_fee_amount": 500,
                    "late_fee_cap_installment": 1_500,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        promotion, created = Promotion.objects.get_or_create(
            code="electronics-0",
            defaults={
                "name": "0% on electronics",
                "kind": PromotionKind.ZERO_INTEREST,
                "merchant_categories": ["electronics"],
                "valid_from": now,
                "created_at": now,
            },
        )
        if created:
            promotion.products.set(PlanProduct.objects.filter(code="finance-12"))
        web = Channel.objects.get(code="web")
        if not Order.objects.filter(channel=web, external_reference="demo-plan-1").exists():
            order_checkout_installments(
                customer=alice,
                channel=web,
                lines=[
                    LineInput(
                        sku="HOODIE-GRY-L",
                        name="Grey hoodie, L",
                        quantity=1,
                        unit_price=Money.parse("120.00", "EUR"),
                        tax=Money.zero("EUR"),
                        merchant_category="apparel",
                    )
                ],
                plan_product="pay-in-3",
                card_payment_method="pm_card_visa",
                external_reference="demo-plan-1",
            )
