"""Room on each page for a transaction's next version (its provider reference arrives
with the answer), and no index on the account alone (a handful of rows, never listed).

Not atomic: the index is dropped CONCURRENTLY on PostgreSQL, so the table stays in use.
"""

import django.db.models.deletion
from django.db import migrations, models

from core.db import drop_index_concurrently, fillfactor


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("payments", "0009_flagged_partial_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="paymenttransaction",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="transactions",
                        to="payments.provideraccount",
                    ),
                )
            ],
            database_operations=[
                drop_index_concurrently(
                    "payments_paymenttransaction",
                    "payments_paymenttransaction_account_id_31a03017",
                    ["account_id"],
                )
            ],
        ),
        fillfactor("payments_paymenttransaction", 50),
    ]
