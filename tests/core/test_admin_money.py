"""Every money input of the admin is typed and shown in the currency's units."""

from decimal import Decimal

import pytest
from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse

from core.forms import MoneyAmountField
from payments.models import ProviderAccount
from tests.factories import approve_kyc, enable_wallet_bnpl, make_customer
from wallet.bnpl import bnpl_settings
from wallet.models import BnplCustomerProfile, BnplSettings, Wallet
from wallet.services import wallet_get_or_create

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


# Decimal inputs that are not MoneyAmountField, and why they are not.
NOT_MONEY_DECIMALS = {
    # A percentage, or a flat amount that BnplSettingsForm.clean parses as money.
    "wallet.BnplSettings": {"interest_amount"},
    "bnpl.PlanProduct": {
        "apr",
        "down_payment_percent",
        "origination_fee_percent",
        "late_fee_cap_plan_percent",
    },
    "bnpl.Promotion": {"apr"},
}


def test_every_decimal_input_of_the_admin_is_money_or_a_known_rate():
    unexpected = {}
    for label, inputs in editable_number_inputs().items():
        decimals = {
            n
            for n, f in inputs.items()
            if isinstance(f, forms.DecimalField) and not isinstance(f, MoneyAmountField)
        }
        if extra := decimals - NOT_MONEY_DECIMALS.get(label, set()):
            unexpected[label] = extra
    assert not unexpected, f"decimal inputs that look like money: {unexpected}"


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


SETTINGS_FORM = {
    "enabled": "on",
    "currency": "EUR",
    "eligibility_mode": "whitelist",
    "max_debt_per_user": "500.00",
    "min_order": "100.00",
    "repayment_days": "14",
    "interest_type": "fixed",
    "interest_amount": "50",
    "fixed_recurrence": "weekly",
    "grace_days": "7",
    "block_withdrawal_while_in_debt": "on",
}


@pytest.mark.parametrize(
    ("field", "typed", "error"),
    [
        # 31 significant digits: a Decimal context of 28 would round it to 1000000000000.00.
        ("max_debt_per_user", "1000000000000.00000000000000001", "at most 2 decimal place"),
        ("max_debt_per_user", "1" + "0" * 40, "too large"),
        ("min_order", "0.001", "at most 2 decimal place"),
    ],
)
def test_a_money_input_is_refused_never_rounded(admin_client, field, typed, error):
    conf = bnpl_settings()
    before = (conf.max_debt_per_user, conf.min_order)
    url = reverse("admin:wallet_bnplsettings_change", args=[conf.pk])
    response = admin_client.post(url, {**SETTINGS_FORM, field: typed})
    assert response.status_code == 200
    assert error in response.content.decode()
    conf.refresh_from_db()
    assert (conf.max_debt_per_user, conf.min_order) == before


@pytest.mark.parametrize(
    ("currency", "typed"), [("EUR", "12.345"), ("JPY", "12.5"), ("EUR", "0.001")]
)
def test_a_flat_interest_has_no_more_decimals_than_the_currency(admin_client, currency, typed):
    conf = bnpl_settings()
    url = reverse("admin:wallet_bnplsettings_change", args=[conf.pk])
    response = admin_client.post(
        url, {**SETTINGS_FORM, "currency": currency, "interest_amount": typed}
    )
    assert response.status_code == 200
    assert "decimal place" in response.content.decode()
    conf.refresh_from_db()
    assert conf.interest_type != "fixed" or conf.interest_amount != Decimal(typed)


def test_a_flat_interest_in_cents_and_a_fractional_percentage_are_kept(admin_client):
    conf = bnpl_settings()
    url = reverse("admin:wallet_bnplsettings_change", args=[conf.pk])
    response = admin_client.post(url, {**SETTINGS_FORM, "interest_amount": "12.34"})
    assert response.status_code == 302, response.content[:2000]
    conf.refresh_from_db()
    assert conf.interest_amount == Decimal("12.34")
    percent = {**SETTINGS_FORM, "interest_type": "percent", "interest_amount": "1.125"}
    assert admin_client.post(url, percent).status_code == 302
    conf.refresh_from_db()
    assert conf.interest_amount == Decimal("1.125")


def test_the_wallet_credit_action_takes_a_padded_amount(admin_client):
    customer = approve_kyc(make_customer())
    wallet = wallet_get_or_create(customer=customer, currency="EUR")
    response = admin_client.post(
        reverse("admin:wallet_wallet_changelist"),
        {
            "action": "credit_wallets",
            "_selected_action": [wallet.pk],
            "amount": " 50.00 ",
            "kind": "top_up",
            "note": "",
            "idempotency_key": "k1",
            "index": 0,
        },
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert Wallet.objects.get(pk=wallet.pk).balance.minor == 5000, messages


@pytest.mark.parametrize(("currency", "typed"), [("EUR", "12.345"), ("JPY", "12.5")])
def test_the_explain_page_refuses_an_amount_the_currency_cannot_hold(admin_client, currency, typed):
    enable_wallet_bnpl()
    BnplSettings.objects.update(currency=currency)
    customer = make_customer()
    response = admin_client.get(
        reverse("admin:wallet_walletdebt_explain"), {"customer": customer.pk, "amount": typed}
    )
    assert response.status_code == 200
    assert response.context["verdict"] is None
    assert "decimal place" in response.content.decode()
