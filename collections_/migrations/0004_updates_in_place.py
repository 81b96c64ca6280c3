"""Room on each page for an attempt's answer, and succeeded attempts out of the status
index: recording a success then adds no entry to it.

Not atomic: the new index is built, then the old one dropped, CONCURRENTLY on
PostgreSQL, so attempts can be read and written meanwhile (never without an index).
"""

from django.db import migrations, models

from core.db import add_index_concurrently, fillfactor, remove_index_concurrently


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("collections", "0003_attempt_transaction_index")]

    operations = [
        add_index_concurrently(
            "debitattempt",
            models.Index(
                condition=models.Q(("status__in", ["pending", "unknown", "failed"])),
                fields=["status", "finished_at"],
                name="attempt_open_or_failed",
            ),
        ),
        remove_index_concurrently("debitattempt", "attempt_status"),
        fillfactor("collections_debitattempt", 50),
    ]
