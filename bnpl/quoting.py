"""Quotes: every installment plan a customer can get for a cart, each fully priced.

A product is offered when it is active, in the cart's currency, the amount lies within
its ``min_amount``..``max_amount`` (inclusive), and whoever decides its credit can: the
internal decision always, a lending partner while its provider account is enabled. (A
partner may approve other terms than the product's; the quote shows the product's.) Each
offered product gets the best promotion that applies to it, and its schedule from
``bnpl.pricing.price_schedule`` starting on the business date of the quote.

When a promotion applies (all of these hold):

- it is active and ``valid_from <= at < valid_until`` (no ``valid_until``: open-ended);
- its ``products`` are empty (every product) or include the product;
- its ``merchant_categories`` are empty (any cart) or contain **every** category of the
  cart's lines: a cart that mixes a promoted category with another one does not get a
  category promotion, and a cart whose categories are unknown (none given) gets none;
- its ``customer_tiers`` are empty (anyone) or contain the customer's tier;
- it makes the product cheaper (``bnpl.pricing.apply_promotion``: zero interest on a 0 %
  product, say, changes nothing and does not count).

Among the promotions that apply to a product, the lowest ``priority`` number wins; on equal
priority the promotion code decides (alphabetical), so the choice is deterministic. Only one
promotion applies to a plan. The quote names it and says why it applied.

Reads are a constant number of queries whatever the number of products, promotions or
installments: the products, the current promotions and their product links.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from bnpl.models import Decider, PlanProduct, Promotion, PromotionKind
from bnpl.pricing import (
    Schedule,
    Terms,
    apply_promotion,
    price_schedule,
    schedule_on_due_dates,
)
from bnpl.selectors import income_aligned_due_dates
from core import clock
from core.money import Money
from customers.models import Customer


@dataclass(frozen=True)
class AppliedPromotion:
    promotion: Promotion
    reason: str  # human-readable: why this promotion applied to this cart and customer

    @property
    def code(self) -> str:
        return self.promotion.code


@dataclass(frozen=True)
class Quote:
    product: PlanProduct
    terms: Terms  # after the promotion, if any; what a plan would snapshot
    schedule: Schedule
    promotion: AppliedPromotion | None


def quote_plans(
    *,
    customer: Customer,
    amount: Money,
    merchant_categories: Sequence[str],
    at: datetime | None = None,
) -> list[Quote]:
    """Every plan ``customer`` can get for a cart of ``amount`` with lines in these categories.

    ``at`` (default: now) decides which promotions are valid; schedules start on its business
    date. Products come in code order.
    """
    at = at or clock.now()
    products = list(
        PlanProduct.objects.filter(
            Q(decider=Decider.INTERNAL) | Q(partner_account__enabled=True),
            active=True,
            currency=amount.currency,
            min_amount__lte=amount.minor,
            max_amount__gte=amount.minor,
        ).order_by("code")
    )
    if not products:
        return []
    promotions = current_promotions(at=at)
    return [
        _quote(
            product=product,
            promotions=promotions,
            customer=customer,
            amount=amount,
            categories=_categories(merchant_categories),
            at=at,
        )
        for product in products
    ]


def quote_product(
    *,
    customer: Customer,
    product: PlanProduct,
    amount: Money,
    merchant_categories: Sequence[str],
    at: datetime | None = None,
) -> Quote:
    """The quote of one product (the caller has checked currency and limits)."""
    at = at or clock.now()
    return _quote(
        product=product,
        promotions=current_promotions(at=at),
        customer=customer,
        amount=amount,
        categories=_categories(merchant_categories),
        at=at,
    )


def current_promotions(*, at: datetime) -> list[Promotion]:
    """Active promotions valid at ``at``, best first, with the ids of the products they name
    in ``product_ids`` (empty: every product). Two queries."""
    promotions = list(
        Promotion.objects.filter(active=True, valid_from__lte=at)
        .exclude(valid_until__lte=at)
        .order_by("priority", "code")
    )
    scoped: dict[int, set[int]] = {promotion.id: set() for promotion in promotions}
    if promotions:
        links = Promotion.products.through.objects.filter(promotion_id__in=scoped)
        for promotion_id, product_id in links.values_list("promotion_id", "planproduct_id"):
            scoped[promotion_id].add(product_id)
    for promotion in promotions:
        promotion.product_ids = frozenset(scoped[promotion.id])
    return promotions


def _categories(merchant_categories: Iterable[str]) -> frozenset[str]:
    return frozenset(c for c in merchant_categories if c)


def _quote(
    *,
    product: PlanProduct,
    promotions: list[Promotion],
    customer: Customer,
    amount: Money,
    categories: frozenset[str],
    at: datetime,
) -> Quote:
    base = product.terms()
    terms, applied = base, None
    for promotion in promotions:  # best first
        if not _eligible(promotion, product=product, customer=customer, categories=categories):
            continue
        promoted = apply_promotion(
            base, kind=promotion.kind, code=promotion.code, apr=promotion.apr
        )
        if promoted is None:
            continue
        terms = promoted
        applied = AppliedPromotion(
            promotion=promotion,
            reason=_reason(promotion, product=product, customer=customer, categories=categories),
        )
        break
    start = at.astimezone(clock.business_tz()).date()
    schedule = price_schedule(terms=terms, amount=amount, start_date=start)
    if product.decider != Decider.PARTNER and customer.pk is not None:
        # The dates (and so the interest and APR) the plan would get: the customer's income
        # days, when opted in on a cash-flow-aware product (``bnpl.services.plan_create``).
        due_dates = income_aligned_due_dates(customer=customer, product=product, schedule=schedule)
        if due_dates is not None:
            schedule = schedule_on_due_dates(schedule, due_dates)
    return Quote(product=product, terms=terms, schedule=schedule, promotion=applied)


def _eligible(
    promotion: Promotion, *, product: PlanProduct, customer: Customer, categories: frozenset[str]
) -> bool:
    if promotion.product_ids and product.id not in promotion.product_ids:
        return False
    if promotion.merchant_categories and not (
        categories and categories <= set(promotion.merchant_categories)
    ):
        return False
    return not promotion.customer_tiers or customer.tier in promotion.customer_tiers


def _reason(
    promotion: Promotion, *, product: PlanProduct, customer: Customer, categories: frozenset[str]
) -> str:
    kind = PromotionKind(promotion.kind)
    if kind == PromotionKind.REDUCED_APR:
        offer = f"APR reduced from {product.apr.normalize()} % to {promotion.apr.normalize()} %"
    elif kind == PromotionKind.ZERO_INTEREST:
        offer = "no interest"
    else:
        offer = "no origination or installment fees"
    parts = [f"{promotion.name} ({promotion.code}): {offer}"]
    if promotion.merchant_categories:
        parts.append(
            "every line's merchant category ("
            + ", ".join(sorted(categories))
            + ") is one the promotion covers"
        )
    else:
        parts.append("for any merchant category")
    if promotion.customer_tiers:
        parts.append(f"customer tier {customer.get_tier_display()} qualifies")
    else:
        parts.append("for every customer tier")
    if promotion.product_ids:
        parts.append(f"offered on {product.name}")
    if promotion.valid_until:
        until = promotion.valid_until.astimezone(clock.business_tz())
        parts.append(f"valid until {until:%Y-%m-%d %H:%M}")
    parts.append(f"priority {promotion.priority}")
    return "; ".join(parts) + "."
