"""Payment events are append-only, enforced by the database itself."""

from django.db import migrations

from core.db import append_only


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]
    operations = [append_only("payments_paymentevent")]
