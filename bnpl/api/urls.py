from django.urls import path

from bnpl.api import payment_method, views

urlpatterns = [
    path("bnpl/quotes", views.QuoteApi.as_view(), name="bnpl-quotes"),
    path(
        "bnpl/plans/<int:plan_id>/payment-method",
        payment_method.PlanPaymentMethodApi.as_view(),
        name="bnpl-plan-payment-method",
    ),
]
