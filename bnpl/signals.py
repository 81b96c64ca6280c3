"""Installment plan events for integrators. Internal logic never listens to these.

- ``plan_approved(plan)``: a credit decision approved an order; its plan exists.
- ``plan_declined(application, reasons)``: a credit application was declined or expired;
  ``reasons`` is a list of ``{"code", "message"}``.
- ``installment_paid(installment, amount)``: an installment was fully paid (``amount`` is the
  last payment's ``Money``).
- ``plan_completed(plan)``: every installment of a plan is paid (or it was paid off early).

All are sent after the transaction that caused them commits.
"""

from django.dispatch import Signal

plan_approved = Signal()
plan_declined = Signal()
installment_paid = Signal()
plan_completed = Signal()
