from django.apps import AppConfig


class WalletConfig(AppConfig):
    name = "wallet"
    verbose_name = "Wallet"

    def ready(self) -> None:
        from ledger.invariants import invariant_register
        from wallet.selectors import wallet_invariant_problems

        invariant_register("wallet", wallet_invariant_problems)
        from core.schedules import Schedule, register

        register(
            Schedule(
                name="Wallet BNPL: overdue marking and reminders",
                task="wallet.daily_debt_run",
                crontab="15 0 * * *",
                description="Marks debts past their due date overdue, records the day's totals "
                "and queues at most one reminder per overdue debt per week.",
            )
        )
