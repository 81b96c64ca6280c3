import pytest
from django.db.models import F, Sum

from ledger.models import Account, Purpose
from tests.factories import approve_kyc, enable_wallet_bnpl, make_customer
from wallet.models import DebtStatus, WalletDebt


@pytest.fixture
def bnpl(web_channel, stock):
    """Wallet BNPL on for KYC-approved customers; plenty of stock of SKU "ITEM"."""
    enable_wallet_bnpl()
    stock("ITEM", 100_000)


@pytest.fixture
def approved(web_channel):
    """A KYC-approved customer with an empty wallet."""
    return approve_kyc(make_customer())


def receivable_matches_debts(customer, currency: str = "EUR") -> None:
    """The wallet BNPL receivable (``bnpl:<customer>:<ccy>``, not the installments one of the
    same purpose) equals what the customer's open debts still owe."""
    owed = (
        (
            WalletDebt.objects.filter(wallet__customer=customer, wallet__currency=currency)
            .exclude(status=DebtStatus.REPAID)
            .aggregate(
                total=Sum(
                    F("principal")
                    - F("principal_repaid")
                    + F("interest_charged")
                    - F("interest_paid")
                )
            )["total"]
        )
        or 0
    )
    account = Account.objects.filter(
        code=f"bnpl:{customer.pk}:{currency}", purpose=Purpose.CUSTOMER_BNPL_RECEIVABLE
    ).first()
    assert (account.balance if account else 0) == owed
