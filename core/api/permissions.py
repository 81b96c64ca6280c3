from rest_framework.permissions import BasePermission


class IsCustomer(BasePermission):
    """The caller is a customer (directly, or a channel acting on one's behalf)."""

    message = "Only customers (or channels acting for one) can use this endpoint."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "customer"))
