from django.urls import path

from wallet.api import views

urlpatterns = [
    path("wallet", views.WalletApi.as_view(), name="wallet"),
]
