from django.urls import path

from wallet import views

urlpatterns = [
    path("", views.my_wallet, name="my-wallet"),
    path("debts/<int:debt_id>/repay", views.repay, name="my-wallet-repay"),
]
