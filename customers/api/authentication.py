from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication as DrfTokenAuthentication
from rest_framework.authtoken.models import Token


class TokenAuthentication(DrfTokenAuthentication):
    """DRF's token authentication, reading the customer profile in the same query."""

    def authenticate_credentials(self, key):
        token = Token.objects.select_related("user__customer").filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token
