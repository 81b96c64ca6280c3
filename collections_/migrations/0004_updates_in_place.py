"""Room on each page for an attempt's answer, and succeeded attempts out of the status
index: recording a success then adds no entry to it."""

from django.db import migrations, models

from core.db import fillfactor


class Migration(migrations.Migration):
    dependencies = [("collections", "0003_attempt_transaction_index")]

    operations = [
        migrations.RemoveIndex(model_name="debitattempt", name="attempt_status"),
        migrations.AddIndex(
            model_name="debitattempt",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "unknown", "failed"])),
                fields=["status", "finished_at"],
                name="attempt_open_or_failed",
            ),
        ),
        fillfactor("collections_debitattempt", 50),
    ]
