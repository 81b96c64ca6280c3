"""Room on each page for a transaction's next version (its provider reference arrives
with the answer), and no index on the account alone (a handful of rows, never listed)."""

import django.db.models.deletion
from django.db import migrations, models

from core.db import fillfactor


class Migration(migrations.Migration):
    dependencies = [("payments", "0009_flagged_partial_index")]

    operations = [
        migrations.AlterField(
            model_name="paymenttransaction",
            name="account",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="transactions",
                to="payments.provideraccount",
            ),
        ),
        fillfactor("payments_paymenttransaction", 50),
    ]
