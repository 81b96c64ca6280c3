from core.errors import BusinessRuleViolation, Conflict, InvalidInput, NotFound


class OutOfStock(Conflict):
    code = "oms.out_of_stock"
    default_message = "Not enough stock for this order."


class DuplicateExternalReference(Conflict):
    code = "oms.duplicate_external_reference"
    default_message = "This channel already has an order with this external reference."


class InvalidOrder(InvalidInput):
    code = "oms.invalid_order"


class OrderNotFound(NotFound):
    code = "oms.order_not_found"
    default_message = "No such order."


class InvalidTransition(Conflict):
    code = "oms.invalid_transition"
    default_message = "The order cannot do this in its current status."


class CardDeclined(BusinessRuleViolation):
    code = "payments.card_declined"
    default_message = "The card was declined; the order is cancelled and nothing was charged."


class CardUnavailable(BusinessRuleViolation):
    code = "payments.provider_unavailable"
    default_message = "Card payments are not available right now."


class DisputeNotFound(NotFound):
    code = "oms.dispute_not_found"
    default_message = "No such dispute."


class DisputeAlreadyClosed(Conflict):
    code = "oms.dispute_closed"
    default_message = "The dispute is closed already."
