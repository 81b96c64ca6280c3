from django.urls import path

from customers.api import views

urlpatterns = [
    path("customers", views.CustomerSignUpApi.as_view(), name="customers-sign-up"),
    path("auth/token", views.AuthTokenApi.as_view(), name="auth-token"),
]
