"""Room on each page for a row's next version, and no index on the plan's status.

Requests are claimed then settled, installments paid, plans completed: each update then
fits on its row's page (one page dirtied instead of two). Completing a plan no longer
changes an indexed column, so it adds no index entry at all.
"""

from django.db import migrations

from core.db import fillfactor


class Migration(migrations.Migration):
    dependencies = [("bnpl", "0003_installment_plan_index")]

    operations = [
        migrations.RemoveIndex(model_name="plan", name="plan_status"),
        fillfactor("bnpl_plan", 50),
        fillfactor("bnpl_installment", 50),
        fillfactor("bnpl_debitrequest", 50),
    ]
