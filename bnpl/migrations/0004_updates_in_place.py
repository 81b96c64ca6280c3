"""Room on each page for a row's next version, and no index on the plan's status.

Requests are claimed then settled, installments paid, plans completed: each update then
fits on its row's page (one page dirtied instead of two). Completing a plan no longer
changes an indexed column, so it adds no index entry at all.

Not atomic: the index is dropped CONCURRENTLY on PostgreSQL, and each fillfactor change
takes only a lock that blocks neither reads nor writes, so the tables stay in use.
"""

from django.db import migrations

from core.db import fillfactor, remove_index_concurrently


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("bnpl", "0003_installment_plan_index")]

    operations = [
        remove_index_concurrently("plan", "plan_status"),
        fillfactor("bnpl_plan", 50),
        fillfactor("bnpl_installment", 50),
        fillfactor("bnpl_debitrequest", 50),
    ]
