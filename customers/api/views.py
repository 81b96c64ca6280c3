from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import RETRY_AFTER_HEADER, error_responses
from core.errors import ApplicationError
from customers import services, throttling
from customers.api.serializers import (
    CustomerOutputSerializer,
    SignUpInputSerializer,
    TokenInputSerializer,
    TokenOutputSerializer,
)


class InvalidCredentials(ApplicationError):
    code = "auth.invalid_credentials"
    status_code = 400
    default_message = "Email or password is wrong."


class CustomerSignUpApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        operation_id="customers_sign_up",
        request=SignUpInputSerializer,
        responses={201: CustomerOutputSerializer, **error_responses(400, 409, 415)},
        tags=["customers"],
    )
    def post(self, request: Request) -> Response:
        data = SignUpInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        customer = services.customer_create(**data.validated_data)
        return Response(CustomerOutputSerializer(customer).data, status=status.HTTP_201_CREATED)


class AuthTokenApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes: list = []

    @extend_schema(
        operation_id="auth_token_obtain",
        request=TokenInputSerializer,
        responses={200: TokenOutputSerializer, **error_responses(400, 415, 429, 503)},
        parameters=[RETRY_AFTER_HEADER],
        tags=["customers"],
        description=(
            "Every attempt is counted before its password is checked: past 5 for one account "
            "from one address (IPv6: its /64), 50 from one address, or 100 for one account "
            "from all addresses in 15 minutes, 429 request.throttled until the window ends "
            "(Retry-After, seconds). 503 auth.sign_in_unavailable while the shared cache "
            "that counts them is unreachable."
        ),
    )
    def post(self, request: Request) -> Response:
        data = TokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        email = data.validated_data["email"].lower()
        attempt = throttling.login_attempt(ip=throttling.client_ip(request), username=email)
        if attempt.wait is not None:
            raise Throttled(wait=attempt.wait)
        user = authenticate(
            request=request, username=email, password=data.validated_data["password"]
        )
        if user is None:
            raise InvalidCredentials(fields={"password": [InvalidCredentials.default_message]})
        throttling.login_succeeded(attempt)
        token, _ = Token.objects.get_or_create(user=user)
        customer = getattr(user, "customer", None)
        return Response({"token": token.key, "customer_id": customer.pk if customer else None})
