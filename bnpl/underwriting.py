"""The credit decision on an installment plan: documented rules, a score, fraud checks.

``credit_decide(customer=…, amount=…, product=…, payment_method=…, on=…)`` gathers the
facts (``CreditFacts``: KYC, blocks, exposure against the limit, the repayment-history
score and its components, the fraud signals) and hands them to the credit policy named by
``settings.BNPL_CREDIT_POLICY`` (default ``"bnpl.underwriting.default_policy"``), a callable
``(facts: CreditFacts) -> CreditDecision``. A lender plugs its own model in there; it gets
the same facts and must return an outcome with reasons.

Outcomes: ``approve``, ``decline`` (with reasons) or ``review`` (a staff member decides in
the admin's review queue). Every reason is ``{"code", "message"}`` with the numbers in the
message, so support can read it to the customer.

The default policy's rules and their reason codes:

Refusals (always ``decline``):

- ``kyc_not_approved`` — credit needs an approved KYC (whatever ``Feature.INSTALLMENTS``
  says; checkout refuses earlier, with ``customers.kyc_required``, when an admin put the
  feature behind KYC).
- ``borrower_blocked`` — ``BorrowerProfile.blocked_at`` is set (by staff or a delinquency
  action).
- ``overdue_balance`` — an installment or a wallet BNPL debt is overdue right now.
- ``credit_limit_exceeded`` — exposure (outstanding principal of active plans + open wallet
  BNPL debt principal + open applications + this amount) exceeds the limit: the tier's
  ``settings.BNPL_INSTALLMENT_CREDIT_LIMITS`` (major units of the currency) unless
  ``BorrowerProfile.credit_limit_override`` (minor units) is set.
- ``score_too_low`` — the score is below ``settings.BNPL_SCORE_DECLINE_BELOW`` (450).

Risk and fraud signals (``review`` by default; ``settings.BNPL_RISK_ACTIONS`` maps a code to
``"review"`` or ``"decline"``):

- ``score_borderline`` — the score is below ``settings.BNPL_SCORE_REVIEW_BELOW`` (550).
- ``velocity`` — ``BNPL_VELOCITY_MAX_24H`` (3) or more other applications by the customer in
  the 24 hours before ``on``.
- ``amount_above_history`` — the amount is more than ``BNPL_HISTORY_MULTIPLIER`` (3) times
  the largest amount the customer paid before (a plan with a paid installment, or a wallet
  payment of an order); only when such a history exists.
- ``new_account_large_order`` — the account is younger than ``BNPL_NEW_ACCOUNT_DAYS`` (14)
  and the amount is above ``BNPL_NEW_ACCOUNT_MAX_AMOUNT`` (300, major units).
- ``shared_payment_method`` — more than ``BNPL_SHARED_TOKEN_MAX_CUSTOMERS`` (0) other
  customers saved the same card (the processor's fingerprint of it: each customer's token
  differs, since a token is accepted only from its owner), or applied or pay a plan with
  the same token (rows from before tokens were bound to customers).

The score (300..900, explainable: every component is listed with its count and points):
600 base; +10 per installment paid on time (at most +150); −40 per installment paid late or
overdue (at most −300); +10 per wallet BNPL debt repaid without being overdue (at most
+100); −40 per wallet debt that went overdue (at most −200); −150 per written-off plan or
wallet debt; +1 per 10 days of account age (at most +60).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.db.models import F, Max, Sum
from django.utils.module_loading import import_string

from bnpl.models import (
    BorrowerProfile,
    CreditApplication,
    Installment,
    InstallmentStatus,
    Plan,
    PlanProduct,
    PlanStatus,
)
from core import clock
from core.money import Money, to_minor
from customers.models import Customer
from payments.models import SavedPaymentMethod
from wallet.bnpl import open_debt_principal
from wallet.models import DebtResolution, DebtStatus, TransactionKind, WalletDebt, WalletTransaction

APPROVE, DECLINE, REVIEW = "approve", "decline", "review"
OUTCOMES = (APPROVE, DECLINE, REVIEW)

DEFAULTS: dict[str, Any] = {
    "BNPL_CREDIT_POLICY": "bnpl.underwriting.default_policy",
    "BNPL_INSTALLMENT_CREDIT_LIMITS": {
        "standard": "1500",
        "silver": "3000",
        "gold": "5000",
        "platinum": "10000",
    },
    "BNPL_SCORE_DECLINE_BELOW": 450,
    "BNPL_SCORE_REVIEW_BELOW": 550,
    "BNPL_VELOCITY_MAX_24H": 3,
    "BNPL_HISTORY_MULTIPLIER": 3,
    "BNPL_NEW_ACCOUNT_DAYS": 14,
    "BNPL_NEW_ACCOUNT_MAX_AMOUNT": "300",
    "BNPL_SHARED_TOKEN_MAX_CUSTOMERS": 0,
    "BNPL_RISK_ACTIONS": {},
}
RISK_CODES = (
    "score_borderline",
    "velocity",
    "amount_above_history",
    "new_account_large_order",
    "shared_payment_method",
)


def setting(name: str) -> Any:
    """A credit setting, read on every call (tests and admins may change it)."""
    return getattr(settings, name, DEFAULTS[name])


def risk_action(code: str) -> str:
    """``review`` or ``decline`` for a risk signal."""
    action = setting("BNPL_RISK_ACTIONS").get(code, REVIEW)
    if action not in (REVIEW, DECLINE):
        raise ValueError(f"BNPL_RISK_ACTIONS[{code!r}] must be 'review' or 'decline'")
    return action


@dataclass(frozen=True)
class Reason:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class CreditDecision:
    outcome: str  # approve | decline | review
    reasons: list[dict[str, str]]
    score: int | None
    explanation: dict[str, Any]

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")


@dataclass(frozen=True)
class ScoreComponent:
    name: str
    count: int
    points: int


@dataclass(frozen=True)
class Exposure:
    """Minor units of the application's currency."""

    plans_outstanding: int
    wallet_debt: int
    open_applications: int
    amount: int
    limit: int
    limit_source: str  # "override" or "tier:<tier>"

    @property
    def total(self) -> int:
        return self.plans_outstanding + self.wallet_debt + self.open_applications + self.amount


