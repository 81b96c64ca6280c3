"""Every money input of the admin is typed and shown in the currency's units."""

import pytest
from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from core.forms import MoneyAmountField
from payments.models import ProviderAccount
from tests.factories import enable_wallet_bnpl, make_customer
from wallet.models import BnplCustomerProfile

pytestmark = pytest.mark.django_db

OUR_APPS = {"core", "customers", "ledger", "payments", "wallet", "bnpl", "collections", "oms"}
# Whole-number inputs that are not money: counts, days, hours, priorities, stock.
NOT_MONEY = {
    "payments.ProviderAccount": {"rotation_overlap_hours"},
    "wallet.BnplSettings": {"repayment_days", "grace_days"},
    "bnpl.PlanProduct": {
        "installment_count",
        "late_fee_grace_days",
        "reschedule_max_days",
        "reschedule_max_count",
    },
    "bnpl.Promotion": {"priority"},
    "collections.CollectionsSettings": {
        "reminder_days_before",
        "overdue_reminder_interval_days",
        "chunk_size",
    },
    "oms.Location": {"priority"},
    "oms.StockItem": {"on_hand"},
}


def editable_number_inputs() -> dict[str, dict[str, forms.Field]]:
    """The number inputs of every admin add/change form of our apps that staff can edit."""
    request = RequestFactory().get("/")
    request.user = get_user_model()(username="root", is_staff=True, is_superuser=True)
    found: dict[str, dict[str, forms.Field]] = {}
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in OUR_APPS:
            continue
        if not (
            model_admin.has_add_permission(request)
            or model_admin.has_change_permission(request, model())
        ):
            continue
        readonly = set(model_admin.get_readonly_fields(request, None))
        form = model_admin.get_form(request, None)()
        inputs = {
            name: field
            for name, field in form.fields.items()
            if name not in readonly and isinstance(field, forms.DecimalField | forms.IntegerField)
        }
        if inputs:
            found[model._meta.label] = inputs
    return found


def test_every_whole_number_input_of_the_admin_is_a_count_not_minor_units():
    for label, inputs in editable_number_inputs().items():
        whole = {n for n, f in inputs.items() if not isinstance(f, forms.DecimalField)}
        assert whole <= NOT_MONEY.get(label, set()), f"{label}: {whole} look like minor units"


@pytest.mark.parametrize(
    ("label", "money"),
    [
        ("wallet.BnplCustomerProfile", {"max_debt_override"}),
        ("wallet.BnplSettings", {"max_debt_per_user", "min_order"}),
        ("payments.ProviderAccount", {"min_order", "max_order"}),
        (
            "bnpl.PlanProduct",
            {
                "min_amount",
                "max_amount",
                "origination_fee_flat",
                "installment_fee",
                "late_fee_amount",
                "late_fee_cap_installment",
                "reschedule_fee",
            },
        ),
    ],
)
def test_money_columns_use_the_shared_money_field(label, money):
    inputs = editable_number_inputs()[label]
    assert {n for n, f in inputs.items() if isinstance(f, MoneyAmountField)} == money


def test_the_max_debt_override_is_typed_in_euros(admin_client):
    enable_wallet_bnpl()
    customer = make_customer()
    add = reverse("admin:wallet_bnplcustomerprofile_add")
    page = admin_client.get(add).content.decode()
    assert "In EUR, e.g. 12.50" in page
    response = admin_client.post(
        add, {"customer": customer.pk, "auto_deduct": "on", "max_debt_override": "300"}
    )
    assert response.status_code == 302, response.content[:2000]
    profile = BnplCustomerProfile.objects.get(customer=customer)
    assert profile.max_debt_override == 30000  # 300.00 EUR, not 3.00
    change = reverse("admin:wallet_bnplcustomerprofile_change", args=[profile.pk])
    assert 'value="300.00"' in admin_client.get(change).content.decode()
    listing = admin_client.get(reverse("admin:wallet_bnplcustomerprofile_changelist"))
    assert "300.00 EUR" in listing.content.decode()
    refused = admin_client.post(
        change, {"customer": customer.pk, "auto_deduct": "on", "max_debt_override": "3.001"}
    )
    assert refused.status_code == 200
    assert "EUR amounts have at most 2 decimal place(s)." in refused.content.decode()
    profile.refresh_from_db()
    assert profile.max_debt_override == 30000


@pytest.mark.parametrize(
    ("currency", "typed", "stored"),
    [("EUR", ("10.00", "2500"), (1000, 250000)), ("JPY", ("1500", "90000"), (1500, 90000))],
)
def test_provider_order_limits_are_typed_in_the_accounts_currency(
    admin_client, currency, typed, stored
):
    form = {
        "provider": "card",
        "enabled": "on",
        "mode": "sandbox",
        "region": "eu",
        "base_url": "http://127.0.0.1:9/card",
        "currency": currency,
        "min_order": typed[0],
        "max_order": typed[1],
        "merchant_categories": "[]",
        "rotation_overlap_hours": "24",
    }
    response = admin_client.post(reverse("admin:payments_provideraccount_add"), form)
    assert response.status_code == 302, response.content[:3000]
    account = ProviderAccount.objects.get()
    assert (account.min_order, account.max_order) == stored
    change = reverse("admin:payments_provideraccount_change", args=[account.pk])
    assert f'value="{typed[0]}"' in admin_client.get(change).content.decode()
    refused = admin_client.post(change, {**form, "min_order": "10.001"})
    assert refused.status_code == 200
    account.refresh_from_db()
    assert account.min_order == stored[0]
