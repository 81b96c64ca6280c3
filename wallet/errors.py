from core.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound


class InsufficientBalance(BusinessRuleViolation):
    code = "wallet.insufficient_balance"
    default_message = "The wallet balance does not cover this amount."


class InvalidCreditReason(InvalidInput):
    code = "wallet.invalid_credit_reason"


class DebtNotFound(NotFound):
    code = "wallet.debt_not_found"
    default_message = "No such debt."


class DebtNotOpen(Conflict):
    code = "wallet.debt_not_open"
    default_message = "This debt is closed."


class OverRepayment(BusinessRuleViolation):
    code = "wallet.over_repayment"
    default_message = "The amount is more than the debt needs."


class WithdrawalBlocked(BusinessRuleViolation):
    code = "wallet.withdrawal_blocked_by_debt"
    default_message = "Withdrawals are blocked while a BNPL debt is outstanding."


class InvalidIban(InvalidInput):
    code = "wallet.invalid_iban"
    default_message = "Not a valid IBAN."
