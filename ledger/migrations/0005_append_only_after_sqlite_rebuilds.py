"""Journal entries and postings append-only again on SQLite, where 0003's index change
rebuilt the entries' table without its triggers (PostgreSQL kept them: nothing changes)."""

from django.db import migrations

from core.db import append_only_again


class Migration(migrations.Migration):
    dependencies = [("ledger", "0004_account_fillfactor")]

    operations = [append_only_again("ledger_journalentry", "ledger_posting")]
