from django.urls import path

from bnpl.api import views

urlpatterns = [
    path("bnpl/quotes", views.QuoteApi.as_view(), name="bnpl-quotes"),
]
