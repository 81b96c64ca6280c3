from django.conf import settings
from rest_framework import serializers

from core.api.fields import MoneyField
from core.money import Money
from oms.models import Order, OrderLine, PaymentMethod


class LineInputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=200)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.MAX_LINE_QUANTITY)
    unit_price = MoneyField()
    tax = MoneyField(
        allow_zero=True, required=False, help_text="Tax of the whole line; zero when omitted"
    )
    merchant_category = serializers.CharField(max_length=60, required=False, default="")


class CheckoutInputSerializer(serializers.Serializer):
    payment_method = serializers.ChoiceField(choices=PaymentMethod.choices)
    lines = LineInputSerializer(many=True, allow_empty=False, max_length=settings.MAX_ORDER_LINES)
    external_reference = serializers.CharField(
        max_length=100, required=False, allow_null=True, help_text="The channel's own order number"
    )
    renewal_of = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="A subscription renewal: the id of the order it renews. Channel keys only.",
    )
    channel = serializers.SlugField(
        required=False,
        help_text="Sales channel code when a customer token places the "
        "order (default: web); ignored for channel keys",
    )

    card_payment_method = serializers.CharField(
        required=False,
        max_length=128,
        help_text="With wallet_card: the card processor's token for the customer's card "
        "(never a card number)",
    )

    def validate(self, attrs: dict) -> dict:
        if attrs["payment_method"] == PaymentMethod.WALLET_CARD and not attrs.get(
            "card_payment_method"
        ):
            raise serializers.ValidationError(
                {"card_payment_method": ["Required with payment_method wallet_card."]}
            )
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
        )
        read_only_fields = fields


class OrderOutputSerializer(serializers.ModelSerializer):
    channel = serializers.CharField(source="channel.code")
    total = MoneyField(source="total_money")
    lines = LineOutputSerializer(many=True)

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
            "created_at",
            "confirmed_at",
            "fulfilled_at",
            "cancelled_at",
            "lines",
        )
        read_only_fields = fields


class CancelInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=255, required=False, default="Cancelled by customer")
