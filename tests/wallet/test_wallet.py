import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from core.models import AuditEntry
from ledger.models import JournalEntry
from tests.factories import make_customer, money, token_for
from wallet.models import Wallet, WalletTransaction

pytestmark = pytest.mark.django_db


def test_get_wallet_shows_the_callers_balance(customer_api):
    response = customer_api.get("/api/v1/wallet")
    assert response.status_code == 200
    [wallet] = response.json()["wallets"]
    assert wallet["balance"] == money("500.00")


def test_a_new_customer_has_no_wallets_yet(api):
    newcomer = make_customer()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(newcomer)}")
    assert api.get("/api/v1/wallet").json() == {"wallets": [], "auto_deduct": True}


def test_anonymous_wallet_is_401():
    assert APIClient().get("/api/v1/wallet").status_code == 401


def test_admin_credit_action_is_audited_ledgered_and_idempotent_per_form(
    admin_client, admin_user, customer
):
    wallet = Wallet.objects.get(customer=customer)
    url = reverse("admin:wallet_wallet_changelist")
    form = {
        "action": "credit_wallets",
        "_selected_action": [wallet.pk],
        "amount": "25.50",
        "kind": "goodwill",
        "note": "Sorry for the delay",
        "idempotency_key": "form-1",
    }
    admin_client.post(url, form)
    admin_client.post(url, form)  # a double-submitted form
    credits = WalletTransaction.objects.filter(wallet=wallet, kind="goodwill")
    assert [(c.amount, c.actor_id) for c in credits] == [(2550, admin_user.pk)]
    assert Wallet.objects.get(pk=wallet.pk).balance.minor == 50000 + 2550
    entry = JournalEntry.objects.get(kind="wallet.goodwill")
    codes = {p.account.code: p.amount for p in entry.postings.select_related("account")}
    assert codes == {"goodwill_expense:EUR": 2550, f"wallet:{customer.pk}:EUR": -2550}
    assert AuditEntry.objects.filter(action="wallet.goodwill", actor=admin_user).count() == 1


def test_admin_credit_refuses_bad_amounts_and_writes_nothing(admin_client, customer, unchanged_db):
    wallet = Wallet.objects.get(customer=customer)
    url = reverse("admin:wallet_wallet_changelist")
    check = unchanged_db()
    for amount in ["1.001", "0", "abc", ""]:
        admin_client.post(
            url,
            {
                "action": "credit_wallets",
                "_selected_action": [wallet.pk],
                "amount": amount,
                "kind": "top_up",
                "idempotency_key": amount,
            },
        )
    check()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/v1/wallet"),
        ("put", "/api/v1/wallet/auto-deduct"),
        ("get", "/api/v1/wallet/debts"),
        ("post", "/api/v1/wallet/debts/1/repay"),
        ("get", "/api/v1/wallet/bnpl-eligibility?amount=1.00"),
        ("post", "/api/v1/wallet/withdrawals"),
    ],
)
def test_a_channel_key_cannot_touch_a_customers_wallet(customer, method, url, unchanged_db):
    from oms.models import ChannelKind
    from tests.factories import channel_with_key

    _, key = channel_with_key("market", ChannelKind.MARKETPLACE)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(customer.pk))
    check = unchanged_db()
    response = getattr(client, method)(
        url,
        {"amount": money("10.00"), "iban": "NL91ABNA0417164300", "enabled": False},
        format="json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "auth.permission_denied"
    check()


def test_a_credit_key_reused_with_another_amount_is_a_conflict(customer, unchanged_db):
    from core.errors import Conflict
    from core.money import Money
    from wallet.models import TransactionKind
    from wallet.services import wallet_credit

    wallet_credit(
        customer_id=customer.pk,
        amount=Money(5000, "EUR"),
        kind=TransactionKind.TOP_UP,
        idempotency_key="k",
    )
    check = unchanged_db()
    again = wallet_credit(
        customer_id=customer.pk,
        amount=Money(5000, "EUR"),
        kind=TransactionKind.TOP_UP,
        idempotency_key="k",
    )
    assert again.amount == 5000
    with pytest.raises(Conflict, match=r"already credited 50\.00 EUR"):
        wallet_credit(
            customer_id=customer.pk,
            amount=Money(50000, "EUR"),
            kind=TransactionKind.TOP_UP,
            idempotency_key="k",
        )
    check()
