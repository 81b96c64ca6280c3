"""Money in integer minor units.

- ``Money`` is a frozen value: an ``int`` of minor units and an ISO 4217 code. No float
  ever touches it.
- ``CURRENCY_EXPONENTS`` is the one table of minor-unit exponents.
- ``to_minor`` is the one place a ``Decimal`` (an interest, a percentage of a total) turns
  back into minor units, with the one rounding rule ``ROUNDING`` (half to even).
- ``allocate`` is the one way to split a total: the parts always sum exactly to the total.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from core.errors import InvalidInput

# ISO 4217 minor-unit exponents of the currencies the product accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "CAD": 2, "CHF": 2, "CLP": 0, "CZK": 2, "DKK": 2, "EUR": 2,
    "GBP": 2, "HUF": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "NOK": 2,
    "NZD": 2, "OMR": 3, "PLN": 2, "RON": 2, "SEK": 2, "TND": 3, "USD": 2,
}  # fmt: skip

# The one rounding rule for turning computed amounts into minor units.
ROUNDING = ROUND_HALF_EVEN

# Largest amount the product accepts anywhere, in minor units (10^15: 10 trillion EUR);
# keeps every sum of order lines far inside a signed 64-bit column.
MAX_MINOR = 10**15

# The one spelling of an amount in a request: ASCII digits, an optional leading "-" and an
# optional fraction. No "+", no exponent, no "_" separators, no spaces, no other scripts' digits.
AMOUNT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_AMOUNT_RE = re.compile(AMOUNT_PATTERN, re.ASCII)


class MoneyError(InvalidInput):
    code = "money.invalid"


def exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"Unknown currency {currency!r}.", code="money.unknown_currency") from None


def to_minor(value: Decimal, currency: str) -> int:
    """Round a computed major-unit ``Decimal`` to minor units with ``ROUNDING``."""
    scaled = value.scaleb(exponent(currency))
    return int(scaled.quantize(Decimal(1), rounding=ROUNDING))


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` minor units in proportion to ``weights``; the parts sum to ``total``.

    The rule (largest remainder): each part first gets the floor of its exact share; the
    minor units left over go one each to the parts with the largest fractional remainders,
    the earlier part first on a tie. Equal weights therefore give parts that differ by at
    most one minor unit, the larger ones first.
    """
    if not weights:
        raise ValueError("allocate needs at least one weight")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    parts = [magnitude * w // weight_sum for w in weights]
    left = magnitude - sum(parts)
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (-(magnitude * weights[i] % weight_sum), i)
    )
    for i in by_remainder[:left]:
        parts[i] += 1
    return [sign * p for p in parts]


@dataclass(frozen=True, slots=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.minor) is not int:
            raise TypeError(f"Money.minor must be int, got {type(self.minor).__name__}")
        exponent(self.currency)

    # --- construction ---------------------------------------------------------------
    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, amount: str | int | Decimal, currency: str) -> Money:
        """Exact parse of a major-unit amount; more decimals than the currency has is an error.

        A string must match ``AMOUNT_PATTERN`` (ASCII digits, no sign but ``-``, no exponent,
        no spaces); ints and Decimals come from code, never from a request body.
        """
        exp = exponent(currency)
        if isinstance(amount, bool | float):
            raise MoneyError('Amount must be a decimal string such as "12.34".')
        if isinstance(amount, str):
            if not _AMOUNT_RE.fullmatch(amount):
                raise MoneyError(f"{amount[:40]!r} is not a decimal amount.")
            value = Decimal(amount)
        elif isinstance(amount, int):
            value = Decimal(amount)
        elif isinstance(amount, Decimal):
            value = amount
        else:
            raise MoneyError('Amount must be a decimal string such as "12.34".')
        if not value.is_finite():
            raise MoneyError(f"{amount!r} is not a decimal amount.")
        # Read the digits without a decimal context: scaling "1e-9999999999" would underflow
        # to zero, and a huge exponent would overflow.
        _sign, digits, power = value.as_tuple()
        assert isinstance(power, int)  # finite
        significant = list(digits)
        while len(significant) > 1 and significant[-1] == 0 and power < 0:
            significant.pop()
            power += 1
        if any(significant) and power < -exp:
            raise MoneyError(
                f"{currency} amounts have at most {exp} decimal place(s).",
                code="money.too_many_decimals",
            )
        if any(significant) and len(significant) + power + exp > 16:  # beyond MAX_MINOR
            raise MoneyError("Amount is too large.", code="money.too_large")
        minor = int(value.scaleb(exp))
        if abs(minor) > MAX_MINOR:
            raise MoneyError("Amount is too large.", code="money.too_large")
        return cls(minor, currency)

    # --- presentation ---------------------------------------------------------------
    @property
    def exponent(self) -> int:
        return CURRENCY_EXPONENTS[self.currency]

    def to_decimal(self) -> Decimal:
        return Decimal(self.minor).scaleb(-self.exponent)

    def amount_str(self) -> str:
        exp = self.exponent
        return f"{self.to_decimal():.{exp}f}"

    def __str__(self) -> str:
        return f"{self.amount_str()} {self.currency}"

    def as_dict(self) -> dict[str, str]:
        """The API's shape: ``{"amount": "123.45", "currency": "EUR"}``."""
        return {"amount": self.amount_str(), "currency": self.currency}

    # --- arithmetic -----------------------------------------------------------------
    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __mul__(self, factor: int) -> Money:
        if type(factor) is not int:
            raise TypeError("Money can only be multiplied by an int; use to_minor for rates")
        return Money(self.minor * factor, self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    def is_zero(self) -> bool:
        return self.minor == 0

    def is_positive(self) -> bool:
        return self.minor > 0

    def allocate(self, weights: Sequence[int]) -> list[Money]:
        return [Money(p, self.currency) for p in allocate(self.minor, weights)]

    def split(self, parts: int) -> list[Money]:
        return self.allocate([1] * parts)


def money_sum(items: Sequence[Money], currency: str) -> Money:
    total = Money.zero(currency)
    for item in items:
        total = total + item
    return total
