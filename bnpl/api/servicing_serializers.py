"""Serializers of the plan servicing endpoints: validate and translate only."""

from rest_framework import serializers

from bnpl.api.serializers import APR_STATUS_HELP
from bnpl.models import AprStatus
from bnpl.servicing import CARD, WALLET
from core.api.fields import MoneyField, StrictBooleanField, StrictCharField, StrictIntegerField


class InstallmentOutputSerializer(serializers.Serializer):
    number = serializers.IntegerField(help_text="0 is a percentage down payment")
    due_date = serializers.DateField()
    original_due_date = serializers.DateField()
    principal = MoneyField(allow_zero=True)
    interest = MoneyField(allow_zero=True)
    fee = MoneyField(allow_zero=True)
    late_fee = MoneyField(allow_zero=True)
    total = MoneyField(allow_zero=True, help_text="principal + interest + fee + late fee")
    paid = MoneyField(allow_zero=True)
    outstanding = MoneyField(allow_zero=True)
    status = serializers.ChoiceField(
        choices=["paid", "due", "overdue", "scheduled", "cancelled", "written_off"],
        help_text="due: falls due today; overdue: past its date and not fully paid",
    )


class PlanOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = StrictCharField()
    currency = StrictCharField()
    amount = MoneyField(help_text="The financed order's total")
    down_payment = MoneyField(allow_zero=True)
    apr = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        allow_null=True,
        help_text="Effective annual rate of the cost of credit, percent; null when there is "
        "no rate to show (apr_status says why)",
    )
    apr_status = serializers.ChoiceField(choices=AprStatus.choices, help_text=APR_STATUS_HELP)
    start_date = serializers.DateField()
    created_at = serializers.DateTimeField()
    reschedule_count = serializers.IntegerField()
    reference_type = StrictCharField()
    reference_id = StrictCharField()
    as_of = serializers.DateField(help_text="The business date the states are computed for")
    total = MoneyField(allow_zero=True)
    paid = MoneyField(allow_zero=True)
    outstanding = MoneyField(allow_zero=True)
    next_due = InstallmentOutputSerializer(allow_null=True)
    installments = InstallmentOutputSerializer(many=True)


class PlanListOutputSerializer(serializers.Serializer):
    plans = PlanOutputSerializer(many=True)


class RescheduleInputSerializer(serializers.Serializer):
    number = StrictIntegerField(min_value=0, help_text="The installment to move")
    due_date = serializers.DateField(help_text="Its new due date")
    confirm = StrictBooleanField(
        default=False, help_text="false: show the new schedule only; true: apply it"
    )


class RescheduleOutputSerializer(serializers.Serializer):
    confirmed = serializers.BooleanField()
    number = serializers.IntegerField()
    old_date = serializers.DateField()
    new_date = serializers.DateField()
    fee = MoneyField(allow_zero=True, help_text="The reschedule fee added to the installment")
    interest_change = MoneyField(help_text="Signed: moving a date earlier can lower it")
    plan = PlanOutputSerializer()


class ExtraPaymentInputSerializer(serializers.Serializer):
    amount = MoneyField()
    source = serializers.ChoiceField(
        choices=[WALLET, CARD],
        default=WALLET,
        help_text="card: the plan's card, which must be one of the caller's saved cards "
        "(422 payments.payment_method_unknown otherwise)",
    )


class ExtraPaymentOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["paid", "pending"], help_text="pending: the card processor answers later"
    )
    source = StrictCharField()
    amount = MoneyField()
    payment_transaction_id = serializers.IntegerField(allow_null=True)
    installment = InstallmentOutputSerializer()
    plan = PlanOutputSerializer()


class PayoffLineSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    interest_kept = serializers.IntegerField(help_text="Minor units")
    interest_waived = serializers.IntegerField(help_text="Minor units")
    pays = serializers.IntegerField(help_text="Minor units")


class PayoffQuoteSerializer(serializers.Serializer):
    as_of = serializers.DateField()
    principal = MoneyField(allow_zero=True)
    interest = MoneyField(allow_zero=True, help_text="Interest earned up to today, unpaid")
    interest_waived = MoneyField(allow_zero=True, help_text="Interest not yet earned: removed")
    fees = MoneyField(allow_zero=True)
    total = MoneyField(allow_zero=True)
    lines = PayoffLineSerializer(many=True)


class PayoffInputSerializer(serializers.Serializer):
    confirm = StrictBooleanField(default=False, help_text="false: the quote only; true: pay it")
    source = serializers.ChoiceField(
        choices=[WALLET, CARD],
        default=WALLET,
        help_text="card: the plan's card, which must be one of the caller's saved cards "
        "(422 payments.payment_method_unknown otherwise)",
    )
    expected_total = MoneyField(
        required=False,
        allow_zero=True,
        help_text="The total shown in the preview; refused if the quote changed since",
    )


class PayoffOutputSerializer(serializers.Serializer):
    confirmed = serializers.BooleanField()
    status = serializers.ChoiceField(
        choices=["quoted", "paid", "pending"],
        help_text="pending: the card processor answers later",
    )
    quote = PayoffQuoteSerializer()
    plan = PlanOutputSerializer()


class PlanCancelInputSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=255, default="")


class IncomeCreditSerializer(serializers.Serializer):
    on = serializers.DateField()
    amount = MoneyField()
    kind = StrictCharField()


class IncomeDaySerializer(serializers.Serializer):
    day = serializers.IntegerField()
    months = serializers.IntegerField(help_text="Months with a top-up near this day")
    credits = IncomeCreditSerializer(many=True)


class IncomeInferenceSerializer(serializers.Serializer):
    since = serializers.DateField()
    until = serializers.DateField()
    credits_considered = serializers.IntegerField()
    months_observed = serializers.IntegerField()
    days = IncomeDaySerializer(many=True)
    confidence = serializers.DecimalField(max_digits=3, decimal_places=2)
    explanation = StrictCharField()


class DateSuggestionSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    due_date = serializers.DateField()
    suggested = serializers.DateField()
    within_policy = serializers.BooleanField(
        help_text="A reschedule to the suggested date is allowed by the plan's terms"
    )


class SuggestedDatesOutputSerializer(serializers.Serializer):
    income = IncomeInferenceSerializer()
    income_aligned_dates = serializers.BooleanField(help_text="The customer opted in")
    cash_flow_aware = serializers.BooleanField(help_text="The plan's product offers alignment")
    suggestions = DateSuggestionSerializer(many=True)


class BorrowerProfileSerializer(serializers.Serializer):
    income_aligned_dates = StrictBooleanField(
        help_text="New plans of cash-flow-aware products fall due just after income days"
    )
