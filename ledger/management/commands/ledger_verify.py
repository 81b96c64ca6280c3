from django.core.management.base import BaseCommand, CommandError

from ledger.models import Account, JournalEntry
from ledger.selectors import ledger_problems


class Command(BaseCommand):
    help = (
        "Recompute every account balance from its postings and check that every journal "
        "entry sums to zero per currency. Exits non-zero naming the first mismatch."
    )

    def handle(self, *args, **options) -> None:
        problems = ledger_problems()
        if problems:
            for problem in problems[1:]:
                self.stderr.write(f"also: {problem}")
            raise CommandError(f"ledger is inconsistent: {problems[0]}")
        self.stdout.write(
            self.style.SUCCESS(
                f"ledger is consistent: {JournalEntry.objects.count()} entries, "
                f"{Account.objects.count()} accounts"
            )
        )
