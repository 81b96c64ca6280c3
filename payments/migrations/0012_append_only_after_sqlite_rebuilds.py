"""Payment events append-only again on SQLite, where later migrations rebuilt the table
without its triggers (PostgreSQL kept them: nothing changes)."""

from django.db import migrations

from core.db import append_only_again


class Migration(migrations.Migration):
    dependencies = [("payments", "0011_saved_payment_method")]

    operations = [append_only_again("payments_paymentevent")]
