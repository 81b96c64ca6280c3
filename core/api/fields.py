"""Serializer fields for money: ``{"amount": "123.45", "currency": "EUR"}``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ComponentIdentity, ResolvedComponent
from rest_framework import serializers

from core.money import AMOUNT_PATTERN, CURRENCY_EXPONENTS, MAX_MINOR, Money, MoneyError

AMOUNT_DESCRIPTION = "Decimal string in major units, at most the currency's decimals"

# Responses: any amount the product writes, signed, always with the currency's decimals.
MONEY_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {
            "type": "string",
            "pattern": AMOUNT_PATTERN,
            "example": "123.45",
            "description": AMOUNT_DESCRIPTION,
        },
        "currency": {"type": "string", "example": "EUR", "description": "ISO 4217 code"},
    },
    "required": ["amount", "currency"],
}


def _amount_pattern(exp: int, *, positive: bool) -> str:
    """What ``MoneyField`` accepts for a currency of exponent ``exp``, as a pattern.

    ASCII digits, optional fraction with at most ``exp`` significant decimals (trailing zeros
    are fine), below ``MAX_MINOR`` minor units, not negative; not zero when ``positive``.
    """
    whole_digits = len(str(MAX_MINOR)) - 1 - exp  # MAX_MINOR is 10**15: "9" * 13 for EUR
    whole = f"0*[1-9][0-9]{{0,{whole_digits - 1}}}"
    fraction = f"(\\.[0-9]{{1,{exp}}}0*)?" if exp else "(\\.0+)?"
    if positive:
        alternatives = [whole + fraction]
        if exp:
            small = "|".join(
                "0" * k + "[1-9]" + (f"[0-9]{{0,{exp - 1 - k}}}" if k < exp - 1 else "")
                for k in range(exp)
            )
            alternatives.append(f"0+\\.({small})0*")
        return "^(" + "|".join(alternatives) + ")$"
    return f"^({whole}|0+){fraction}$"


# The currencies of each minor-unit exponent (named in SPECTACULAR_SETTINGS'
# ENUM_NAME_OVERRIDES: CurrencyExponent0Enum, …).
CURRENCIES_BY_EXPONENT: dict[int, list[str]] = {}
for _code, _exp in sorted(CURRENCY_EXPONENTS.items()):
    CURRENCIES_BY_EXPONENT.setdefault(_exp, []).append(_code)
CURRENCIES_EXPONENT_0 = CURRENCIES_BY_EXPONENT[0]
CURRENCIES_EXPONENT_2 = CURRENCIES_BY_EXPONENT[2]
CURRENCIES_EXPONENT_3 = CURRENCIES_BY_EXPONENT[3]

# A positive amount with at most as many decimals as any currency has: for an amount whose
# currency is another parameter (a query string); Money.parse then applies the currency's own.
POSITIVE_AMOUNT_PATTERN = _amount_pattern(max(CURRENCIES_BY_EXPONENT), positive=True)


def money_input_schema(*, positive: bool) -> dict[str, Any]:
    """One branch per currency exponent, so a generator reading it writes valid money."""
    by_exponent = CURRENCIES_BY_EXPONENT
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "amount": {
                        "type": "string",
                        "pattern": _amount_pattern(exp, positive=positive),
                        "description": AMOUNT_DESCRIPTION,
                    },
                    "currency": {"type": "string", "enum": codes},
                },
                "required": ["amount", "currency"],
                "additionalProperties": False,
            }
            for exp, codes in sorted(by_exponent.items())
        ],
        "example": {"amount": "123.45", "currency": "EUR"},
        "description": 'Money: {"amount": "123.45", "currency": "EUR"}; '
        + ("more than zero" if positive else "zero or more"),
    }


# At least one character str.strip() keeps (it also strips \x1c-\x1f and \x85, which
# ECMAScript's \s does not match).
NOT_BLANK_PATTERN = r"[^\s\x1c-\x1f\x85]"


class StrictCharFieldSchema(OpenApiSerializerFieldExtension):
    """A trimmed string that may not be blank says so: " " passes minLength, not the server."""

    target_class = "core.api.fields.StrictCharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        field = self.target
        if (
            direction == "request"
            and field.trim_whitespace
            and not field.allow_blank
            and "pattern" not in schema
        ):
            schema["pattern"] = NOT_BLANK_PATTERN
        return schema


class MoneyFieldSchema(OpenApiSerializerFieldExtension):
    """Requests publish exactly what ``MoneyField`` accepts; responses the general shape."""

    target_class = "core.api.fields.MoneyField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        if direction == "response":
            name, schema = "Money", MONEY_SCHEMA
        else:
            positive = not self.target.allow_zero
            name = "PositiveMoneyInput" if positive else "MoneyInput"
            schema = money_input_schema(positive=positive)
        component = ResolvedComponent(
            name=name,
            type=ResolvedComponent.SCHEMA,
            schema=schema,
            object=ComponentIdentity(name),
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


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
        elif not isinstance(amount, str):
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


class _StrictString:
    """JSON strings only: DRF's string fields would also take ``0`` and ``1.5`` as "0", "1.5"."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictCharField(_StrictString, serializers.CharField):
    default_error_messages = {"invalid": "Not a valid string."}


class StrictRegexField(_StrictString, serializers.RegexField):
    pass


class StrictSlugField(_StrictString, serializers.SlugField):
    pass


class StrictEmailField(_StrictString, serializers.EmailField):
    pass


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, as the schema says; not ``"5"`` or ``5.0``."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false``, as the schema says; not ``0``, ``"yes"`` or ``"1"``."""

    TRUE_VALUES = {True}
    FALSE_VALUES = {False}
    NULL_VALUES: set = set()

    def to_internal_value(self, data: Any) -> bool:
        if data is True or data is False:
            return data
        self.fail("invalid", input=data)
        raise AssertionError  # fail() raises


class CurrencyField(serializers.ChoiceField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=sorted(CURRENCY_EXPONENTS), **kwargs)


class BoundedListSerializer(serializers.ListSerializer):
    """A ``many=True`` serializer whose schema publishes its ``min_length``/``max_length``
    (and ``allow_empty=False``) as minItems/maxItems; set it as ``Meta.list_serializer_class``."""


class BoundedListSerializerSchema(OpenApiSerializerFieldExtension):
    target_class = "core.api.fields.BoundedListSerializer"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        field = self.target
        component = auto_schema.resolve_serializer(field.child, direction)
        min_length = field.min_length if field.min_length is not None else None
        if not field.allow_empty:
            min_length = max(min_length or 0, 1)
        schema: dict[str, Any] = {"type": "array", "items": component.ref}
        if min_length is not None:
            schema["minItems"] = min_length
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
        return schema
