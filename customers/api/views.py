from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
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


class SignInThrottle(BaseThrottle):
    """Refuses a sign-in while its address, or its address for that account, is locked out."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        data = request.data if isinstance(request.data, dict) else {}
        email = data.get("email")
        self._wait = throttling.login_wait(
            ip=throttling.client_ip(request), username=email if isinstance(email, str) else ""
        )
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


class AuthTokenApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [SignInThrottle]

    @extend_schema(
        operation_id="auth_token_obtain",
        request=TokenInputSerializer,
        responses={200: TokenOutputSerializer, **error_responses(400, 415, 429)},
        parameters=[RETRY_AFTER_HEADER],
        tags=["customers"],
        description=(
            "Too many wrong passwords from one address (for one account, or in all) "
            "answer 429 request.throttled until the window ends (Retry-After, seconds)."
        ),
    )
    def post(self, request: Request) -> Response:
        data = TokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        email = data.validated_data["email"].lower()
        ip = throttling.client_ip(request)
        user = authenticate(
            request=request, username=email, password=data.validated_data["password"]
        )
        if user is None:
            throttling.login_failed(ip=ip, username=email)
            raise InvalidCredentials(fields={"password": [InvalidCredentials.default_message]})
        throttling.login_succeeded(ip=ip, username=email)
        token, _ = Token.objects.get_or_create(user=user)
        customer = getattr(user, "customer", None)
        return Response({"token": token.key, "customer_id": customer.pk if customer else None})
