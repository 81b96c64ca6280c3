"""Wallet BNPL events for integrators. Internal logic never listens to these.

- ``debt_created(debt)``: a checkout's shortfall became a debt.
- ``debt_repaid(debt)``: a debt reached zero (repaid or written off; see ``resolution``).
- ``debt_overdue(debt_ids, business_date)``: debts passed their due date in one run.

All are sent after the transaction that caused them commits.
"""

from django.dispatch import Signal

debt_created = Signal()
debt_repaid = Signal()
debt_overdue = Signal()
