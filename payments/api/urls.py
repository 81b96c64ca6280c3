from django.urls import path

from payments.api import views

urlpatterns = [
    path("payment-methods", views.PaymentMethodListApi.as_view(), name="payment-methods"),
    path(
        "payment-methods/<int:method_id>",
        views.PaymentMethodDetailApi.as_view(),
        name="payment-method-detail",
    ),
]
