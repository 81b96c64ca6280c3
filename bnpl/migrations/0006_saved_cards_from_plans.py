"""Plans made before cards were bound to customers keep working: each token that an
active plan or an undecided application uses, and that no other customer has used (in any
plan or application, whatever its status), becomes a saved card of its customer (brand,
last4 and expiry unknown). A token two customers used is saved for nobody: its plans' card
payments (the debit run, a down payment, servicing) are refused until the customer picks a
saved card for the plan.
"""

from django.db import migrations

OPEN_APPLICATIONS = ("pending", "review", "referred")


def backfill(apps, schema_editor) -> None:
    Plan = apps.get_model("bnpl", "Plan")
    CreditApplication = apps.get_model("bnpl", "CreditApplication")
    SavedPaymentMethod = apps.get_model("payments", "SavedPaymentMethod")
    from core import clock

    in_use = set(
        Plan.objects.filter(status="active").values_list("customer_id", "payment_method")
    ) | set(
        CreditApplication.objects.filter(status__in=OPEN_APPLICATIONS).values_list(
            "customer_id", "payment_method"
        )
    )
    # Every customer who ever used each token, across plans and applications together.
    users: dict[str, set[int]] = {}
    for model in (Plan, CreditApplication):
        for customer_id, token in model.objects.values_list(
            "customer_id", "payment_method"
        ).distinct():
            users.setdefault(token, set()).add(customer_id)
    taken = set(SavedPaymentMethod.objects.values_list("token", flat=True))
    now = clock.now()
    SavedPaymentMethod.objects.bulk_create(
        [
            SavedPaymentMethod(
                customer_id=customer_id,
                processor="card",
                token=token,
                created_at=now,
            )
            for customer_id, token in sorted(in_use, key=lambda pair: (pair[1], pair[0]))
            if token and users[token] == {customer_id} and token not in taken
        ]
    )


class Migration(migrations.Migration):
    dependencies = [
        ("bnpl", "0005_plan_apr_status"),
        ("payments", "0011_saved_payment_method"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
