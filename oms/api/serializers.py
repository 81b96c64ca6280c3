from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from bnpl.debit_controls import PAYMENT_METHOD_TOKEN
from bnpl.underwriting import customer_reasons
from core.api.fields import (
    BoundedListSerializer,
    MoneyField,
    StrictCharField,
    StrictIntegerField,
    StrictRegexField,
    StrictSlugField,
)
from core.api.idempotency import VISIBLE_ASCII
from core.money import Money
from oms.models import Dispute, DisputeStatus, Order, OrderLine, PaymentMethod


class LineInputSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=64)
    name = StrictCharField(max_length=200)
    quantity = StrictIntegerField(min_value=1, max_value=settings.MAX_LINE_QUANTITY)
    unit_price = MoneyField()
    tax = MoneyField(
        allow_zero=True, required=False, help_text="Tax of the whole line; zero when omitted"
    )
    merchant_category = StrictCharField(max_length=60, required=False, default="")

    class Meta:
        list_serializer_class = BoundedListSerializer


class CheckoutInputSerializer(serializers.Serializer):
    payment_method = serializers.ChoiceField(choices=PaymentMethod.choices)
    lines = LineInputSerializer(many=True, allow_empty=False, max_length=settings.MAX_ORDER_LINES)
    external_reference = StrictCharField(
        max_length=100, required=False, allow_null=True, help_text="The channel's own order number"
    )
    renewal_of = StrictIntegerField(
        required=False,
        min_value=1,
        help_text="A subscription renewal: the id of the order it renews. Channel keys only.",
    )
    channel = StrictSlugField(
        required=False,
        help_text="Sales channel code when a customer token places the "
        "order (default: web); ignored for channel keys",
    )

    card_payment_method = StrictRegexField(
        PAYMENT_METHOD_TOKEN.pattern,
        required=False,
        max_length=63,
        trim_whitespace=False,
        help_text="With wallet_card and installments: the token (pm_…) of one of the "
        "customer's own saved cards (GET /api/v1/payment-methods; never a card number); "
        "installments are debited from it. Any other token, another customer's or a removed "
        "card's included: 422 payments.payment_method_unknown",
    )
    plan_product = StrictSlugField(
        required=False,
        max_length=40,
        help_text="With installments: the code of the installment product (see the quotes)",
    )
    authorization_token = StrictRegexField(
        VISIBLE_ASCII,
        required=False,
        max_length=255,
        trim_whitespace=False,
        help_text="With klarna: the authorization_token from Klarna's widget; with afterpay: "
        "the checkout token the customer approved",
    )

    def validate(self, attrs: dict) -> dict:
        method = attrs["payment_method"]
        needs = {
            PaymentMethod.WALLET_CARD: ("card_payment_method",),
            PaymentMethod.INSTALLMENTS: ("plan_product", "card_payment_method"),
            PaymentMethod.KLARNA: ("authorization_token",),
            PaymentMethod.AFTERPAY: ("authorization_token",),
        }.get(method, ())
        missing = {
            name: [f"Required with payment_method {method}."]
            for name in needs
            if not attrs.get(name)
        }
        if missing:
            raise serializers.ValidationError(missing)
        return attrs

    def validate_lines(self, lines: list[dict]) -> list[dict]:
        currency = lines[0]["unit_price"].currency
        errors: dict[str, list[str]] = {}
        for index, line in enumerate(lines):
            line.setdefault("tax", Money.zero(currency))
            for name in ("unit_price", "tax"):
                if line[name].currency != currency:
                    errors[f"{index}.{name}.currency"] = [
                        f"Every amount of an order must be in {currency}."
                    ]
        if errors:
            raise serializers.ValidationError(errors)
        return lines


class LineOutputSerializer(serializers.ModelSerializer):
    unit_price = MoneyField(source="unit_price_money")
    tax = MoneyField(source="tax_money", allow_zero=True)
    total = MoneyField(source="total_money")

    class Meta:
        model = OrderLine
        fields = (
            "line_no",
            "sku",
            "name",
            "quantity",
            "unit_price",
            "tax",
            "total",
            "merchant_category",
            "refunded_quantity",
        )
        read_only_fields = fields


