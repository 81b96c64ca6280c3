"""The foundation's thin journey, end to end through the API and the admin."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse
from rest_framework.test import APIClient

from core.models import AuditEntry
from customers.models import Customer
from ledger.models import JournalEntry
from oms.models import Order, OrderStatus
from tests.factories import line
from wallet.models import Wallet

pytestmark = pytest.mark.django_db


def test_sign_up_fund_pay_and_see_it_all_in_the_admin(admin_client, admin_user, web_channel, stock):
    item = stock("TEE", 10)
    api = APIClient()
    signed_up = api.post(
        "/api/v1/customers",
        {"email": "zoe@example.com", "password": "zoe-long-passphrase"},
        format="json",
    )
    assert signed_up.status_code == 201
    customer = Customer.objects.get(pk=signed_up.json()["id"])

    # The admin approves KYC, opens a wallet and credits it.
    admin_client.post(
        reverse("admin:customers_customer_changelist"),
        {"action": "approve_kyc", "_selected_action": [customer.pk]},
    )
    admin_client.post(
        reverse("admin:wallet_wallet_add"), {"customer": customer.pk, "currency": "EUR"}
    )
    wallet = Wallet.objects.get(customer=customer)
    admin_client.post(
        reverse("admin:wallet_wallet_changelist"),
        {
            "action": "credit_wallets",
            "_selected_action": [wallet.pk],
            "amount": "100.00",
            "kind": "top_up",
            "idempotency_key": "journey",
        },
    )

    # The customer pays an order from the wallet.
    token = api.post(
        "/api/v1/auth/token",
        {"email": "zoe@example.com", "password": "zoe-long-passphrase"},
        format="json",
    )
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    placed = api.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("TEE", 2, "20.00", tax="4.00")]},
        format="json",
    )
    assert placed.status_code == 201
    order = Order.objects.get(pk=placed.json()["id"])
    assert api.get("/api/v1/wallet").json()["wallets"][0]["balance"]["amount"] == "56.00"

    # The admin sees the order, the customer and KYC status, and the ledger.
    order_page = admin_client.get(reverse("admin:oms_order_change", args=[order.pk]))
    assert order_page.status_code == 200
    assert b"TEE" in order_page.content
    customer_page = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    assert b"Approved in the admin" in customer_page.content
    entry = JournalEntry.objects.get(kind="wallet.payment", reference_id=str(order.pk))
    entry_page = admin_client.get(reverse("admin:ledger_journalentry_change", args=[entry.pk]))
    assert entry_page.status_code == 200
    assert b"44.00 EUR" in entry_page.content
    for name in (
        "admin:ledger_account_changelist",
        "admin:oms_order_changelist",
        "admin:core_auditentry_changelist",
        "admin:wallet_wallettransaction_changelist",
        "admin:oms_stockitem_changelist",
        "admin:oms_channel_changelist",
    ):
        assert admin_client.get(reverse(name)).status_code == 200, name

    # The admin ships it; the reserved units leave stock.
    admin_client.post(
        reverse("admin:oms_order_changelist"),
        {"action": "fulfil_orders", "_selected_action": [order.pk]},
    )
    assert Order.objects.get(pk=order.pk).status == OrderStatus.FULFILLED
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (8, 0)
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"kyc.approved", "wallet.top_up", "oms.checkout", "oms.fulfil"} <= actions


def test_ledger_screens_are_read_only_even_for_superusers(admin_client, customer):
    entry = JournalEntry.objects.first()
    response = admin_client.post(
        reverse("admin:ledger_journalentry_change", args=[entry.pk]), {"kind": "tampered"}
    )
    assert response.status_code == 403
    assert admin_client.get(reverse("admin:ledger_journalentry_add")).status_code == 403
    assert JournalEntry.objects.get(pk=entry.pk).kind == "wallet.top_up"


def test_finance_staff_can_read_but_not_change(client, customer):
    finance = User.objects.create_user("fin", password="x", is_staff=True)
    group = Group.objects.create(name="finance")
    group.permissions.set(Permission.objects.filter(codename__startswith="view_"))
    finance.groups.add(group)
    client.force_login(finance)
    assert client.get(reverse("admin:ledger_account_changelist")).status_code == 200
    wallet = Wallet.objects.get(customer=customer)
    client.post(
        reverse("admin:wallet_wallet_changelist"),
        {
            "action": "credit_wallets",
            "_selected_action": [wallet.pk],
            "amount": "1000.00",
            "kind": "goodwill",
            "idempotency_key": "sneaky",
        },
    )
    assert Wallet.objects.get(pk=wallet.pk).balance.minor == 50000


def test_plain_admin_edits_are_audited(admin_client, admin_user, customer):
    admin_client.post(
        reverse("admin:oms_location_add"),
        {
            "code": "wh-2",
            "name": "Second warehouse",
            "kind": "warehouse",
            "priority": 5,
            "active": "on",
        },
    )
    admin_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {
            "tier": "gold",
            "phone": "",
            "kyc_events-TOTAL_FORMS": "0",
            "kyc_events-INITIAL_FORMS": "0",
        },
    )
    assert Customer.objects.get(pk=customer.pk).tier == "gold"
    audit = list(
        AuditEntry.objects.filter(action__startswith="admin.")
        .order_by("id")
        .values_list("action", "target_type", "actor")
    )
    assert audit == [
        ("admin.add", "oms.location", admin_user.pk),
        ("admin.change", "customers.customer", admin_user.pk),
    ]


def test_bulk_delete_on_an_audited_screen_audits_each_row(admin_client, admin_user):
    from oms.models import Location

    locations = [
        Location.objects.create(code=f"loc-{i}", name=f"L{i}", kind="store") for i in range(2)
    ]
    response = admin_client.post(
        reverse("admin:oms_location_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [loc.pk for loc in locations],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Location.objects.exists()
    assert (
        AuditEntry.objects.filter(
            action="admin.delete", target_type="oms.location", actor=admin_user
        ).count()
        == 2
    )


def test_order_change_form_offers_no_save(admin_client, customer, stock):
    from tests.factories import token_for

    stock("TEE", 5)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    order_id = api.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("TEE", 1, "5.00")]},
        format="json",
    ).json()["id"]
    url = reverse("admin:oms_order_change", args=[order_id])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert admin_client.post(url, {"status": "new"}).status_code == 403
    assert Order.objects.get(pk=order_id).status == OrderStatus.CONFIRMED


def test_stock_count_below_reserved_is_a_form_error(admin_client, customer, stock):
    from oms.models import StockItem
    from tests.factories import token_for

    item = stock("TEE", 5)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    api.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("TEE", 3, "1.00")]},
        format="json",
    )
    response = admin_client.post(
        reverse("admin:oms_stockitem_change", args=[item.pk]), {"on_hand": "2"}
    )
    assert response.status_code == 200
    assert b"3 units are reserved" in response.content
    assert StockItem.objects.get(pk=item.pk).on_hand == 5
    admin_client.post(reverse("admin:oms_stockitem_change", args=[item.pk]), {"on_hand": "7"})
    assert StockItem.objects.get(pk=item.pk).on_hand == 7
    assert AuditEntry.objects.get(action="oms.stock_count").changes == {"on_hand": [5, 7]}
