from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from core.api.fields import StrictCharField, StrictEmailField
from customers.models import Customer


class SignUpInputSerializer(serializers.Serializer):
    email = StrictEmailField(max_length=150)
    password = StrictCharField(write_only=True, max_length=128, style={"input_type": "password"})
    first_name = StrictCharField(max_length=150, required=False, default="")
    last_name = StrictCharField(max_length=150, required=False, default="")

    def validate_password(self, value: str) -> str:
        try:
            validate_password(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from None
        return value


class CustomerOutputSerializer(serializers.ModelSerializer):
    email = StrictEmailField(source="user.email")
    first_name = StrictCharField(source="user.first_name")
    last_name = StrictCharField(source="user.last_name")

    class Meta:
        model = Customer
        fields = ("id", "email", "first_name", "last_name", "tier", "kyc_status", "created_at")


class TokenInputSerializer(serializers.Serializer):
    email = StrictEmailField()
    password = StrictCharField(write_only=True, style={"input_type": "password"})


class TokenOutputSerializer(serializers.Serializer):
    token = StrictCharField()
    customer_id = serializers.IntegerField(allow_null=True)
