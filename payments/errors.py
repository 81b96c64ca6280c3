from core.errors import BusinessRuleViolation, InvalidInput, NotFound


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
