from core.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound


class PaymentRuleViolation(BusinessRuleViolation):
    code = "payments.rule_violation"


class CaptureExceedsAuthorized(PaymentRuleViolation):
    code = "payments.capture_exceeds_authorized"
    default_message = "Capturing this would exceed what is authorized."


class RefundExceedsCaptured(PaymentRuleViolation):
    code = "payments.refund_exceeds_captured"
    default_message = "Refunding this would exceed what was captured."


class WebhookRejected(InvalidInput):
    code = "webhooks.rejected"


class UnknownProvider(NotFound):
    code = "webhooks.unknown_provider"
    default_message = "No enabled provider account for this webhook."


class PaymentMethodUnknown(PaymentRuleViolation):
    """A token that is not one of the customer's own saved payment methods (or removed)."""

    code = "payments.payment_method_unknown"
    default_message = "This is not one of your saved payment methods."


class PaymentMethodNotFound(NotFound):
    code = "payments.payment_method_not_found"
    default_message = "No such saved payment method."


class PaymentMethodInUse(Conflict):
    code = "payments.payment_method_in_use"
    default_message = "An active installment plan is debited from this card; move it first."


class PaymentMethodRemoved(Conflict):
    """A repeat of a save (same Idempotency-Key) whose card was removed since."""

    code = "payments.payment_method_removed"
    default_message = "The card saved under this Idempotency-Key was removed; use a new key."


class PaymentMethodLimit(PaymentRuleViolation):
    """The customer has as many saved cards as ``PAYMENTS_MAX_SAVED_CARDS`` allows."""

    code = "payments.payment_method_limit"
    default_message = "You have saved as many cards as allowed; remove one first."


class CardRejected(PaymentRuleViolation):
    """The processor refused to tokenize the card details (number, expiry)."""

    code = "payments.card_rejected"
    default_message = "The card processor did not accept these card details."
