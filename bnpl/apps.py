from django.apps import AppConfig


class BnplConfig(AppConfig):
    name = "bnpl"
    verbose_name = "Installment plans (BNPL)"
