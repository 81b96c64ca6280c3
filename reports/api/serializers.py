from __future__ import annotations

from datetime import timedelta

from rest_framework import serializers

from core.api.fields import MoneyField
from core.money import Money

MAX_SPAN = timedelta(days=366)


class CollectionsQuerySerializer(serializers.Serializer):
    due_from = serializers.DateField(required=False, help_text="First due date (inclusive)")
    due_to = serializers.DateField(required=False, help_text="Last due date (inclusive)")

    def validate(self, attrs):
        start, end = attrs.get("due_from"), attrs.get("due_to")
        if start and end and start > end:
            raise serializers.ValidationError({"due_to": ["Must not be before due_from."]})
        if start and end and end - start > MAX_SPAN:
            raise serializers.ValidationError({"due_to": ["At most 366 days after due_from."]})
        return attrs


class CollectionWeekSerializer(serializers.Serializer):
    week = serializers.DateField(allow_null=True, help_text="Monday of the due week")
    currency = serializers.CharField()
    attempted = serializers.IntegerField(help_text="Debits attempted at least once")
    paid_first_attempt = serializers.IntegerField()
    paid = serializers.IntegerField(help_text="Settled in the end")
    failed_first_attempt = serializers.IntegerField()
    recovered = serializers.IntegerField(help_text="Failed at first, settled later")
    first_attempt_rate = serializers.DecimalField(
        max_digits=5, decimal_places=2, allow_null=True, help_text="Percent"
    )
    final_rate = serializers.DecimalField(
        max_digits=5, decimal_places=2, allow_null=True, help_text="Percent"
    )
    recovery_rate = serializers.DecimalField(
        max_digits=5, decimal_places=2, allow_null=True, help_text="Percent"
    )
    attempted_amount = MoneyField(allow_zero=True, source="money.attempted_amount")
    paid_first_attempt_amount = MoneyField(
        allow_zero=True, source="money.paid_first_attempt_amount"
    )
    failed_amount = MoneyField(allow_zero=True, source="money.failed_amount")
    recovered_amount = MoneyField(allow_zero=True, source="money.recovered_amount")


class BucketAmountSerializer(serializers.Serializer):
    bucket = serializers.CharField(help_text='"current" or the bucket\'s name')
    currency = serializers.CharField()
    plans = serializers.IntegerField()
    outstanding = MoneyField(allow_zero=True)
    overdue = MoneyField(allow_zero=True)


class CollectionsReportSerializer(serializers.Serializer):
    due_from = serializers.DateField()
    due_to = serializers.DateField()
    weeks = CollectionWeekSerializer(many=True)
    totals = CollectionWeekSerializer(many=True)
    buckets = BucketAmountSerializer(many=True)


def week_row(week) -> dict:
    """A ``CollectionWeek`` with its amounts as ``Money`` (what the serializer reads)."""
    money = {
        name: Money(getattr(week, name), week.currency)
        for name in (
            "attempted_amount",
            "paid_first_attempt_amount",
            "failed_amount",
            "recovered_amount",
        )
    }
    return {
        **{f: getattr(week, f) for f in ("week", "currency", "attempted", "paid_first_attempt")},
        **{f: getattr(week, f) for f in ("paid", "failed_first_attempt", "recovered")},
        "first_attempt_rate": week.first_attempt_rate,
        "final_rate": week.final_rate,
        "recovery_rate": week.recovery_rate,
        "money": money,
    }


def bucket_row(bucket) -> dict:
    return {
        "bucket": bucket.bucket or "current",
        "currency": bucket.currency,
        "plans": bucket.plans,
        "outstanding": Money(bucket.outstanding, bucket.currency),
        "overdue": Money(bucket.overdue, bucket.currency),
    }
