from rest_framework.permissions import BasePermission


class IsCustomer(BasePermission):
    """The caller is a customer (directly, or a channel acting on one's behalf)."""

    message = "Only customers (or channels acting for one) can use this endpoint."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "customer"))


class IsCustomerInPerson(IsCustomer):
    """The customer with their own credentials; a channel acting for them is refused.

    Credentials that act for someone else mark themselves with ``acts_for_customer``
    (a sales channel's API key does): they may place orders, never move wallet money.
    """

    message = "Only the customer, signed in with their own credentials, can use this endpoint."

    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) and not getattr(
            request.auth, "acts_for_customer", False
        )
