"""A staff dispute for every plan paused before disputes were records on the order.

A plan's pause now follows its order's open disputes: a plan paused by hand before (no
dispute record) would otherwise resume at the first dispute notification of its order.
"""

from django.db import migrations
from django.utils import timezone

ORDER_REFERENCE = "oms.order"


def forwards(apps, schema_editor):
    Plan = apps.get_model("bnpl", "Plan")
    Order = apps.get_model("oms", "Order")
    Dispute = apps.get_model("oms", "Dispute")
    now = timezone.now()
    paused = Plan.objects.filter(debits_paused=True, reference_type=ORDER_REFERENCE).values_list(
        "reference_id", "paused_reason"
    )
    for reference_id, reason in paused.iterator():
        if not reference_id.isdigit():
            continue
        order = Order.objects.filter(pk=int(reference_id)).only("pk", "total", "currency").first()
        if order is None or order.total <= 0:
            continue
        if Dispute.objects.filter(order=order, status="open").exists():
            continue
        Dispute.objects.create(
            order=order,
            reason=(reason or "Debits paused before disputes were recorded")[:255],
            amount=order.total,
            currency=order.currency,
            status="open",
            opened_at=now,
            opened_via="migration: plan paused before dispute records",
        )


class Migration(migrations.Migration):
    dependencies = [
        ("oms", "0007_dispute_charged_back_within_amount"),
        ("bnpl", "0006_saved_cards_from_plans"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
