from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "customers"
    verbose_name = "Customers and KYC"

    def ready(self) -> None:
        from customers import checks  # noqa: F401  (registers the deploy checks)