@dataclass(frozen=True)
class CreditFacts:
    """Everything the credit policy may look at; all amounts in minor units."""

    customer_id: int
    tier: str
    kyc_status: str
    kyc_approved: bool
    blocked_reason: str | None  # None: not blocked
    amount: Money
    product_code: str
    payment_method: str
    on: datetime
    exposure: Exposure
    score: int
    score_components: list[ScoreComponent]
    overdue_installments: int
    overdue_wallet_debts: int
    account_age_days: int
    applications_24h: int
    largest_paid_before: int | None
    other_customers_on_token: int
    signals: list[Reason] = field(default_factory=list)

    def explanation(self) -> dict[str, Any]:
        currency = self.amount.currency
        return {
            "score": {
                "value": self.score,
                "base": 600,
                "components": [asdict(c) for c in self.score_components],
            },
            "exposure": {
                "plans_outstanding": str(Money(self.exposure.plans_outstanding, currency)),
                "wallet_debt": str(Money(self.exposure.wallet_debt, currency)),
                "open_applications": str(Money(self.exposure.open_applications, currency)),
                "this_amount": str(Money(self.exposure.amount, currency)),
                "total": str(Money(self.exposure.total, currency)),
                "limit": str(Money(self.exposure.limit, currency)),
                "limit_source": self.exposure.limit_source,
            },
            "kyc_status": self.kyc_status,
            "blocked": self.blocked_reason is not None,
            "overdue_installments": self.overdue_installments,
            "overdue_wallet_debts": self.overdue_wallet_debts,
            "account_age_days": self.account_age_days,
            "applications_24h": self.applications_24h,
            "largest_paid_before": (
                str(Money(self.largest_paid_before, currency))
                if self.largest_paid_before is not None
                else None
            ),
            "other_customers_on_token": self.other_customers_on_token,
        }


# --- the facts --------------------------------------------------------------------------


def _major(value: Any, currency: str) -> int:
    return to_minor(Decimal(str(value)), currency)


def _limit(customer: Customer, profile: BorrowerProfile | None, currency: str) -> tuple[int, str]:
    if profile is not None and profile.credit_limit_override is not None:
        return profile.credit_limit_override, "override"
    limits = setting("BNPL_INSTALLMENT_CREDIT_LIMITS")
    value = limits.get(customer.tier, limits.get("standard", 0))
    return _major(value, currency), f"tier:{customer.tier}"


