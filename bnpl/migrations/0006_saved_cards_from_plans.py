"""Plans made before cards were bound to customers keep working: each token that an
active plan or an undecided application uses, and that no other customer has used, becomes
a saved card of its customer (brand, last4 and expiry unknown). A token two customers used
is saved for nobody: its plans' card payments are refused until the customer picks a card.
"""

from django.db import migrations
from django.db.models import Count

OPEN_APPLICATIONS = ("pending", "review", "referred")


def backfill(apps, schema_editor) -> None:
    Plan = apps.get_model("bnpl", "Plan")
    CreditApplication = apps.get_model("bnpl", "CreditApplication")
    SavedPaymentMethod = apps.get_model("payments", "SavedPaymentMethod")
    from core import clock

    pairs = set(
        Plan.objects.filter(status="active").values_list("customer_id", "payment_method")
    ) | set(
        CreditApplication.objects.filter(status__in=OPEN_APPLICATIONS).values_list(
            "customer_id", "payment_method"
        )
    )
    shared = {
        row["payment_method"]
        for model in (Plan, CreditApplication)
        for row in model.objects.values("payment_method")
        .annotate(customers=Count("customer_id", distinct=True))
        .filter(customers__gt=1)
    }
    taken = set(SavedPaymentMethod.objects.values_list("token", flat=True))
    owners: dict[str, set[int]] = {}
    for customer_id, token in pairs:
        owners.setdefault(token, set()).add(customer_id)
    now = clock.now()
    SavedPaymentMethod.objects.bulk_create(
        [
            SavedPaymentMethod(
                customer_id=next(iter(customers)),
                processor="card",
                token=token,
                created_at=now,
            )
            for token, customers in sorted(owners.items())
            if token and len(customers) == 1 and token not in shared and token not in taken
        ]
    )


class Migration(migrations.Migration):
    dependencies = [
        ("bnpl", "0005_plan_apr_status"),
        ("payments", "0011_saved_payment_method"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
