from django.apps import AppConfig


class BnplConfig(AppConfig):
    name = "bnpl"
    verbose_name = "Installment plans (BNPL)"

    def ready(self) -> None:
        from bnpl.selectors import plan_invariant_problems
        from ledger.invariants import invariant_register

        invariant_register("bnpl", plan_invariant_problems)
        from bnpl.services import INSTALLMENT_REFERENCE, installment_settle, installments_settle
        from payments import events

        # A captured installment charge pays the installment down in the same transaction
        # as the payment fact (payments.events, "Money that an owner books itself").
        events.register_settlement(
            INSTALLMENT_REFERENCE, installment_settle, many=installments_settle
        )

        from bnpl.chargebacks import installment_charge_back

        # A lost dispute on an installment's charge makes the installment owed again.
        events.register_chargeback(INSTALLMENT_REFERENCE, installment_charge_back)

        from bnpl.servicing import PAYOFF_REFERENCE, plan_payoff_settle

        # A captured early-payoff charge pays the whole plan off the same way.
        events.register_settlement(PAYOFF_REFERENCE, plan_payoff_settle)

        from bnpl.selectors import payment_method_users

        # A saved card that an active plan is debited from is not removed.
        events.register_payment_method_user(payment_method_users)

        from bnpl.applications import PARTNER_REFERENCE, partner_decision_received
        from core.schedules import Schedule, register

        # A lending partner's decision on an application, whatever route brings it.
        events.register_partner_decision(PARTNER_REFERENCE, partner_decision_received)
        register(
            Schedule(
                name="Installments: expire credit applications past their timeout",
                task="bnpl.expire_applications",
                crontab="*/5 * * * *",
                description="Releases orders whose credit decision did not come within "
                "BNPL_DECISION_TIMEOUT (24 h), and decides pending applications a crash "
                "left undecided.",
            )
        )
        register(
            Schedule(
                name="Installments: return credits on the receivable to the wallet",
                task="bnpl.plan_credits_sweep",
                crontab="17 * * * *",
                description="Returns to the wallet money a plan received beyond what it "
                "owed (normally returned right after the payment), and takes back a "
                "returned credit whose capture the card processor refunded.",
            )
        )