def _capped(name: str, count: int, each: int, cap: int | None) -> ScoreComponent:
    points = count * each
    if cap is not None:
        points = min(points, cap) if each > 0 else max(points, cap)
    return ScoreComponent(name, count, points)


def _installment_history(customer: Customer) -> tuple[int, int, int]:
    """(paid on time, paid late or overdue, overdue now) over every plan of the customer."""
    on_time = late = overdue_now = 0
    tz = clock.business_tz()
    rows = Installment.objects.filter(plan__customer=customer).values_list(
        "status", "due_date", "paid_at", "overdue_since"
    )
    for status, due, paid_at, overdue_since in rows:
        if status == InstallmentStatus.OVERDUE:
            overdue_now += 1
        if overdue_since is not None or status == InstallmentStatus.OVERDUE:
            late += 1
        elif status == InstallmentStatus.PAID and paid_at is not None:
            if paid_at.astimezone(tz).date() > due:
                late += 1
            else:
                on_time += 1
    return on_time, late, overdue_now


def _score(customer: Customer, on: datetime) -> tuple[int, list[ScoreComponent], int, int, int]:
    on_time, late, overdue_installments = _installment_history(customer)
    debts = list(
        WalletDebt.objects.filter(wallet__customer=customer).values_list(
            "status", "resolution", "overdue_since"
        )
    )
    repaid_clean = sum(
        1 for s, r, o in debts if s == DebtStatus.REPAID and r == DebtResolution.REPAID and not o
    )
    debts_late = sum(1 for _, r, o in debts if o and r != DebtResolution.CANCELLED)
    overdue_debts = sum(1 for s, _, _ in debts if s == DebtStatus.OVERDUE)
    written_off = sum(1 for _, r, _ in debts if r == DebtResolution.WRITTEN_OFF)
    written_off += Plan.objects.filter(customer=customer, status=PlanStatus.WRITTEN_OFF).count()
    age_days = max(0, (on - customer.created_at).days)
    components = [
        _capped("installments_paid_on_time", on_time, 10, 150),
        _capped("installments_late", late, -40, -300),
        _capped("wallet_debts_repaid", repaid_clean, 10, 100),
        _capped("wallet_debts_late", debts_late, -40, -200),
        _capped("written_off", written_off, -150, None),
        ScoreComponent("account_age_days", age_days, min(60, age_days // 10)),
    ]
    score = max(300, min(900, 600 + sum(c.points for c in components)))
    return score, components, overdue_installments, overdue_debts, age_days


def _largest_paid_before(customer: Customer, currency: str) -> int | None:
    plans = Plan.objects.filter(
        customer=customer,
        currency=currency,
        status__in=(PlanStatus.ACTIVE, PlanStatus.COMPLETED),
        installments__status=InstallmentStatus.PAID,
    ).aggregate(largest=Max("amount"))["largest"]
    wallet = WalletTransaction.objects.filter(
        wallet__customer=customer, wallet__currency=currency, kind=TransactionKind.PAYMENT
    ).aggregate(largest=Max("amount"))["largest"]
    known = [v for v in (plans, wallet) if v]
    return max(known) if known else None


def _other_customers_on_token(customer: Customer, payment_method: str) -> int:
    fingerprint = (
        SavedPaymentMethod.objects.filter(token=payment_method, customer=customer)
        .exclude(fingerprint="")
        .values_list("fingerprint", flat=True)
        .first()
    )
    others = set(
        SavedPaymentMethod.objects.filter(fingerprint=fingerprint)
        .exclude(customer=customer)
        .values_list("customer_id", flat=True)
        .distinct()
        if fingerprint
        else ()
    )
    others |= set(
        CreditApplication.objects.filter(payment_method=payment_method)
        .exclude(customer=customer)
        .values_list("customer_id", flat=True)
        .distinct()
    )
    others |= set(
        Plan.objects.filter(payment_method=payment_method)
        .exclude(customer=customer)
        .values_list("customer_id", flat=True)
        .distinct()
    )
    return len(others)


def credit_facts(
    *,
    customer: Customer,
    amount: Money,
    product: PlanProduct,
    payment_method: str,
    on: datetime,
    application_id: int | None = None,
) -> CreditFacts:
    """Read what the decision rests on. ``application_id``: the application being decided,
    left out of the velocity count and of the open applications' exposure."""
    currency = amount.currency
    profile = BorrowerProfile.objects.filter(customer=customer).first()
    plans_outstanding = (
        Installment.objects.filter(
            plan__customer=customer,
            plan__currency=currency,
            plan__status=PlanStatus.ACTIVE,
            status__in=(InstallmentStatus.SCHEDULED, InstallmentStatus.OVERDUE),
        ).aggregate(total=Sum(F("principal") - F("paid_principal")))["total"]
        or 0
    )
    open_apps = CreditApplication.objects.filter(
        customer=customer, currency=currency, status__in=CreditApplication.OPEN
    )
    recent = CreditApplication.objects.filter(
        customer=customer, created_at__gte=on - timedelta(hours=24), created_at__lte=on
    )
    if application_id is not None:
        open_apps = open_apps.exclude(pk=application_id)
        recent = recent.exclude(pk=application_id)
    limit, limit_source = _limit(customer, profile, currency)
    exposure = Exposure(
        plans_outstanding=plans_outstanding,
        wallet_debt=open_debt_principal(customer, currency),
        open_applications=open_apps.aggregate(total=Sum("amount"))["total"] or 0,
        amount=amount.minor,
        limit=limit,
        limit_source=limit_source,
    )
    score, components, overdue_installments, overdue_debts, age_days = _score(customer, on)
    blocked = profile is not None and profile.blocked_at is not None
    return CreditFacts(
        customer_id=customer.pk,
        tier=customer.tier,
        kyc_status=customer.kyc_status,
        kyc_approved=customer.is_kyc_approved,
        blocked_reason=(profile.blocked_reason or "blocked") if blocked else None,
        amount=amount,
        product_code=product.code,
        payment_method=payment_method,
        on=on,
        exposure=exposure,
        score=score,
        score_components=components,
        overdue_installments=overdue_installments,
        overdue_wallet_debts=overdue_debts,
        account_age_days=age_days,
        applications_24h=recent.count(),
        largest_paid_before=_largest_paid_before(customer, currency),
        other_customers_on_token=_other_customers_on_token(customer, payment_method),
    )


# --- the default policy -----------------------------------------------------------------


def refusals(facts: CreditFacts) -> list[Reason]:
    """The rules that always decline."""
    reasons: list[Reason] = []
    currency = facts.amount.currency
    if not facts.kyc_approved:
        reasons.append(
            Reason(
                "kyc_not_approved",
                f"Installment credit needs an approved KYC; this KYC is {facts.kyc_status}.",
            )
        )
    if facts.blocked_reason is not None:
        reasons.append(
            Reason(
                "borrower_blocked",
                f"The customer may not take new plans: {facts.blocked_reason}.",
            )
        )
    if facts.overdue_installments or facts.overdue_wallet_debts:
        reasons.append(
            Reason(
                "overdue_balance",
                f"{facts.overdue_installments} installment(s) and {facts.overdue_wallet_debts} "
                "wallet debt(s) are overdue.",
            )
        )
    exposure = facts.exposure
    if exposure.total > exposure.limit:
        reasons.append(
            Reason(
                "credit_limit_exceeded",
                f"Plans {Money(exposure.plans_outstanding, currency)} + wallet debt "
                f"{Money(exposure.wallet_debt, currency)} + open applications "
                f"{Money(exposure.open_applications, currency)} + this "
                f"{Money(exposure.amount, currency)} = {Money(exposure.total, currency)} "
                f"exceeds the limit {Money(exposure.limit, currency)}.",
            )
        )
    if facts.score < setting("BNPL_SCORE_DECLINE_BELOW"):
        reasons.append(
            Reason(
                "score_too_low",
                f"The credit score {facts.score} is below {setting('BNPL_SCORE_DECLINE_BELOW')}.",
            )
        )
    return reasons


# Risk and fraud signals, and a reviewer's note, are for staff: they speak of thresholds
# and of other customers (a shared card). Customers are told one generic reason instead.
STAFF_ONLY_CODES = frozenset(
    {
        "score_borderline",
        "velocity",
        "amount_above_history",
        "new_account_large_order",
        "shared_payment_method",
        "staff_declined",
    }
)
RISK_CHECK = {"code": "risk_check", "message": "The application did not pass our risk checks."}
# Customer-facing wording where the staff message carries internal detail.
_CUSTOMER_MESSAGES = {
    "borrower_blocked": "New installment plans are paused on this account.",
    "score_too_low": "The repayment history on this account does not support this plan yet.",
}


def customer_reasons(*, status: str, reasons: list[dict]) -> list[dict]:
    """What the customer (and the storefront acting for them) is told about a decision.

    Nothing while staff review it; on a decline, the customer's own facts (KYC, overdue
    items, the limit) as they are, and every staff-only signal folded into ``risk_check``.
    """
    if status == "review":
        return []
    shown: list[dict] = []
    for reason in reasons:
        code = reason.get("code", "")
        if code in STAFF_ONLY_CODES:
            if RISK_CHECK not in shown:
                shown.append(RISK_CHECK)
        else:
            shown.append({"code": code, "message": _CUSTOMER_MESSAGES.get(code, reason["message"])})
    return shown


def risk_signals(facts: CreditFacts) -> list[Reason]:
    """The risk and fraud signals that apply (each one reviewed or declined by setting)."""
    signals: list[Reason] = []
    currency = facts.amount.currency
    decline_below = setting("BNPL_SCORE_DECLINE_BELOW")
    if decline_below <= facts.score < setting("BNPL_SCORE_REVIEW_BELOW"):
        signals.append(
            Reason(
                "score_borderline",
                f"The credit score {facts.score} is below {setting('BNPL_SCORE_REVIEW_BELOW')}.",
            )
        )
    if facts.applications_24h >= setting("BNPL_VELOCITY_MAX_24H"):
        signals.append(
            Reason(
                "velocity",
                f"{facts.applications_24h} other applications in the last 24 hours "
                f"(review from {setting('BNPL_VELOCITY_MAX_24H')}).",
            )
        )
    multiplier = setting("BNPL_HISTORY_MULTIPLIER")
    largest = facts.largest_paid_before
    if largest and facts.amount.minor > largest * multiplier:
        signals.append(
            Reason(
                "amount_above_history",
                f"{facts.amount} is more than {multiplier}× the largest amount paid before "
                f"({Money(largest, currency)}).",
            )
        )
    new_days = setting("BNPL_NEW_ACCOUNT_DAYS")
    new_max = Money(_major(setting("BNPL_NEW_ACCOUNT_MAX_AMOUNT"), currency), currency)
    if facts.account_age_days < new_days and facts.amount > new_max:
        signals.append(
            Reason(
                "new_account_large_order",
                f"The account is {facts.account_age_days} day(s) old (under {new_days}) and "
                f"{facts.amount} is above {new_max}.",
            )
        )
    if facts.other_customers_on_token > setting("BNPL_SHARED_TOKEN_MAX_CUSTOMERS"):
        signals.append(
            Reason(
                "shared_payment_method",
                f"{facts.other_customers_on_token} other customer(s) saved or use this card.",
            )
        )
    return signals


def default_policy(facts: CreditFacts) -> CreditDecision:
    """Decline on any refusal or any signal set to decline; review on any other signal."""
    declines = refusals(facts)
    reviews: list[Reason] = []
    for signal in risk_signals(facts):
        (declines if risk_action(signal.code) == DECLINE else reviews).append(signal)
    outcome = DECLINE if declines else REVIEW if reviews else APPROVE
    explanation = facts.explanation()
    explanation["rules"] = {
        "declined_by": [r.code for r in declines],
        "reviewed_for": [r.code for r in reviews],
    }
    return CreditDecision(
        outcome=outcome,
        reasons=[r.to_json() for r in declines + reviews],
        score=facts.score,
        explanation=explanation,
    )


@cache
def _load(path: str) -> Any:
    return import_string(path)


def credit_decide(
    *,
    customer: Customer,
    amount: Money,
    product: PlanProduct,
    payment_method: str,
    on: datetime,
    application_id: int | None = None,
) -> CreditDecision:
    """Decide on lending ``amount`` under ``product``; read-only.

    The policy named by ``settings.BNPL_CREDIT_POLICY`` takes the facts and decides; its
    path is recorded in the explanation.
    """
    facts = credit_facts(
        customer=customer,
        amount=amount,
        product=product,
        payment_method=payment_method,
        on=on,
        application_id=application_id,
    )
    path = setting("BNPL_CREDIT_POLICY")
    decision = _load(path)(facts)
    if not isinstance(decision, CreditDecision):
        raise TypeError(f"{path} must return a CreditDecision")
    return CreditDecision(
        outcome=decision.outcome,
        reasons=list(decision.reasons),
        score=decision.score,
        explanation={**decision.explanation, "policy": path},
    )
