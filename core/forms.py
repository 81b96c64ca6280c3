"""Admin form parts shared by every app.

Money columns hold integer minor units; people type and read amounts in the currency's
units ("12.50 EUR", "1500 JPY"). ``MoneyFormMixin`` is the one translation between the two
for forms: its ``money_fields`` are shown in major units and cleaned back to minor units
with the currency's exponent (``core.money.CURRENCY_EXPONENTS``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from django import forms
from django.conf import settings

from core.money import CURRENCY_EXPONENTS, Money, MoneyError


class MoneyAmountField(forms.DecimalField):
    """An amount typed in the currency's units; ``MoneyFormMixin`` turns it into minor units."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", Decimal(0))
        super().__init__(max_digits=None, decimal_places=None, **kwargs)


class MoneyFormMixin:
    """Show and parse ``money_fields`` (minor-unit columns) in the currency's units.

    The currency is the form's ``currency_field`` when it has one, else ``form_currency()``;
    an amount with more decimals than the currency has is refused, never rounded.
    """

    money_fields: ClassVar[tuple[str, ...]] = ()
    currency_field: ClassVar[str | None] = "currency"
    money_notes: ClassVar[dict[str, str]] = {}  # per field, appended to the help text

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        currency = self.form_currency()
        where = "the currency above" if self.currency_field else currency
        example = Money(1250, currency).amount_str()
        fields, initial = self.fields, self.initial  # type: ignore[attr-defined]
        for name in self.money_fields:
            fields[name] = MoneyAmountField(
                label=fields[name].label,
                required=fields[name].required,
                help_text=f"In {where}, e.g. {example}{self.money_notes.get(name, '')}",
            )
            minor = initial.get(name)
            if isinstance(minor, int):  # a stored column: minor units
                initial[name] = Money(minor, currency).to_decimal()

    def form_currency(self, data: dict[str, Any] | None = None) -> str:
        """The currency of the amounts: the chosen one, the stored one, or the default."""
        if not self.currency_field:
            return settings.DEFAULT_CURRENCY
        chosen = (data or {}).get(self.currency_field)
        instance = getattr(self, "instance", None)
        stored = getattr(instance, self.currency_field, None) if instance is not None else None
        return chosen or stored or settings.DEFAULT_CURRENCY

    def clean(self) -> dict[str, Any]:
        data = super().clean()  # type: ignore[misc]
        add_error = self.add_error  # type: ignore[attr-defined]
        currency = self.form_currency(data)
        if currency not in CURRENCY_EXPONENTS:
            add_error(self.currency_field, "Use an ISO 4217 code the product accepts, e.g. EUR.")
            return data
        for name in self.money_fields:
            value = data.get(name)
            if value is None:
                continue
            try:  # exact: more decimals or digits than the column holds are refused
                data[name] = Money.parse(value, currency).minor
            except MoneyError as exc:
                add_error(name, exc.message)
        return data
