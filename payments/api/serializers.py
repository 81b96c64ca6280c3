from rest_framework import serializers


class SavedPaymentMethodOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    token = serializers.CharField(
        help_text="The processor's token (pm_…): send it as card_payment_method at checkout "
        "or as a plan's payment_method. Accepted only from this customer."
    )
    brand = serializers.CharField(help_text="visa, mastercard, amex or unknown; may be empty")
    last4 = serializers.CharField(help_text="The card's last four digits; may be empty")
    exp_month = serializers.IntegerField(allow_null=True)
    exp_year = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class SavedPaymentMethodListOutputSerializer(serializers.Serializer):
    payment_methods = SavedPaymentMethodOutputSerializer(many=True)


class SavedPaymentMethodInputSerializer(serializers.Serializer):
    """Card details go to the card processor and are never stored or echoed back."""

    card_number = serializers.RegexField(
        r"^[0-9]{12,19}$",
        write_only=True,
        trim_whitespace=False,
        help_text="12 to 19 digits, no spaces; passed to the card processor, never stored",
        error_messages={"invalid": "12 to 19 digits, without spaces."},
    )
    exp_month = serializers.IntegerField(min_value=1, max_value=12)
    exp_year = serializers.IntegerField(min_value=2000, max_value=2100)
