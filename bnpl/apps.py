from django.apps import AppConfig


class BnplConfig(AppConfig):
    name = "bnpl"
    verbose_name = "Installment plans (BNPL)"

    def ready(self) -> None:
        from bnpl.services import INSTALLMENT_REFERENCE, installment_settle
        from payments import events

        # A captured installment charge pays the installment down in the same transaction
        # as the payment fact (payments.events, "Money that an owner books itself").
        events.register_settlement(INSTALLMENT_REFERENCE, installment_settle)
