"""Every demo channel key the README documents authenticates against the seeded demo."""

import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from customers.models import Customer
from oms.management.commands.seed_demo import CHANNELS

pytestmark = pytest.mark.django_db

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_keys() -> dict[str, str]:
    """``{channel code: key}`` for every channel key the README shows, a documented
    pattern (``ch_demo<code>_demo-key-<code>``) filled in for the channels it covers."""
    text = README.read_text()
    keys = {code: key for key, code in re.findall(r"`(ch_demo\w*_demo-key-([\w-]+))`", text)}
    for pattern in re.findall(r"`(ch_demo<code>[^`]*)`", text):
        for code, _, _ in CHANNELS:
            keys.setdefault(code, pattern.replace("<code>", code))
    return keys


def test_the_readme_documents_a_working_key_for_every_demo_channel():
    call_command("seed_demo", stdout=io.StringIO())
    keys = documented_keys()
    assert set(keys) == {code for code, _, _ in CHANNELS}
    customer = Customer.objects.get(user__username="alice@example.com")
    for code, key in keys.items():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(customer.pk))
        response = client.get("/api/v1/orders")
        assert response.status_code == 200, (code, key, response.json())
