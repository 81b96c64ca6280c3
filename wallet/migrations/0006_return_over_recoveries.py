"""Return to customers what returns before issue 12 recovered beyond a write-off."""

from django.db import migrations
from django.db.models import Sum


def repair(apps, schema_editor):
    """Run the repair service (``manage.py wallet_return_over_recoveries`` runs it too)
    only when the historical models show an over-recovery, so a fresh database never
    loads today's models against an older schema."""
    WalletDebt = apps.get_model("wallet", "WalletDebt")
    Posting = apps.get_model("ledger", "Posting")
    booked = (
        Posting.objects.filter(
            entry__kind="wallet.debt_write_off_recovery",
            entry__reference_type="wallet.debt",
            amount__gt=0,
        )
        .values_list("entry__reference_id")
        .annotate(total=Sum("amount"))
    )
    recovered = dict(WalletDebt.objects.values_list("pk", "recovered"))
    if any(total > recovered.get(int(debt_id), total) for debt_id, total in booked):
        from wallet.services import debts_return_over_recoveries

        debts_return_over_recoveries()


class Migration(migrations.Migration):
    dependencies = [
        ("wallet", "0005_walletdebt_interest_base_since"),
        ("ledger", "0005_append_only_after_sqlite_rebuilds"),
    ]

    operations = [migrations.RunPython(repair, migrations.RunPython.noop)]
