"""No card number is ever stored: not in a model, the database, the logs or data files.

Card numbers go from the customer to the processor; the product keeps only tokens.
"""

import json
import logging
import re
import time
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from core import clock
from core.money import Money
from payments import webhooks
from payments.processing import gateway_for, payment_authorize
from payments.services import provider_webhook_secret_rotate
from tests.factories import make_customer, token_for

CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
SUSPICIOUS_FIELD = re.compile(r"card_?num|(^|_)pan($|_)|cvv|cvc|security_code", re.I)
TEST_CARD = "4242 4242 4242 4242"
EXP_YEAR = clock.now().year + 4  # the processor refuses an expired card


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_numbers_in(text: str) -> list[str]:
    found = []
    for match in CANDIDATE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(digits)
    return found


def test_the_scanner_finds_what_it_should():
    assert card_numbers_in(f"paid with {TEST_CARD} yesterday") == ["4242424242424242"]
    assert card_numbers_in("order 4242424242424241 and id 1234567890123") == []


def test_no_model_field_is_meant_to_hold_a_card_number():
    offenders = [
        f"{model._meta.label}.{field.name}"
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if SUSPICIOUS_FIELD.search(field.name)
    ]
    assert offenders == []


@pytest.mark.django_db(transaction=True)
def test_card_flows_leave_no_card_number_in_the_database_or_the_logs(account, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    gateway = gateway_for(account)
    token = gateway.save_payment_method(
        card_number=TEST_CARD.replace(" ", ""),
        exp_month=12,
        exp_year=EXP_YEAR,
        idempotency_key="pm-scan",
    )
    txn, _ = payment_authorize(
        account=account,
        reference_type="oms.order",
        reference_id="9",
        amount=Money(1000, "EUR"),
        payment_method=token,
        idempotency_key="auth-scan",
    )
    # A customer saves the card through the API: only the token comes back and is kept.
    customer = make_customer()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    saved = client.post(
        "/api/v1/payment-methods",
        {"card_number": TEST_CARD.replace(" ", ""), "exp_month": 12, "exp_year": EXP_YEAR},
        format="json",
    )
    assert saved.status_code == 201
    assert card_numbers_in(saved.content.decode()) == []
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    body = json.dumps(
        {
            "id": "evt-scan",
            "type": "payment.captured",
            "data": {"payment_id": txn.provider_reference, "amount": 1000, "currency": "EUR"},
        }
    ).encode()
    Client().post(
        "/webhooks/card/",
        body,
        content_type="application/json",
        HTTP_WEBHOOK_SIGNATURE=webhooks.signature_header(secret, body, int(time.time())),
    )
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # every column of every row
            dump += ["\t".join(map(str, row)) for row in cursor.fetchall()]
    assert card_numbers_in("\n".join(dump)) == []
    assert card_numbers_in(caplog.text) == []


def test_no_data_file_in_the_repository_holds_a_card_number():
    root = Path(settings.BASE_DIR)
    skip = {".venv", ".git", "var", "test-results", "node_modules", "staticfiles"}
    offenders = []
    data_files = {".json", ".yaml", ".yml", ".csv", ".txt", ".html", ".md"}
    for path in root.rglob("*"):
        if (
            path.is_file()
            and not skip & set(path.relative_to(root).parts)
            and path.suffix in data_files
            and card_numbers_in(path.read_text(errors="ignore"))
        ):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
