from django.urls import path

from oms.api import views

urlpatterns = [
    path("orders", views.OrderListCreateApi.as_view(), name="orders"),
    path("orders/<int:order_id>", views.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<int:order_id>/cancel", views.OrderCancelApi.as_view(), name="order-cancel"),
    path("orders/<int:order_id>/refunds", views.OrderRefundApi.as_view(), name="order-refund"),
]
