"""Errors of installment plans, each with a stable code."""

from core.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound


class UnknownProduct(InvalidInput):
    code = "bnpl.unknown_product"
    default_message = "No active installment product with this code."


class ProductCurrencyMismatch(InvalidInput):
    code = "bnpl.product_currency_mismatch"
    default_message = "The installment product is offered in another currency."


class AmountOutsideProductLimits(InvalidInput):
    code = "bnpl.amount_outside_limits"
    default_message = "The amount is outside the installment product's limits."


class ApplicationNotFound(NotFound):
    code = "bnpl.application_not_found"
    default_message = "No such credit application."


class ApplicationNotOpen(Conflict):
    code = "bnpl.application_not_open"
    default_message = "The credit application is already decided."


# --- write-off and recovery (bnpl.writeoff) --------------------------------------------


class PlanNotFound(NotFound):
    code = "bnpl.plan_not_found"
    default_message = "No such installment plan."


class PlanNotActive(Conflict):
    code = "bnpl.plan_not_active"
    default_message = "Only an active plan can be written off."


class PlanNotWrittenOff(Conflict):
    code = "bnpl.plan_not_written_off"
    default_message = "Recoveries are recorded on written-off plans only."


class RecoveryExceedsWriteOff(InvalidInput):
    code = "bnpl.recovery_exceeds_write_off"
    default_message = "A recovery cannot exceed what is left of the write-off."


# --- servicing (bnpl.servicing) ---------------------------------------------------------


class InstallmentNotFound(NotFound):
    code = "bnpl.installment_not_found"
    default_message = "The plan has no installment with this number."


class InstallmentNotOpen(Conflict):
    code = "bnpl.installment_not_open"
    default_message = "This installment has nothing left to pay."


class Overpayment(InvalidInput):
    code = "bnpl.overpayment"
    default_message = "The amount is more than the installment still owes."


class RescheduleRefused(BusinessRuleViolation):
    """A date change the plan's terms do not allow; ``code`` names the rule."""

    code = "bnpl.reschedule_refused"
    default_message = "The plan's terms do not allow this date change."


class PaymentDeclined(BusinessRuleViolation):
    code = "bnpl.payment_declined"
    default_message = "The card payment was declined."


class PayoffQuoteChanged(Conflict):
    code = "bnpl.payoff_quote_changed"
    default_message = "The payoff amount has changed since it was quoted; quote again."


class CancelRefused(Conflict):
    code = "bnpl.cancel_refused"
    default_message = "A plan can be cancelled only before its first installment debit."


class PlanEndsWithItsOrder(Conflict):
    code = "bnpl.plan_ends_with_its_order"
    default_message = (
        "This plan pays for an order: it is cancelled by cancelling the order, and refunded "
        "by refunding the order's returned lines."
    )


class ChargeInFlight(Conflict):
    code = "bnpl.charge_in_flight"
    default_message = (
        "A payment for this plan is still being processed; try again once it is settled."
    )


class RefundExceedsOrder(InvalidInput):
    code = "bnpl.refund_exceeds_order"
    default_message = "The refund is more than what is left of the financed order."


class RefundNotPossible(Conflict):
    code = "bnpl.refund_not_possible"
    default_message = "This plan can no longer be refunded."
