from django.apps import AppConfig


class OmsConfig(AppConfig):
    name = "oms"
    verbose_name = "Orders (OMS)"

    def ready(self) -> None:
        from ledger.invariants import invariant_register
        from oms.selectors import order_invariant_problems

        invariant_register("oms", order_invariant_problems)
        from core.schedules import Schedule, register
        from oms.services import split_order_card_settled
        from payments import events

        # Payments hands card outcomes up to the orders they pay for (ARCHITECTURE.md).
        events.register("oms.order", split_order_card_settled)
        # Credit decisions on orders paid in installments are applied under the order's lock.
        from bnpl.applications import register_owner
        from oms.services import installments_settle

        register_owner("oms.order", installments_settle)
        # Disputes are records on the order: providers' notifications about an order's
        # payment (or an installment of its plan) and the plan admin's actions land here.
        from bnpl.debit_controls import register_dispute_owner
        from oms import disputes

        events.register_dispute("oms.order", disputes.dispute_notice_for_order)
        events.register_dispute("bnpl.installment", disputes.dispute_notice_for_installment)
        register_dispute_owner("oms.order", disputes.PlanDisputes())
        register(
            Schedule(
                name="Orders: settle down payments left open at checkout",
                task="oms.settle_down_payments",
                crontab="*/10 * * * *",
                description="An installment order whose down payment was declined after "
                "checkout (a card review, a late answer) is cancelled with its plan; one "
                "never charged (a crash) is charged now.",
            )
        )
        register(
            Schedule(
                name="Orders: cancel orders held too long for Klarna or Afterpay",
                task="oms.expire_provider_holds",
                crontab="*/15 * * * *",
                description="An order on hold for a provider's fraud review that got no "
                "decision within BNPL_DECISION_TIMEOUT (24 h) is cancelled and its stock "
                "released.",
            )
        )
        register(
            Schedule(
                name="Orders: settle split-payment orders left new",
                task="oms.settle_split_orders",
                crontab="*/10 * * * *",
                description="Confirms or cancels wallet + card orders whose card outcome was "
                "recorded but not applied (a crash), or never came (after 24 h).",
            )
        )
