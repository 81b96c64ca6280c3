"""Room on each page of accounts for their next versions: a balance moves with every
entry, and the balance is not indexed, so each move is then an update in place that adds
no index entry."""

from django.db import migrations

from core.db import fillfactor


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_journal_entry_kind_index")]

    operations = [fillfactor("ledger_account", 50)]
