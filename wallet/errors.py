from core.errors import BusinessRuleViolation, InvalidInput


class InsufficientBalance(BusinessRuleViolation):
    code = "wallet.insufficient_balance"
    default_message = "The wallet balance does not cover this amount."


class InvalidCreditReason(InvalidInput):
    code = "wallet.invalid_credit_reason"
