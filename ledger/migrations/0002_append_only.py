"""Journal entries and postings are append-only, enforced by the database itself."""

from django.db import migrations

from core.db import append_only


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [append_only("ledger_journalentry", "ledger_posting")]
