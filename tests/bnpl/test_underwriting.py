"""The credit decision: every rule and reason code, the score's components, the policy hook."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from django.db import transaction

from bnpl.models import BorrowerProfile, InstallmentStatus
from bnpl.services import installment_apply_payment, locked_plan_installment
from bnpl.underwriting import (
    APPROVE,
    DECLINE,
    REVIEW,
    CreditDecision,
    CreditFacts,
    credit_decide,
)
from core import clock
from core.money import Money
from ledger.models import Purpose
from ledger.services import system
from payments.methods import payment_method_save
from tests.bnpl.factories import make_application, make_plan, make_product
from tests.factories import approve_kyc, borrow, enable_wallet_bnpl, make_customer, saved_card
from wallet.services import debts_mark_overdue

pytestmark = pytest.mark.django_db


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


@pytest.fixture
def product():
    return make_product(code="pay-in-3")


@pytest.fixture
def borrower():
    return approve_kyc(make_customer())


def decide(customer, amount: str, product, *, on=None, token="pm_card_visa") -> CreditDecision:
    return credit_decide(
        customer=customer,
        amount=eur(amount),
        product=product,
        payment_method=token,
        on=on or clock.now(),
    )


def codes(decision: CreditDecision) -> list[str]:
    return [r["code"] for r in decision.reasons]


def pay_installment(installment, *, at: datetime) -> None:
    """Pay an installment in full from cash at ``at`` (the real booking service)."""
    with clock.travel_to(at), transaction.atomic():
        plan, locked = locked_plan_installment(installment.pk)
        installment_apply_payment(
            plan=plan,
            installment=locked,
            amount=Money(locked.outstanding, plan.currency),
            source=system(Purpose.CASH_CLEARING, plan.currency),
            kind="bnpl.installment_paid",
            reference_type="test.payment",
            reference_id=str(locked.pk),
        )


def plan_paid(customer, *, count: int, days_late: int, amount: str = "100.00"):
    """A plan of ``count`` monthly installments, each paid ``days_late`` after its due date."""
    plan = make_plan(
        customer=customer, amount=amount, installment_count=count, start_date=date(2026, 1, 5)
    )
    for installment in plan.installments.order_by("number"):
        moment = datetime.combine(
            installment.due_date + timedelta(days=days_late),
            datetime.min.time(),
            tzinfo=clock.business_tz(),
        ) + timedelta(hours=12)
        pay_installment(installment, at=moment)
    return plan


# --- approve, and what the explanation says ------------------------------------------


def test_a_kyc_approved_customer_without_history_is_approved_with_the_base_score(borrower, product):
    decision = decide(borrower, "200.00", product)
    assert (decision.outcome, decision.reasons, decision.score) == (APPROVE, [], 600)
    explanation = decision.explanation
    assert explanation["policy"] == "bnpl.underwriting.default_policy"
    assert explanation["exposure"]["total"] == "200.00 EUR"
    assert explanation["exposure"]["limit"] == "1500.00 EUR"
    assert explanation["exposure"]["limit_source"] == "tier:standard"
    names = [c["name"] for c in explanation["score"]["components"]]
    assert names == [
        "installments_paid_on_time",
        "installments_late",
        "wallet_debts_repaid",
        "wallet_debts_late",
        "written_off",
        "account_age_days",
    ]
    assert explanation["rules"] == {"declined_by": [], "reviewed_for": []}


@pytest.mark.usefixtures("around_business_midnight")
def test_installments_paid_on_time_raise_the_score_and_each_component_shows_its_points(
    borrower, product
):
    plan_paid(borrower, count=3, days_late=0)
    decision = decide(borrower, "100.00", product, on=clock.now() + timedelta(days=200))
    components = {c["name"]: c for c in decision.explanation["score"]["components"]}
    assert components["installments_paid_on_time"] == {
        "name": "installments_paid_on_time",
        "count": 3,
        "points": 30,
    }
    assert components["account_age_days"]["points"] == 20  # 200 days: +1 per 10 days
    assert decision.score == 650
    assert decision.outcome == APPROVE


# --- refusals --------------------------------------------------------------------------


def test_kyc_not_approved_declines(product):
    pending = make_customer()
    decision = decide(pending, "200.00", product)
    assert (decision.outcome, codes(decision)) == (DECLINE, ["kyc_not_approved"])
    assert "pending" in decision.reasons[0]["message"]


def test_a_blocked_borrower_is_declined(borrower, product):
    BorrowerProfile.objects.create(
        customer=borrower, blocked_at=clock.now(), blocked_reason="90 days past due"
    )
    decision = decide(borrower, "200.00", product)
    assert (decision.outcome, codes(decision)) == (DECLINE, ["borrower_blocked"])
    assert "90 days past due" in decision.reasons[0]["message"]


@pytest.mark.usefixtures("around_business_midnight")
def test_an_overdue_installment_declines(borrower, product):
    plan = make_plan(customer=borrower, amount="100.00")
    plan.installments.filter(number=1).update(
        status=InstallmentStatus.OVERDUE, overdue_since=clock.business_date()
    )
    decision = decide(borrower, "50.00", product)
    assert decision.outcome == DECLINE
    assert "overdue_balance" in codes(decision)
    assert decision.explanation["overdue_installments"] == 1


@pytest.mark.usefixtures("around_business_midnight")
def test_an_overdue_wallet_debt_declines(product):
    enable_wallet_bnpl(max_debt_per_user=100_000)
    customer = approve_kyc(make_customer())
    borrow(customer, "40.00")
    later = clock.now() + timedelta(days=60)
    with clock.travel_to(later):
        debts_mark_overdue(business_date=clock.business_date())
        decision = decide(customer, "50.00", product)
    assert decision.outcome == DECLINE
    assert "overdue_balance" in codes(decision)
    assert decision.explanation["overdue_wallet_debts"] == 1


def test_exposure_over_the_tier_limit_declines_with_every_part_named(product):
    enable_wallet_bnpl(max_debt_per_user=100_000)
    customer = approve_kyc(make_customer())
    borrow(customer, "300.00")  # wallet BNPL debt
    make_plan(customer=customer, amount="900.00")  # outstanding plan principal
    make_application(customer=customer, product=product, amount="100.00")  # still open
    decision = decide(customer, "250.00", product)
    assert (decision.outcome, codes(decision)) == (DECLINE, ["credit_limit_exceeded"])
    assert decision.reasons[0]["message"] == (
        "Plans 900.00 EUR + wallet debt 300.00 EUR + open applications 100.00 EUR + this "
        "250.00 EUR = 1550.00 EUR exceeds the limit 1500.00 EUR."
    )
    # Exactly at the limit is fine.
    assert decide(customer, "200.00", product).outcome == APPROVE


def test_a_borrower_limit_override_replaces_the_tier_limit(borrower, product):
    BorrowerProfile.objects.create(customer=borrower, credit_limit_override=20_000)
    decision = decide(borrower, "250.00", product)
    assert codes(decision) == ["credit_limit_exceeded"]
    assert decision.explanation["exposure"]["limit_source"] == "override"
    assert decide(borrower, "200.00", product).outcome == APPROVE


def test_a_gold_customer_gets_the_gold_limit(product, settings):
    gold = approve_kyc(make_customer(tier="gold"))
    assert decide(gold, "4000.00", product, on=clock.now() + timedelta(days=30)).outcome == APPROVE
    settings.BNPL_INSTALLMENT_CREDIT_LIMITS = {"standard": "1500", "gold": "3000"}
    assert codes(decide(gold, "4000.00", product, on=clock.now() + timedelta(days=30))) == [
        "credit_limit_exceeded"
    ]


@pytest.mark.usefixtures("around_business_midnight")
def test_many_late_installments_score_too_low_and_decline(borrower, product):
    plan_paid(borrower, count=6, days_late=10)
    decision = decide(borrower, "50.00", product, on=clock.now() + timedelta(days=5))
    components = {c["name"]: c for c in decision.explanation["score"]["components"]}
    assert components["installments_late"] == {
        "name": "installments_late",
        "count": 6,
        "points": -240,
    }
    assert decision.score == 360
    assert (decision.outcome, codes(decision)) == (DECLINE, ["score_too_low"])


# --- risk signals: review by default, decline by setting -----------------------------


def test_a_borderline_score_goes_to_review(borrower, product):
    plan_paid(borrower, count=2, days_late=3)
    decision = decide(borrower, "50.00", product, on=clock.now() + timedelta(days=5))
    assert decision.score == 520
    assert (decision.outcome, codes(decision)) == (REVIEW, ["score_borderline"])


def test_velocity_of_applications_goes_to_review_or_declines_by_setting(
    borrower, product, settings
):
    for _ in range(3):
        make_application(customer=borrower, product=product, amount="10.00")
    decision = decide(borrower, "10.00", product)
    assert (decision.outcome, codes(decision)) == (REVIEW, ["velocity"])
    assert decision.explanation["rules"]["reviewed_for"] == ["velocity"]
    settings.BNPL_RISK_ACTIONS = {"velocity": "decline"}
    assert decide(borrower, "10.00", product).outcome == DECLINE
    # A day later the window is empty again.
    later = decide(borrower, "10.00", product, on=clock.now() + timedelta(hours=25))
    assert "velocity" not in codes(later)


def test_an_amount_far_above_the_history_goes_to_review(borrower, product):
    plan_paid(borrower, count=1, days_late=0, amount="100.00")
    on = clock.now() + timedelta(days=60)
    assert decide(borrower, "300.00", product, on=on).outcome == APPROVE  # 3× is the edge
    decision = decide(borrower, "300.01", product, on=on)
    assert (decision.outcome, codes(decision)) == (REVIEW, ["amount_above_history"])
    assert decision.explanation["largest_paid_before"] == "100.00 EUR"


def test_a_new_account_with_a_large_first_order_goes_to_review(borrower, product):
    assert decide(borrower, "300.00", product).outcome == APPROVE
    decision = decide(borrower, "300.01", product)
    assert (decision.outcome, codes(decision)) == (REVIEW, ["new_account_large_order"])
    older = decide(borrower, "300.01", product, on=clock.now() + timedelta(days=14))
    assert older.outcome == APPROVE


def test_a_card_another_customer_saved_too_goes_to_review(borrower, product, card_processor):
    """A token is one customer's only, so the shared card is found by the processor's
    fingerprint: the same number saved by two customers has two tokens, one fingerprint."""
    number = "4000" + "0566" + "5566" + "5556"  # a test card, never whole in a data file
    other = approve_kyc(make_customer())
    mine, _ = payment_method_save(
        customer_id=borrower.pk, card_number=number, exp_month=1, exp_year=clock.now().year + 5
    )
    assert decide(borrower, "10.00", product, token=mine.token).outcome == APPROVE
    theirs, _ = payment_method_save(
        customer_id=other.pk, card_number=number, exp_month=1, exp_year=clock.now().year + 5
    )
    assert theirs.token != mine.token
    decision = decide(borrower, "10.00", product, token=mine.token)
    assert (decision.outcome, codes(decision)) == (REVIEW, ["shared_payment_method"])
    assert decision.explanation["other_customers_on_token"] == 1
    saved_card(borrower, "pm_other_card", fingerprint="fp_another_card")
    assert decide(borrower, "10.00", product, token="pm_other_card").outcome == APPROVE


def test_a_token_another_customer_used_before_tokens_were_bound_goes_to_review(borrower, product):
    other = approve_kyc(make_customer())
    make_application(customer=other, product=product, amount="10.00", payment_method="pm_x")
    decision = decide(borrower, "10.00", product, token="pm_x")
    assert (decision.outcome, codes(decision)) == (REVIEW, ["shared_payment_method"])
    assert decide(borrower, "10.00", product, token="pm_mine").outcome == APPROVE


def test_refusals_and_signals_are_all_listed_and_a_refusal_wins(product):
    customer = make_customer()  # KYC pending, new account
    decision = decide(customer, "2000.00", product)
    assert decision.outcome == DECLINE
    assert codes(decision) == [
        "kyc_not_approved",
        "credit_limit_exceeded",
        "new_account_large_order",
    ]


# --- a lender's own model -----------------------------------------------------------


def cautious_lender(facts: CreditFacts) -> CreditDecision:
    """A plugged-in policy: everything above 100.00 is looked at by a person."""
    big = facts.amount > Money.parse("100.00", facts.amount.currency)
    return CreditDecision(
        outcome=REVIEW if big else APPROVE,
        reasons=[{"code": "lender_review", "message": "Above 100.00"}] if big else [],
        score=facts.score,
        explanation={"lender": "cautious", "exposure": facts.explanation()["exposure"]},
    )


def test_a_settings_listed_policy_replaces_the_default(borrower, product, settings):
    settings.BNPL_CREDIT_POLICY = "tests.bnpl.test_underwriting.cautious_lender"
    decision = decide(borrower, "150.00", product)
    assert (decision.outcome, codes(decision)) == (REVIEW, ["lender_review"])
    assert decision.explanation["policy"] == "tests.bnpl.test_underwriting.cautious_lender"
    assert decide(borrower, "50.00", product).outcome == APPROVE


def test_customers_are_told_their_own_facts_and_one_generic_risk_reason():
    from bnpl.underwriting import customer_reasons

    reasons = [
        {
            "code": "overdue_balance",
            "message": "1 installment(s) and 0 wallet debt(s) are overdue.",
        },
        {
            "code": "shared_payment_method",
            "message": "2 other customer(s) saved or use this card.",
        },
        {"code": "velocity", "message": "4 applications in 24 hours (limit 3)."},
        {"code": "borrower_blocked", "message": "The customer may not take new plans: 31-60."},
        {"code": "score_too_low", "message": "The credit score 420 is below 450."},
    ]

    shown = customer_reasons(status="declined", reasons=reasons)

    assert shown == [
        {
            "code": "overdue_balance",
            "message": "1 installment(s) and 0 wallet debt(s) are overdue.",
        },
        {"code": "risk_check", "message": "The application did not pass our risk checks."},
        {
            "code": "borrower_blocked",
            "message": "New installment plans are paused on this account.",
        },
        {
            "code": "score_too_low",
            "message": "The repayment history on this account does not support this plan yet.",
        },
    ]
    assert customer_reasons(status="review", reasons=reasons) == []
