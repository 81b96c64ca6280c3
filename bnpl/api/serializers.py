from rest_framework import serializers

from bnpl.models import (
    AprStatus,
    Decider,
    DownPayment,
    Frequency,
    InterestMethod,
    PromotionKind,
)
from bnpl.quoting import Quote
from core.api.fields import MoneyField, StrictCharField
from core.money import Money

APR_STATUS_HELP = (
    "rate: apr is the rate (0.00 only for a plan that costs nothing; any cost shows at "
    "least 0.01); above_ceiling: the rate exceeds 9999.99 % a year; no_finite_rate: the "
    "payment at checkout already covers the amount, so what follows is cost with no credit"
)


class QuoteInputSerializer(serializers.Serializer):
    amount = MoneyField(help_text="The cart's total")
    merchant_categories = serializers.ListField(
        child=StrictCharField(max_length=60),
        max_length=100,
        required=False,
        default=list,
        help_text="Merchant category of each line of the cart (repeats are fine); a "
        "category promotion applies only when it covers every one of them",
    )


class QuoteLineOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField(help_text="0: a percent down payment")
    due_date = serializers.DateField()
    principal = MoneyField()
    interest = MoneyField()
    fee = MoneyField()
    total = MoneyField()


class QuoteTermsOutputSerializer(serializers.Serializer):
    installment_count = serializers.IntegerField(
        help_text="Installments after any percent down payment"
    )
    frequency = serializers.ChoiceField(choices=Frequency.choices)
    down_payment = serializers.ChoiceField(choices=DownPayment.choices)
    down_payment_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    interest_method = serializers.ChoiceField(choices=InterestMethod.choices)
    nominal_apr = serializers.DecimalField(
        max_digits=6, decimal_places=3, help_text="Percent a year, before fees"
    )
    origination_fee_flat = MoneyField()
    origination_fee_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    installment_fee = MoneyField()


class QuotePromotionOutputSerializer(serializers.Serializer):
    code = StrictCharField()
    name = StrictCharField()
    kind = serializers.ChoiceField(choices=PromotionKind.choices)
    reason = StrictCharField(help_text="Why the promotion applies to this cart")


class QuoteProductOutputSerializer(serializers.Serializer):
    code = StrictCharField()
    name = StrictCharField()
    decider = serializers.ChoiceField(
        choices=Decider.choices,
        help_text="partner: a lending partner decides, and the terms it approves replace these",
    )


class QuoteTotalsOutputSerializer(serializers.Serializer):
    principal = MoneyField()
    interest = MoneyField()
    fees = MoneyField()
    total = MoneyField(help_text="Everything the customer pays")
    cost = MoneyField(help_text="Cost of credit: total − principal")
    due_at_checkout = MoneyField(
        allow_zero=True, help_text="The down payment line charged at checkout (zero if none)"
    )


class QuoteOutputSerializer(serializers.Serializer):
    product = QuoteProductOutputSerializer()
    terms = QuoteTermsOutputSerializer()
    promotion = QuotePromotionOutputSerializer(allow_null=True)
    schedule = QuoteLineOutputSerializer(many=True)
    totals = QuoteTotalsOutputSerializer()
    apr = serializers.DecimalField(
        max_digits=8,
        decimal_places=2,
        allow_null=True,
        help_text="Effective annual rate of the whole cost of credit (interest and fees), "
        "percent; null when there is no rate to show (apr_status says why)",
    )
    apr_status = serializers.ChoiceField(choices=AprStatus.choices, help_text=APR_STATUS_HELP)

    def to_representation(self, quote: Quote) -> dict:
        return super().to_representation(_present(quote))


class QuoteListOutputSerializer(serializers.Serializer):
    plans = QuoteOutputSerializer(many=True)


def _present(quote: Quote) -> dict:
    """The quote with amounts as ``Money`` in the cart's currency, shaped for the output."""
    schedule, terms = quote.schedule, quote.terms

    def money(minor: int) -> Money:
        return Money(minor, terms.currency)

    down = schedule.down_payment_line
    promotion = quote.promotion
    return {
        "product": {
            "code": quote.product.code,
            "name": quote.product.name,
            "decider": quote.product.decider,
        },
        "terms": {
            "installment_count": terms.installment_count,
            "frequency": terms.frequency,
            "down_payment": terms.down_payment,
            "down_payment_percent": terms.down_payment_percent,
            "interest_method": terms.interest_method,
            "nominal_apr": terms.apr,
            "origination_fee_flat": money(terms.origination_fee_flat),
            "origination_fee_percent": terms.origination_fee_percent,
            "installment_fee": money(terms.installment_fee),
        },
        "promotion": (
            {
                "code": promotion.promotion.code,
                "name": promotion.promotion.name,
                "kind": promotion.promotion.kind,
                "reason": promotion.reason,
            }
            if promotion
            else None
        ),
        "schedule": [
            {
                "number": line.number,
                "due_date": line.due_date,
                "principal": money(line.principal),
                "interest": money(line.interest),
                "fee": money(line.fee),
                "total": money(line.total),
            }
            for line in schedule.lines
        ],
        "totals": {
            "principal": money(schedule.principal),
            "interest": money(schedule.interest),
            "fees": money(schedule.fees),
            "total": money(schedule.total),
            "cost": money(schedule.cost),
            "due_at_checkout": money(down.total if down else 0),
        },
        "apr": schedule.apr,
        "apr_status": schedule.apr_status,
    }
