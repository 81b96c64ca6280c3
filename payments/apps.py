from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"

    def ready(self) -> None:
        from ledger.invariants import invariant_register
        from payments.selectors import payment_invariant_problems

        invariant_register("payments", payment_invariant_problems)
        from core import readiness
        from core.schedules import Schedule, register

        register(
            Schedule(
                name="Payments: provider health checks",
                task="payments.check_provider_health",
                crontab="*/5 * * * *",
                description="Reads each enabled provider's health endpoint; shown in /readyz "
                "and on the provider accounts screen.",
            )
        )
        register(
            Schedule(
                name="Payments: reconcile unanswered requests",
                task="payments.reconcile_unknown",
                crontab="*/5 * * * *",
                description="Asks the providers about authorizations whose answer never came "
                "(timeouts) before anything is tried again.",
            )
        )
        register(
            Schedule(
                name="Payments: read back lending partner applications",
                task="payments.reconcile_partner_applications",
                crontab="*/5 * * * *",
                description="Asks the lending partner about applications still referred or "
                "unanswered after PAYMENTS_PARTNER_RECONCILE_AFTER_SECONDS; a decision found "
                "is recorded and handed to the owner.",
            )
        )
        register(
            Schedule(
                name="Payments: try failed dispute notifications again",
                task="payments.retry_dispute_events",
                crontab="* * * * *",
                description="A dispute notification that failed for a passing reason (its "
                "payment not recorded yet, the provider not answering) is processed again, "
                "after 1, 5, 15 minutes and up to a day; what is left stays failed in the "
                "webhook events admin.",
            )
        )
        readiness.register("payment_providers", _providers_health, gating=False)


def _providers_health() -> dict:
    from payments.models import ProviderAccount

    providers = {
        a.provider: {
            "healthy": a.health_ok,
            "checked_at": a.health_checked_at and a.health_checked_at.isoformat(),
            "detail": a.health_detail,
        }
        for a in ProviderAccount.objects.filter(enabled=True)
    }
    healthy = all(p["healthy"] for p in providers.values())
    return {"status": "ok" if healthy else "degraded", "providers": providers}
