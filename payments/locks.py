"""Row locks of payments, in the global order of ARCHITECTURE.md: a saved payment method
is locked after the plan that is switched to it, never before one."""

from __future__ import annotations

from payments.models import SavedPaymentMethod


def saved_payment_method_for_update(*, method_id: int) -> SavedPaymentMethod | None:
    return SavedPaymentMethod.objects.select_for_update(no_key=True).filter(pk=method_id).first()
