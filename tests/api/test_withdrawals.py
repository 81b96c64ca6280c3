"""Withdrawals go only to IBANs that pass their country's length and layout and the
ISO 13616 mod-97 check (issue 12 #15)."""

import pytest

from tests.factories import money

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "iban",
    [
        "AA0000000000000",  # no such country
        "NL00ABNA0417164300",  # check digits wrong
        "NL91ABNA0417164301",  # one digit changed
        "NL91ABNA04171643000",  # the Netherlands' IBANs have 18 characters
        "DE89370400440532013001",
    ],
)
def test_a_withdrawal_to_an_invalid_iban_is_refused_and_writes_nothing(
    customer_api, iban, unchanged_db
):
    check = unchanged_db()
    response = customer_api.post(
        "/api/v1/wallet/withdrawals", {"amount": money("20.00"), "iban": iban}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "wallet.invalid_iban"
    assert "iban" in response.json()["error"]["fields"]
    check()


@pytest.mark.parametrize("iban", ["NL91ABNA0417164300", "DE89370400440532013000"])
def test_a_withdrawal_to_a_valid_iban_is_paid_out(customer_api, iban):
    response = customer_api.post(
        "/api/v1/wallet/withdrawals", {"amount": money("20.00"), "iban": iban}, format="json"
    )
    assert response.status_code == 201, response.json()
