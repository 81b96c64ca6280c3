"""Give customers back what returns before issue 12 recovered beyond a write-off."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from wallet.services import debts_return_over_recoveries


class Command(BaseCommand):
    help = "Return over-recovered write-offs to the customers' wallets (idempotent)."

    def handle(self, *args, **options) -> None:
        repaired = debts_return_over_recoveries()
        self.stdout.write(f"{repaired} debt(s) repaired.")
