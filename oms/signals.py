"""Order events for integrators. Internal logic never listens to these.

- ``order_hold_released(order)``: an order waiting on hold (installments, Klarna, Afterpay)
  was approved and is now confirmed.
- ``order_cancelled(order, reason)``: an order was cancelled (by the customer, staff, a
  declined credit or provider decision, a decision timeout, a failed down payment);
  ``reason`` is the order's ``cancel_reason``.
- ``order_refunded(order, amount, lines)``: returned lines of a fulfilled order were
  refunded; ``amount`` is ``Money``, ``lines`` a list of ``{"line_no", "quantity"}``.

All are sent after the transaction that caused them commits.
"""

from django.dispatch import Signal

order_hold_released = Signal()
order_cancelled = Signal()
order_refunded = Signal()
