"""Amounts in requests are exactly ``-?[0-9]+(\\.[0-9]+)?`` and the schema says so, with the
other constraints a generator needs to write a valid request (issue 12 #14)."""

import re
from io import StringIO

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command

from core.money import CURRENCY_EXPONENTS, MAX_MINOR, Money, MoneyError

pytestmark = pytest.mark.django_db

REFUSED = ["1_0.00", "١٢", "1e1", "1E-2", " 12.00", "12.00 ", "+12.00", "1e-9999999999",
           "12.", ".5", "0x10", "12,00", "Infinity", "NaN", "", "-", "١٢.٠٠"]  # fmt: skip


@pytest.mark.parametrize("amount", [*REFUSED, 12, 0, 1.5, True, None, ["1"], {"a": "1"}])
def test_quotes_refuse_anything_but_a_plain_decimal_string(customer_api, amount, unchanged_db):
    check = unchanged_db()
    response = customer_api.post(
        "/api/v1/bnpl/quotes", {"amount": {"amount": amount, "currency": "EUR"}}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert "amount.amount" in response.json()["error"]["fields"]
    check()


@pytest.mark.parametrize("text", REFUSED)
def test_money_parse_refuses_what_is_not_a_plain_decimal_string(text):
    with pytest.raises(MoneyError):
        Money.parse(text, "EUR")


def test_a_vanishing_exponent_is_too_many_decimals_not_zero():
    from decimal import Decimal

    with pytest.raises(MoneyError) as excinfo:
        Money.parse(Decimal("1e-9999999999"), "EUR")
    assert excinfo.value.code == "money.too_many_decimals"


@pytest.mark.parametrize(
    ("text", "minor"), [("12.30", 1230), ("0012.300", 1230), ("-1.5", -150), ("0", 0)]
)
def test_plain_decimal_strings_still_parse(text, minor):
    assert Money.parse(text, "EUR").minor == minor


def test_the_eligibility_query_refuses_exponents_and_spaces(customer_api):
    for amount in ["1e1", " 12", "+1", "١٢"]:
        response = customer_api.get("/api/v1/wallet/bnpl-eligibility", {"amount": amount})
        assert response.status_code == 400, (amount, response.json())
    assert customer_api.get("/api/v1/wallet/bnpl-eligibility", {"amount": "12"}).status_code == 200


# --- the schema publishes the constraints ------------------------------------------------


def _schema() -> dict:
    out = StringIO()
    call_command("spectacular", stdout=out)
    return yaml.safe_load(out.getvalue())


def _accepts(schema: dict, money: dict, components: dict) -> bool:
    def enum(branch: dict) -> list[str]:
        return components[branch["properties"]["currency"]["$ref"].split("/")[-1]]["enum"]

    branches = [
        b
        for b in schema["oneOf"]
        if money["currency"] in enum(b)
        and re.fullmatch(b["properties"]["amount"]["pattern"].strip("^$"), money["amount"])
    ]
    return len(branches) == 1


def test_the_schema_publishes_exactly_the_amounts_the_parser_accepts():
    components = _schema()["components"]["schemas"]
    positive, any_amount = components["PositiveMoneyInput"], components["MoneyInput"]
    assert components["Money"]["properties"]["amount"]["pattern"] == r"^-?[0-9]+(\.[0-9]+)?$"
    cases = [("EUR", a) for a in ["12.34", "12.340", "0.01", "0", "0.00", "12.345", "-1", "1e1"]]
    cases += [("JPY", a) for a in ["1500", "1500.0", "1.5", "0"]]
    cases += [("KWD", a) for a in ["1.234", "0.001", "1.2345"]]
    cases += [("EUR", str(MAX_MINOR // 100 - 1)), ("EUR", "１２")]
    cases += [("XXX", "1")]
    for currency, amount in cases + [(c, REFUSED[0]) for c in CURRENCY_EXPONENTS]:
        try:
            minor = Money.parse(amount, currency).minor
        except MoneyError:
            minor = None
        money = {"amount": amount, "currency": currency}
        accepted = _accepts(any_amount, money, components)
        assert accepted == (minor is not None and minor >= 0), money
        assert _accepts(positive, money, components) == (minor is not None and minor > 0), money


def test_the_schema_publishes_what_an_order_needs():
    schema = _schema()
    components = schema["components"]["schemas"]
    checkout = components["CheckoutInputRequest"]["properties"]
    assert checkout["lines"]["maxItems"] == settings.MAX_ORDER_LINES
    assert checkout["lines"]["minItems"] == 1
    line = components["LineInputRequest"]["properties"]
    assert line["quantity"]["maximum"] == settings.MAX_LINE_QUANTITY
    assert line["quantity"]["minimum"] == 1
    assert line["sku"]["maxLength"] == 64
    assert checkout["card_payment_method"]["pattern"].startswith("^pm_")
    order = schema["paths"]["/api/v1/orders"]["post"]
    key = next(p for p in order["parameters"] if p["name"] == "Idempotency-Key")
    assert key["schema"]["pattern"] == r"^[\x21-\x7e]{1,255}$"
    assert key["schema"]["maxLength"] == 255
    withdrawal = components["WithdrawalInputRequest"]["properties"]
    assert withdrawal["iban"]["pattern"]


@pytest.mark.parametrize("amount", ["-5.00", "0", "0.00", "-0"])
def test_the_eligibility_query_refuses_zero_and_negative_amounts_as_the_schema_says(
    customer_api, amount
):
    response = customer_api.get("/api/v1/wallet/bnpl-eligibility", {"amount": amount})
    assert response.status_code == 400, response.json()
    assert "amount" in response.json()["error"]["fields"]
    operation = _schema()["paths"]["/api/v1/wallet/bnpl-eligibility"]["get"]
    (param,) = [p for p in operation["parameters"] if p["name"] == "amount"]
    assert not re.search(param["schema"]["pattern"], amount)
    assert re.search(param["schema"]["pattern"], "0.005")  # a KWD amount
