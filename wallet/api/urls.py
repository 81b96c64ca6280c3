from django.urls import path

from wallet.api import views

urlpatterns = [
    path("wallet", views.WalletApi.as_view(), name="wallet"),
    path("wallet/auto-deduct", views.AutoDeductApi.as_view(), name="wallet-auto-deduct"),
    path("wallet/debts", views.DebtListApi.as_view(), name="wallet-debts"),
    path(
        "wallet/debts/<int:debt_id>/repay", views.DebtRepayApi.as_view(), name="wallet-debt-repay"
    ),
    path("wallet/bnpl-eligibility", views.EligibilityApi.as_view(), name="wallet-bnpl-eligibility"),
    path("wallet/withdrawals", views.WithdrawalApi.as_view(), name="wallet-withdrawals"),
]
