"""Serializer fields for money: ``{"amount": "123.45", "currency": "EUR"}``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.money import CURRENCY_EXPONENTS, Money, MoneyError

MONEY_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {
            "type": "string",
            "example": "123.45",
            "description": "Decimal string in major units, at most the currency's decimals",
        },
        "currency": {"type": "string", "example": "EUR", "description": "ISO 4217 code"},
    },
    "required": ["amount", "currency"],
}


@extend_schema_field(MONEY_SCHEMA)
class MoneyField(serializers.Field):
    default_error_messages = {
        # Braces doubled: DRF formats these messages with str.format.
        "not_object": 'Expected {{"amount": "12.34", "currency": "EUR"}}.',
        "not_positive": "Must be greater than zero.",
        "negative": "Must not be negative.",
    }

    def __init__(self, *, allow_zero: bool = False, **kwargs: Any) -> None:
        self.allow_zero = allow_zero
        super().__init__(**kwargs)

    def to_representation(self, value: Money) -> dict[str, str]:
        return value.as_dict()

    def to_internal_value(self, data: Any) -> Money:
        if not isinstance(data, dict) or set(data) - {"amount", "currency"}:
            self.fail("not_object")
        errors: dict[str, list[str]] = {}
        currency = data.get("currency")
        if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
            errors["currency"] = [f"Unknown currency {currency!r}; use an ISO 4217 code."]
        amount = data.get("amount")
        if amount is None:
            errors["amount"] = ["This field is required."]
        elif isinstance(amount, bool | float) or not isinstance(amount, str | int):
            errors["amount"] = ['Must be a decimal string such as "12.34".']
        if errors:
            raise serializers.ValidationError(errors)
        try:
            money = Money.parse(amount, currency)
        except MoneyError as exc:
            raise serializers.ValidationError({"amount": [exc.message]}) from None
        if money.minor < 0:
            raise serializers.ValidationError({"amount": [self.error_messages["negative"]]})
        if money.minor == 0 and not self.allow_zero:
            raise serializers.ValidationError({"amount": [self.error_messages["not_positive"]]})
        return money


@extend_schema_field(OpenApiTypes.STR)
class CurrencyField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=sorted(CURRENCY_EXPONENTS), **kwargs)
