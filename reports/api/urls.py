from django.urls import path

from reports.api import views

urlpatterns = [
    path("reports/collections", views.CollectionsReportApi.as_view(), name="reports-collections"),
]
