"""Back-office screens of delinquency: late plans by bucket, write-off and recovery, late fees.

Imported by ``collections_/admin.py`` so that the admin's autodiscovery registers them.
"""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from bnpl import writeoff
from bnpl.models import PlanStatus
from collections_.buckets import buckets_parse
from collections_.delinquency import OPEN
from collections_.models import (
    CollectionsSettings,
    DelinquencyTransition,
    DelinquentPlan,
    LateFeeCharge,
)
from collections_.selectors import collections_settings
from core import clock
from core.admin import ActionsOnlyAdmin, ReadOnlyAdmin
from core.audit import audit_record
from core.errors import ApplicationError
from core.money import Money


class DelinquentFilter(admin.SimpleListFilter):
    title = "standing"
    parameter_name = "standing"

    def lookups(self, request, model_admin):
        return [
            ("late", "Past due"),
            ("flagged", "Flagged for write-off"),
            ("written_off", "Written off"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "late":
            return queryset.filter(status=PlanStatus.ACTIVE, days_past_due__gt=0)
        if self.value() == "flagged":
            return queryset.filter(status=PlanStatus.ACTIVE, write_off_flagged_at__isnull=False)
        if self.value() == "written_off":
            return queryset.filter(status=PlanStatus.WRITTEN_OFF)
        return queryset


class RecoveryForm(forms.Form):
    amount = forms.DecimalField(min_value=0, decimal_places=3, help_text="e.g. 50.00")
    note = forms.CharField(required=False, max_length=200, help_text="e.g. the bank reference")
    # A fresh key per rendered form: a double-submitted form records once.
    key = forms.CharField(widget=forms.HiddenInput)


@admin.register(DelinquentPlan)
class DelinquentPlanAdmin(ActionsOnlyAdmin):
    """Plans by delinquency: write off (with a confirmation page) and record recoveries."""

    change_list_template = "admin/collections/delinquentplan/change_list.html"
    list_display = (
        "id",
        "customer",
        "status",
        "days_past_due",
        "delinquency_bucket",
        "write_off_flagged_at",
        "amount_display",
        "written_off_display",
        "recovered_display",
    )
    list_filter = (DelinquentFilter, "delinquency_bucket", "status")
    search_fields = ("customer__user__email", "reference_id", "id")
    list_select_related = ("customer__user",)
    ordering = ("-days_past_due", "id")
    actions = ["write_off", "record_recovery"]

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj: DelinquentPlan) -> str:
        return str(Money(obj.amount, obj.currency))

    @admin.display(description="Written off", ordering="written_off_amount")
    def written_off_display(self, obj: DelinquentPlan) -> str:
        return str(Money(obj.written_off_amount, obj.currency))

    @admin.display(description="Recovered", ordering="recovered_amount")
    def recovered_display(self, obj: DelinquentPlan) -> str:
        return str(Money(obj.recovered_amount, obj.currency))

    def _page(self, request, template: str, title: str, **context) -> TemplateResponse:
        return TemplateResponse(
            request,
            template,
            {
                **self.admin_site.each_context(request),
                "title": title,
                "opts": self.model._meta,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                **context,
            },
        )

    @admin.action(description="Write off selected plans…", permissions=["change"])
    def write_off(self, request: HttpRequest, queryset: QuerySet[DelinquentPlan]):
        plans = list(
            queryset.filter(status=PlanStatus.ACTIVE)
            .select_related("customer__user")
            .prefetch_related("installments")
        )
        if request.POST.get("confirm") != "yes":
            rows = [
                {
                    "plan": plan,
                    "principal": Money(
                        sum(
                            i.principal - i.paid_principal
                            for i in plan.installments.all()
                            if i.status in OPEN
                        ),
                        plan.currency,
                    ),
                }
                for plan in plans
            ]
            return self._page(
                request,
                "admin/collections/delinquentplan/write_off_confirm.html",
                "Write off plans?",
                rows=rows,
                queryset=plans,
            )
        note = request.POST.get("note", "").strip() or "Written off in the admin"
        done = 0
        for plan in plans:
            try:
                writeoff.plan_write_off(plan_id=plan.pk, actor=request.user, note=note)
            except ApplicationError as exc:
                self.message_user(request, f"Plan #{plan.pk}: {exc.message}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"Wrote off {done} plan(s).", messages.SUCCESS)
        return None

    @admin.action(description="Record a recovery payment…", permissions=["change"])
    def record_recovery(self, request: HttpRequest, queryset: QuerySet[DelinquentPlan]):
        plans = list(queryset.filter(status=PlanStatus.WRITTEN_OFF)[:2])
        if len(plans) != 1:
            self.message_user(request, "Select exactly one written-off plan.", messages.ERROR)
            return None
        plan = plans[0]
        form = RecoveryForm(
            request.POST if "key" in request.POST else None,
            initial={"key": uuid.uuid4().hex},
        )
        if form.is_valid():
            try:
                writeoff.plan_recovery_record(
                    plan_id=plan.pk,
                    amount=Money.parse(form.cleaned_data["amount"], plan.currency),
                    key=f"admin:{form.cleaned_data['key']}",
                    actor=request.user,
                    note=form.cleaned_data["note"],
                )
            except ApplicationError as exc:
                form.add_error("amount", exc.fields.get("amount") or exc.message)
            else:
                self.message_user(
                    request, f"Recorded a recovery on plan #{plan.pk}.", messages.SUCCESS
                )
                return None
        return self._page(
            request,
            "admin/collections/delinquentplan/recovery.html",
            f"Record a recovery on plan #{plan.pk}",
            plan=plan,
            form=form,
            left=Money(plan.written_off_amount - plan.recovered_amount, plan.currency),
        )


@admin.register(DelinquencyTransition)
class DelinquencyTransitionAdmin(ReadOnlyAdmin):
    list_display = ("plan", "from_bucket", "to_bucket", "days_past_due", "business_date")
    list_filter = ("to_bucket", "business_date")
    search_fields = ("plan__id",)
    raw_id_fields = ("plan",)


@admin.register(LateFeeCharge)
class LateFeeChargeAdmin(ReadOnlyAdmin):
    list_display = ("installment", "plan", "reason", "amount_display", "business_date")
    list_filter = ("reason", "business_date")
    search_fields = ("plan__id",)
    list_select_related = ("installment",)
    raw_id_fields = ("installment", "plan")

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj: LateFeeCharge) -> str:
        return str(Money(obj.amount, obj.currency))


def _positive_ints(value, unit: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise forms.ValidationError(f"A list of whole numbers of {unit}, e.g. [1, 3, 7].")
    return value


class CollectionsSettingsForm(forms.ModelForm):
    class Meta:
        model = CollectionsSettings
        fields = (
            "soft_retry_days",
            "technical_retry_minutes",
            "reminder_days_before",
            "overdue_reminder_interval_days",
            "buckets",
            "chunk_size",
        )
        help_texts = {
            "buckets": 'Ordered, no gaps, from 1 day; e.g. [{"name": "1-30", "min_days": 1, '
            '"max_days": 30, "actions": ["reminder", "late_fee"]}, …]; actions: '
            "reminder, block_bnpl, late_fee, flag_write_off; the last max_days may be null.",
        }

    def clean_soft_retry_days(self):
        return _positive_ints(self.cleaned_data["soft_retry_days"], "days")

    def clean_technical_retry_minutes(self):
        return _positive_ints(self.cleaned_data["technical_retry_minutes"], "minutes")

    def clean_buckets(self):
        buckets = self.cleaned_data["buckets"]
        if not isinstance(buckets, list):
            raise forms.ValidationError("A list of buckets.")
        try:
            buckets_parse(buckets)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return buckets


@admin.register(CollectionsSettings)
class CollectionsSettingsAdmin(admin.ModelAdmin):
    """The one settings record: the list goes straight to it; every change is audited."""

    form = CollectionsSettingsForm

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        conf = collections_settings()
        return HttpResponseRedirect(
            reverse("admin:collections_collectionssettings_change", args=[conf.pk])
        )

    def save_model(self, request, obj, form, change) -> None:
        before = CollectionsSettings.objects.get(pk=obj.pk)
        obj.updated_at = clock.now()
        super().save_model(request, obj, form, change)
        audit_record(
            actor=request.user,
            action="collections.settings_changed",
            target=obj,
            changes={
                name: {"before": getattr(before, name), "after": getattr(obj, name)}
                for name in form.Meta.fields
                if getattr(before, name) != getattr(obj, name)
            },
        )
