"""Wallet BNPL rules: settings, eligibility with reasons, interest, and the gates of a
wallet checkout (``wallet_checkout_verdict``: checkout and the eligibility answer use it).

Policy hooks (``settings.py``), each a dotted path:

- ``WALLET_BNPL_ELIGIBILITY_FILTERS``: callables ``(customer, amount: Money) -> str | None``;
  a string is a reason to refuse BNPL for that cart.
- ``WALLET_BNPL_INTEREST_POLICY``: ``(debt, bnpl_settings, on: date) -> int`` minor units of
  interest accrued on the debt as of ``on``, a business date (must never decrease as ``on``
  advances; compare it with ``debt.taken_on``, not with ``debt.created_at.date()``, a UTC date).
- ``WALLET_BNPL_MAX_DEBT_POLICY``: ``(customer, bnpl_settings) -> int`` minor units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings as django_settings
from django.db.models import F, Sum
from django.utils.module_loading import import_string

from core.errors import ApplicationError
from core.money import Money, to_minor
from customers.errors import KycRequired
from customers.models import Customer, Feature
from customers.selectors import feature_requires_kyc
from customers.services import customer_require_kyc_for
from payments.models import Provider
from payments.selectors import account_refusal, enabled_account
from wallet.models import (
    BnplCustomerProfile,
    BnplSettings,
    BnplWhitelistEntry,
    DebtStatus,
    EligibilityMode,
    FixedRecurrence,
    InterestType,
    WalletDebt,
)


def bnpl_settings() -> BnplSettings:
    """The one settings record, created with the defaults on first use."""
    obj, _ = BnplSettings.objects.get_or_create(
        pk=1, defaults={"currency": django_settings.DEFAULT_CURRENCY}
    )
    return obj


def customer_profile(customer: Customer) -> BnplCustomerProfile:
    profile = BnplCustomerProfile.objects.filter(customer=customer).first()
    return profile or BnplCustomerProfile(customer=customer)


# --- interest -------------------------------------------------------------------------


def days_late(debt: WalletDebt, conf: BnplSettings, on: date) -> int:
    """``on − (due_date + grace_days)`` in days; zero or less means no interest yet."""
    return (on - debt.due_date).days - conf.grace_days


def default_interest(debt: WalletDebt, conf: BnplSettings, on: date) -> int:
    """Interest accrued as of ``on``, minor units, per the settings.

    none → 0; percent → what accrued before the base last changed + interest base (the
    principal less what merchant refunds settled) × pct/100 × days late since that change
    /30, rounded once with the money rounding rule; fixed → the
    flat amount once, or for each started week past grace.
    """
    late = days_late(debt, conf, on)
    if late <= 0 or conf.interest_type == InterestType.NONE:
        return 0
    currency = debt.wallet.currency
    if conf.interest_type == InterestType.PERCENT:
        if debt.interest_base_since is not None:
            # The base changed: what accrued before is booked; the new base runs from then.
            since = (debt.interest_base_since - debt.due_date).days - conf.grace_days
            late = late - max(since, 0)
        base = Money(debt.interest_base, currency).to_decimal()
        accrued = base * conf.interest_amount / 100 * Decimal(max(late, 0)) / 30
        return debt.interest_before_base + to_minor(accrued, currency)
    flat = to_minor(conf.interest_amount, currency)
    if conf.fixed_recurrence == FixedRecurrence.ONCE:
        return flat
    started_weeks = -(-late // 7)
    return flat * started_weeks


@cache
def _load(path: str) -> Any:
    return import_string(path)


def _hook(name: str, default: str) -> Any:
    """The callable a setting names (read on every call, so tests can change it)."""
    return _load(getattr(django_settings, name, default))


def interest_accrued(debt: WalletDebt, conf: BnplSettings, on: date) -> int:
    """Interest of an open debt as of ``on``; never less than what was already charged."""
    if not debt.is_open:
        return debt.interest_charged
    policy = _hook("WALLET_BNPL_INTEREST_POLICY", "wallet.bnpl.default_interest")
    return max(debt.interest_charged, int(policy(debt, conf, on)))


def debt_amounts(debt: WalletDebt, conf: BnplSettings, on: date) -> dict[str, int]:
    """What the customer owes on ``on``, minor units: principal, interest, total."""
    if not debt.is_open:
        return {"principal": 0, "interest": 0, "total": 0}
    interest = interest_accrued(debt, conf, on) - debt.interest_paid
    principal = debt.principal - debt.principal_repaid
    return {"principal": principal, "interest": interest, "total": principal + interest}


# --- eligibility ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass
class Eligibility:
    amount: Money
    existing_debt: Money
    max_debt: Money
    reasons: list[Reason] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return not self.reasons


def default_max_debt(customer: Customer, conf: BnplSettings) -> int:
    profile = customer_profile(customer)
    if profile.max_debt_override is not None:
        return profile.max_debt_override
    return conf.max_debt_per_user


def open_debt_principal(customer: Customer, currency: str) -> int:
    """Principal still owed by the customer in ``currency``, minor units."""
    total = (
        WalletDebt.objects.filter(wallet__customer=customer, wallet__currency=currency)
        .exclude(status=DebtStatus.REPAID)
        .aggregate(total=Sum(F("principal") - F("principal_repaid")))["total"]
    )
    return total or 0


def bnpl_eligibility(
    *, customer: Customer, cart_total: Money, shortfall: Money, conf: BnplSettings | None = None
) -> Eligibility:
    """Whether the customer may borrow ``shortfall`` on a cart of ``cart_total``, and why not.

    Every reason that applies is listed, with the numbers, so support can explain it.
    """
    conf = conf or bnpl_settings()
    currency = cart_total.currency
    existing = Money(open_debt_principal(customer, currency), currency)
    cap_policy = _hook("WALLET_BNPL_MAX_DEBT_POLICY", "wallet.bnpl.default_max_debt")
    result = Eligibility(
        amount=shortfall,
        existing_debt=existing,
        max_debt=Money(int(cap_policy(customer, conf)), conf.currency),
    )
    reasons = result.reasons
    if not conf.enabled:
        reasons.append(Reason("bnpl_disabled", "Wallet BNPL is switched off."))
    if currency != conf.currency:
        reasons.append(
            Reason(
                "currency_not_offered",
                f"Wallet BNPL is offered in {conf.currency}, not {currency}.",
            )
        )
        return result
    user = customer.user
    if conf.eligibility_mode == EligibilityMode.WHITELIST:
        if not BnplWhitelistEntry.objects.filter(user=user).exists():
            reasons.append(Reason("not_whitelisted", "The customer is not on the BNPL whitelist."))
    elif conf.eligibility_mode == EligibilityMode.ROLE:
        if not conf.eligible_roles.filter(user=user).exists():
            reasons.append(
                Reason("role_not_eligible", "None of the customer's roles is admitted to BNPL.")
            )
    elif not customer.is_kyc_approved:
        reasons.append(
            Reason(
                "kyc_not_approved",
                f"BNPL is for KYC-approved customers; this KYC is {customer.kyc_status}.",
            )
        )
    if (
        conf.eligibility_mode != EligibilityMode.ALL_KYC_APPROVED
        and not customer.is_kyc_approved
        and feature_requires_kyc(Feature.WALLET_BNPL)
    ):
        reasons.append(
            Reason(
                "kyc_required",
                f"Wallet BNPL requires an approved KYC; this KYC is {customer.kyc_status}.",
            )
        )
    if cart_total < conf.min_order_money:
        reasons.append(
            Reason(
                "below_min_order",
                f"The cart ({cart_total}) is below the BNPL minimum ({conf.min_order_money}).",
            )
        )
    if (existing + shortfall) > result.max_debt:
        reasons.append(
            Reason(
                "cap_exceeded",
                f"Existing debt {existing} + new {shortfall} = "
                f"{existing + shortfall} exceeds the limit {result.max_debt}.",
            )
        )
    if not customer_profile(customer).auto_deduct:
        reasons.append(
            Reason(
                "auto_deduct_opted_out",
                "The customer opted out of automatic repayment from wallet credits.",
            )
        )
    for path in getattr(django_settings, "WALLET_BNPL_ELIGIBILITY_FILTERS", []):
        refusal = _load(path)(customer, cart_total)
        if refusal:
            reasons.append(Reason("policy", str(refusal)))
    return result


# --- the gates of a wallet checkout -----------------------------------------------------

TOP_UP = "top_up"  # add money to the wallet, then check out again
SPLIT_PAY = "wallet_card"  # pay the balance from the wallet and the rest by card


@dataclass(frozen=True)
class CheckoutVerdict:
    """Whether a wallet checkout of ``amount`` goes through, with every gate it fails.

    ``refusal`` is the error checkout raises before looking at money (a customer whose
    KYC the wallet needs); ``bnpl`` is set when the balance falls short.
    """

    amount: Money
    balance: Money
    refusal: ApplicationError | None
    bnpl: Eligibility | None
    split_pay: bool

    @property
    def shortfall(self) -> Money:
        if self.amount > self.balance:
            return self.amount - self.balance
        return Money.zero(self.amount.currency)

    @property
    def eligible(self) -> bool:
        return self.refusal is None and (self.bnpl is None or self.bnpl.eligible)

    @property
    def reasons(self) -> list[Reason]:
        gate = [Reason(self.refusal.code, self.refusal.message)] if self.refusal else []
        return gate + (self.bnpl.reasons if self.bnpl else [])

    @property
    def options(self) -> list[str]:
        """What the customer can do instead: top up, or split the payment with a card."""
        if self.eligible or self.refusal is not None:
            return []
        return [TOP_UP, SPLIT_PAY] if self.split_pay else [TOP_UP]


def wallet_checkout_verdict(
    *, customer: Customer, balance: Money, amount: Money, categories: set[str] | None = None
) -> CheckoutVerdict:
    """Every gate a wallet checkout of ``amount`` applies, in checkout's order.

    Checkout raises what this finds, with the cart's merchant ``categories`` (split pay is
    offered only when the card account serves them); the eligibility endpoint, which has no
    cart, shows the category-free answer.
    """
    try:
        customer_require_kyc_for(customer=customer, feature=Feature.WALLET_USAGE)
    except KycRequired as exc:
        return CheckoutVerdict(amount, balance, exc, None, split_pay=False)
    if balance >= amount:
        return CheckoutVerdict(amount, balance, None, None, split_pay=False)
    shortfall = amount - balance
    bnpl = bnpl_eligibility(customer=customer, cart_total=amount, shortfall=shortfall)
    split_pay = False
    if not bnpl.eligible:
        card = enabled_account(Provider.CARD)
        refused = card is None or account_refusal(
            card, amount=amount, categories=categories or set()
        )
        split_pay = not refused
    return CheckoutVerdict(amount, balance, None, bnpl, split_pay=split_pay)
