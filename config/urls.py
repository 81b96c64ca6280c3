from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import views as core_views
from customers import views as customers_views
from payments import views as payments_views
from reports import admin_views as reports_admin_views

api_v1 = [
    path("", include("customers.api.urls")),
    path("", include("wallet.api.urls")),
    path("", include("oms.api.urls")),
    path("", include("bnpl.api.urls")),
    path("", include("payments.api.urls")),
    path("", include("reports.api.urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="my-wallet", permanent=False)),
    path(
        "admin/reports/collections/",
        admin.site.admin_view(reports_admin_views.collections_kpis),
        name="reports-collections-admin",
    ),
    path("admin/login/", customers_views.throttled_login(admin.site.login)),
    path("admin/", admin.site.urls),
    path("wallet/", include("wallet.urls")),
    path("plans/", include("bnpl.urls")),
    path(
        "accounts/login/",
        customers_views.throttled_login(auth_views.LoginView.as_view()),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("webhooks/<slug:provider>/", payments_views.webhook, name="payments-webhook"),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
]

admin.site.site_header = "OMS + BNPL back-office"
admin.site.site_title = "OMS back-office"
admin.site.index_title = "Orders, wallets, customers and the ledger"