class CreditReasonSerializer(serializers.Serializer):
    code = StrictCharField()
    message = StrictCharField()


class CreditDecisionSerializer(serializers.Serializer):
    """The credit decision behind an order paid in installments."""

    application = serializers.IntegerField(source="pk")
    status = StrictCharField(
        help_text="pending | review | referred | approved | declined | expired | cancelled"
    )
    reasons = serializers.SerializerMethodField(
        help_text="Why it was declined, as the customer may be told; empty while in review"
    )
    decided_by = StrictCharField(help_text="internal | partner; empty while open")
    expires_at = serializers.DateTimeField(help_text="The hold ends then without a decision")
    decided_at = serializers.DateTimeField(allow_null=True)
    plan = serializers.SerializerMethodField(help_text="The plan's id once approved")

    @extend_schema_field(CreditReasonSerializer(many=True))
    def get_reasons(self, application) -> list[dict]:
        return customer_reasons(status=application.status, reasons=application.reasons)

    def get_plan(self, application) -> int | None:
        plan = getattr(application, "plan", None)
        return plan.pk if plan is not None else None


class DisputeOutputSerializer(serializers.ModelSerializer):
    """A dispute of the order: while one is open, a financed order's debits wait."""

    amount = MoneyField(source="amount_money", read_only=True, help_text="The disputed amount")
    status = serializers.ChoiceField(
        choices=DisputeStatus.choices,
        read_only=True,
        help_text="open, then won | lost | closed (withdrawn)",
    )
    reason = serializers.SerializerMethodField(
        help_text="The provider's reason code (e.g. product_not_received); empty for a dispute "
        "opened by staff, whose notes are internal"
    )
    opened_by = serializers.SerializerMethodField(help_text="provider (its notification) or staff")
    provider = serializers.CharField(
        read_only=True,
        help_text="The provider that reported it (card, klarna, afterpay); empty for staff",
    )

    class Meta:
        model = Dispute
        fields = (
            "id",
            "status",
            "reason",
            "amount",
            "provider",
            "opened_by",
            "opened_at",
            "closed_at",
        )
        read_only_fields = fields

    def get_reason(self, dispute: Dispute) -> str:
        return dispute.reason if dispute.provider else ""

    def get_opened_by(self, dispute: Dispute) -> str:
        return "provider" if dispute.provider else "staff"


class OrderOutputSerializer(serializers.ModelSerializer):
    channel = StrictCharField(source="channel.code")
    total = MoneyField(source="total_money")
    refunded = MoneyField(source="refunded_money", allow_zero=True)
    lines = LineOutputSerializer(many=True)
    credit_decision = CreditDecisionSerializer(
        source="credit_application",
        allow_null=True,
        help_text="With installments: the credit decision and the plan; null otherwise",
    )
    disputes = DisputeOutputSerializer(
        many=True, read_only=True, help_text="Disputes of the order, oldest first"
    )

    class Meta:
        model = Order
        fields = (
            "id",
            "status",
            "channel",
            "external_reference",
            "customer",
            "total",
            "payment_method",
            "renewal_of",
            "cancel_reason",
            "refunded",
            "credit_decision",
            "created_at",
            "confirmed_at",
            "fulfilled_at",
            "cancelled_at",
            "lines",
            "disputes",
        )
        read_only_fields = fields


class RefundLineInputSerializer(serializers.Serializer):
    line_no = StrictIntegerField(min_value=1)
    quantity = StrictIntegerField(min_value=1)


class RefundInputSerializer(serializers.Serializer):
    lines = serializers.ListField(  # a ListField, so the schema says minItems
        child=RefundLineInputSerializer(),
        required=False,
        allow_empty=False,
        min_length=1,
        help_text="Returned lines and units; omitted: every unit not yet refunded",
    )
    reason = StrictCharField(max_length=255)


class CancelInputSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=255, required=False, default="Cancelled by customer")
