from core.errors import ApplicationError, BusinessRuleViolation


class UnbalancedEntry(ApplicationError):
    """A bug in the caller: an entry's postings must sum to zero per currency."""

    code = "ledger.unbalanced_entry"
    status_code = 500


class InsufficientFunds(BusinessRuleViolation):
    code = "ledger.insufficient_funds"
    default_message = "The account cannot go below zero."
