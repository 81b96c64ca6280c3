from django.apps import AppConfig


class CollectionsConfig(AppConfig):
    """Scheduled debits, retries, dunning, overdue marking.

    The package is ``collections_`` because ``collections`` is the standard library's;
    the label keeps tables, admin URLs and migrations saying "collections".
    """

    name = "collections_"
    label = "collections"
    verbose_name = "Collections"

    def ready(self) -> None:
        from core.schedules import Schedule, register

        register(
            Schedule(
                name="Collections: daily debit run",
                task="collections.debit_run",
                crontab="0 6 * * *",
                description="Charges every installment due today (business time zone).",
            )
        )
        register(
            Schedule(
                name="Collections: technical retries",
                task="collections.retry_due",
                crontab="* * * * *",
                description="Asks the provider about unanswered debits, then charges "
                "the technical retries that are due.",
            )
        )
        register(
            Schedule(
                name="Collections: reconcile stale debit attempts",
                task="collections.reconcile_attempts",
                crontab="*/5 * * * *",
                description="Resolves debit attempts left pending by a crash (by key, "
                "never a new charge) and re-sends lost chunks of unfinished runs.",
            )
        )
        # Wallet debts' overdue marking and reminders: wallet's own daily job
        # ("wallet.daily_debt_run"); provider health and the reconciler: payments'.
        register(
            Schedule(
                name="Collections: overdue marking and delinquency",
                task="collections.delinquency_run",
                crontab="30 0 * * *",
                description="Marks installments past due overdue, updates each late plan's "
                "days past due and bucket, and runs the bucket's actions (reminder, BNPL "
                "block, late fee, write-off flag).",
            )
        )
        register(
            Schedule(
                name="Collections: reminders",
                task="collections.reminders_run",
                crontab="20 * * * *",
                description="Queues each reminder once: upcoming debits, soft-declined "
                "debits and overdue installments (at most weekly per installment).",
            )
        )
