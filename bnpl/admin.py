from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.utils.html import format_html, format_html_join

from bnpl import applications, debit_controls, servicing
from bnpl.models import (
    ApplicationStatus,
    AprStatus,
    CreditApplication,
    Installment,
    Plan,
    PlanProduct,
    Promotion,
    PromotionKind,
)
from bnpl.pricing import price_schedule
from bnpl.selectors import plan_view
from core import clock
from core.admin import ActionsOnlyAdmin, AuditedAdmin
from core.errors import ApplicationError
from core.forms import MoneyFormMixin
from core.money import Money
from customers.models import Tier

# --- products and promotions ----------------------------------------------------------

# Product fields kept in minor units, edited in major units of the product's currency.
PRODUCT_MONEY_FIELDS = (
    "min_amount",
    "max_amount",
    "origination_fee_flat",
    "installment_fee",
    "late_fee_amount",
    "late_fee_cap_installment",
    "reschedule_fee",
)
PRODUCT_MONEY_NOTES = {
    "installment_fee": "; added to every installment",
    "origination_fee_flat": "; added to the first installment",
    "late_fee_amount": "; per late installment",
    "late_fee_cap_installment": "; 0: no cap of its own",
}
# The amount the change form prices as a preview (1,000 in major units), kept within limits.
PREVIEW_MAJOR_AMOUNT = 1000


class PlanProductForm(MoneyFormMixin, forms.ModelForm):
    """Amounts in major units ("12.50"); the terms must price (consistent method and APR …)."""

    money_fields = PRODUCT_MONEY_FIELDS
    money_notes = PRODUCT_MONEY_NOTES

    class Meta:
        model = PlanProduct
        fields = (
            "code", "name", "active", "currency", "min_amount", "max_amount",
            "installment_count", "frequency", "down_payment", "down_payment_percent",
            "cash_flow_aware", "interest_method", "apr", "origination_fee_flat",
            "origination_fee_percent", "installment_fee", "late_fee_amount",
            "late_fee_grace_days", "late_fee_cap_installment", "late_fee_cap_plan_percent",
            "refund_allocation", "reschedule_max_days", "reschedule_max_count", "reschedule_fee",
            "decider", "partner_account",
        )  # fmt: skip

    def clean(self) -> dict:
        data = super().clean()  # the money fields are minor units from here on
        if self.errors:
            return data
        candidate = PlanProduct(**{k: v for k, v in data.items() if k != "partner_account"})
        try:
            candidate.terms()
        except ValueError as exc:
            raise forms.ValidationError(f"These terms cannot be priced: {exc}.") from None
        return data


@admin.register(PlanProduct)
class PlanProductAdmin(AuditedAdmin):
    """Installment products. Editing one never changes running plans (they keep a snapshot)."""

    form = PlanProductForm
    list_display = (
        "code",
        "name",
        "active",
        "currency",
        "installment_count",
        "frequency",
        "down_payment",
        "interest_method",
        "apr",
        "limits",
        "decider",
    )
    list_filter = ("active", "currency", "frequency", "interest_method", "decider")
    search_fields = ("code", "name")
    readonly_fields = ("preview",)
    fieldsets = [
        (None, {"fields": ("code", "name", "active", "currency", "min_amount", "max_amount")}),
        (
            "Schedule",
            {
                "fields": (
                    "installment_count",
                    "frequency",
                    "down_payment",
                    "down_payment_percent",
                    "cash_flow_aware",
                )
            },
        ),
        (
            "Interest and fees",
            {
                "fields": (
                    "interest_method",
                    "apr",
                    "origination_fee_flat",
                    "origination_fee_percent",
                    "installment_fee",
                )
            },
        ),
        (
            "Late fees",
            {
                "fields": (
                    "late_fee_amount",
                    "late_fee_grace_days",
                    "late_fee_cap_installment",
                    "late_fee_cap_plan_percent",
                )
            },
        ),
        (
            "Servicing",
            {
                "fields": (
                    "refund_allocation",
                    "reschedule_max_days",
                    "reschedule_max_count",
                    "reschedule_fee",
                )
            },
        ),
        ("Credit decision", {"fields": ("decider", "partner_account")}),
        ("Preview", {"fields": ("preview",)}),
    ]

    @admin.display(description="Amount limits")
    def limits(self, obj: PlanProduct) -> str:
        return f"{Money(obj.min_amount, obj.currency)} – {Money(obj.max_amount, obj.currency)}"

    @admin.display(description="Schedule for a sample amount, starting today")
    def preview(self, obj: PlanProduct) -> str:
        if not obj.pk:
            return "Save the product to see a sample schedule."
        sample = Money.parse(PREVIEW_MAJOR_AMOUNT, obj.currency).minor
        sample = max(obj.min_amount, min(obj.max_amount, sample)) or 1
        try:
            schedule = price_schedule(
                terms=obj.terms(),
                amount=Money(sample, obj.currency),
                start_date=clock.business_date(),
            )
        except ValueError as exc:
            return f"These terms cannot be priced: {exc}."

        def money(minor: int) -> str:
            return str(Money(minor, obj.currency))

        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    line.number,
                    line.due_date,
                    money(line.principal),
                    money(line.interest),
                    money(line.fee),
                    money(line.total),
                )
                for line in schedule.lines
            ),
        )
        return format_html(
            "<p>{} over {} line(s): interest {}, fees {}, total {}, APR {}.</p>"
            "<table><thead><tr><th>#</th><th>Due</th><th>Principal</th><th>Interest</th>"
            "<th>Fee</th><th>Total</th></tr></thead><tbody>{}</tbody></table>",
            money(sample),
            len(schedule.lines),
            money(schedule.interest),
            money(schedule.fees),
            money(schedule.total),
            apr_shown(schedule.apr, schedule.apr_status),
            rows,
        )

    def save_model(self, request, obj, form, change) -> None:
        obj.updated_at = clock.now()
        if not change:
            obj.created_at = obj.updated_at
        super().save_model(request, obj, form, change)


class CommaSeparatedField(forms.CharField):
    """A list of strings typed as "a, b, c"; blank is the empty list."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value) -> list[str]:
        text = super().to_python(value)
        return sorted({part.strip() for part in text.split(",") if part.strip()})


class PromotionForm(forms.ModelForm):
    merchant_categories = CommaSeparatedField(
        required=False,
        help_text="Comma-separated merchant categories; blank: any cart. A cart qualifies "
        "only when every line's category is listed.",
    )
    customer_tiers = forms.MultipleChoiceField(
        required=False,
        choices=Tier.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every tier.",
    )

    class Meta:
        model = Promotion
        fields = (
            "code", "name", "active", "kind", "apr", "merchant_categories", "customer_tiers",
            "products", "valid_from", "valid_until", "priority",
        )  # fmt: skip

    def clean(self) -> dict:
        data = super().clean()
        kind, apr = data.get("kind"), data.get("apr")
        if kind == PromotionKind.REDUCED_APR and apr is None:
            self.add_error("apr", "A reduced-APR promotion needs the APR it offers.")
        if kind != PromotionKind.REDUCED_APR and apr:
            self.add_error("apr", "Only a reduced-APR promotion has an APR; leave it at 0.")
        return data


@admin.register(Promotion)
class PromotionAdmin(AuditedAdmin):
    """Promotions: the lowest priority number among those that apply to a quote wins."""

    form = PromotionForm
    list_display = (
        "code",
        "name",
        "kind",
        "active",
        "priority",
        "valid_from",
        "valid_until",
        "categories",
        "tiers",
    )
    list_filter = ("active", "kind")
    search_fields = ("code", "name")
    filter_horizontal = ("products",)
    fields = (
        "code",
        "name",
        "active",
        "kind",
        "apr",
        "merchant_categories",
        "customer_tiers",
        "products",
        "valid_from",
        "valid_until",
        "priority",
    )

    @admin.display(description="Merchant categories")
    def categories(self, obj: Promotion) -> str:
        return ", ".join(obj.merchant_categories) or "any"

    @admin.display(description="Customer tiers")
    def tiers(self, obj: Promotion) -> str:
        return ", ".join(obj.customer_tiers) or "any"

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_at = clock.now()
        super().save_model(request, obj, form, change)


# --- plans: servicing actions ---------------------------------------------------------


class PlanServicingActionForm(ActionForm):
    """Inputs of the servicing actions, next to the action menu."""

    number = forms.IntegerField(
        required=False, min_value=0, help_text="Reschedule: the installment to move"
    )
    new_date = forms.DateField(
        required=False, help_text="Reschedule: its new due date (YYYY-MM-DD)"
    )
    amount = forms.DecimalField(
        required=False, min_value=0, decimal_places=3, help_text="Refund: in the plan's currency"
    )
    note = forms.CharField(required=False, max_length=200)


class InstallmentInline(admin.TabularInline):
    model = Installment
    extra = 0
    can_delete = False
    fields = (
        "number",
        "due_date",
        "original_due_date",
        "principal",
        "interest",
        "fee",
        "late_fee",
        "paid_principal",
        "paid_interest",
        "paid_fee",
        "paid_late_fee",
        "status",
        "paid_at",
    )
    readonly_fields = fields
    ordering = ["number"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


def apr_shown(apr: Decimal | None, status: str) -> str:
    """An APR as a person reads it: the rate, or why there is none."""
    if status == AprStatus.RATE:
        return f"{apr:.2f} %"
    return AprStatus(status).label


@admin.register(Plan)
class PlanAdmin(ActionsOnlyAdmin):
    """Plans are changed only by the servicing actions (audited, ledgered), never by a form.

    Amounts in the inline are minor units.
    """

    list_display = (
        "id",
        "customer",
        "status",
        "amount_display",
        "outstanding_display",
        "start_date",
        "reschedule_count",
        "created_at",
    )
    list_filter = ("status", "currency", "funded_by", "debits_paused")
    search_fields = ("=id", "customer__user__email", "reference_id")
    list_select_related = ("customer__user",)
    inlines = [InstallmentInline]
    action_form = PlanServicingActionForm
    actions = [
        "reschedule",
        "pay_off_received",
        "cancel_plans",
        "refund",
        "open_dispute",
        "close_dispute",
    ]
    readonly_fields = (
        "customer",
        "product",
        "promotion",
        "reference_type",
        "reference_id",
        "currency",
        "amount",
        "down_payment",
        "refunded_amount",
        "apr_display",
        "status",
        "payment_method",
        "funded_by",
        "start_date",
        "reschedule_count",
        "debits_paused",
        "paused_reason",
        "terms",
        "created_at",
        "completed_at",
        "cancelled_at",
    )
    fields = readonly_fields

    @admin.display(description="Amount")
    def amount_display(self, obj: Plan) -> str:
        return str(obj.amount_money)

    @admin.display(description="APR")
    def apr_display(self, obj: Plan) -> str:
        return apr_shown(obj.apr, obj.apr_status)

    @admin.display(description="Outstanding today")
    def outstanding_display(self, obj: Plan) -> str:
        return str(plan_view(obj).outstanding)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("installments")

    def _run(self, request, queryset, verb: str, call) -> None:
        done = 0
        for plan in queryset:
            try:
                call(plan)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"Plan #{plan.pk}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} plan(s).", messages.SUCCESS)

    @admin.action(
        description="Reschedule an installment (number and new date above)",
        permissions=["change"],
    )
    def reschedule(self, request, queryset) -> None:
        form = PlanServicingActionForm(request.POST)
        form.is_valid()
        number, new_date = form.cleaned_data.get("number"), form.cleaned_data.get("new_date")
        if number is None or new_date is None:
            self.message_user(
                request, "Enter the installment number and its new date.", messages.ERROR
            )
            return
        self._run(
            request,
            queryset,
            "Rescheduled",
            lambda plan: servicing.plan_reschedule(
                plan_id=plan.pk, number=number, new_date=new_date, actor=request.user
            ),
        )

    @admin.action(
        description="Pay off: the payoff amount was received outside the gateways",
        permissions=["change"],
    )
    def pay_off_received(self, request, queryset) -> None:
        note = request.POST.get("note", "")
        self._run(
            request,
            queryset,
            "Paid off",
            lambda plan: servicing.plan_pay_off(
                plan_id=plan.pk, source=servicing.MANUAL, actor=request.user, note=note
            ),
        )

    @admin.action(description="Cancel (only before the first debit)", permissions=["change"])
    def cancel_plans(self, request, queryset) -> None:
        note = request.POST.get("note", "")
        self._run(
            request,
            queryset,
            "Cancelled",
            lambda plan: servicing.plan_cancel(plan_id=plan.pk, actor=request.user, reason=note),
        )

    @admin.action(description="Refund part of the order (amount above)", permissions=["change"])
    def refund(self, request, queryset) -> None:
        raw = (request.POST.get("amount") or "").strip()
        if not raw:
            self.message_user(request, "Enter the amount refunded.", messages.ERROR)
            return
        note = request.POST.get("note", "")

        def call(plan: Plan) -> None:
            servicing.plan_refund(
                plan_id=plan.pk,
                amount=Money.parse(raw, plan.currency),
                actor=request.user,
                note=note,
            )

        self._run(request, queryset, "Refunded", call)

    @admin.action(
        description="Dispute opened on the order: its debits pause (reason in the note above)",
        permissions=["change"],
    )
    def open_dispute(self, request, queryset) -> None:
        reason = request.POST.get("note", "")
        self._run(
            request,
            queryset,
            "Opened a dispute on the order of",
            lambda plan: debit_controls.plan_dispute_open(
                plan_id=plan.pk, reason=reason, actor=request.user
            ),
        )

    @admin.action(
        description="Disputes of the order closed: the debits resume", permissions=["change"]
    )
    def close_dispute(self, request, queryset) -> None:
        note = request.POST.get("note", "")
        self._run(
            request,
            queryset,
            "Closed the disputes on the order of",
            lambda plan: debit_controls.plan_dispute_close(
                plan_id=plan.pk, note=note, actor=request.user
            ),
        )


# --- credit applications: the review queue --------------------------------------------


class ReviewQueueFilter(admin.SimpleListFilter):
    """Opens on the review queue; staff can widen it to every open or every application."""

    title = "queue"
    parameter_name = "queue"
    QUEUES = {
        "review": (ApplicationStatus.REVIEW,),
        "open": CreditApplication.OPEN,
    }

    def lookups(self, request, model_admin):
        return [
            ("review", "Waiting for staff review"),
            ("open", "Every open application"),
            ("all", "All applications"),
        ]

    def value(self):
        return super().value() or "review"

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        statuses = self.QUEUES.get(self.value())
        return queryset.filter(status__in=statuses) if statuses else queryset


class ReviewActionForm(ActionForm):
    note = forms.CharField(
        required=False, max_length=255, help_text="Why (shown to the customer on a decline)"
    )


@admin.register(CreditApplication)
class CreditApplicationAdmin(ActionsOnlyAdmin):
    """Credit decisions. Staff decide the applications in review with the actions, which
    go through ``bnpl.applications.application_review`` (audited, reviewer recorded)."""

    list_display = (
        "id",
        "created_at",
        "customer",
        "product",
        "amount_display",
        "status",
        "score",
        "reason_codes",
        "expires_at",
        "reviewer",
    )
    list_filter = (ReviewQueueFilter, "status", "decided_by", "product")
    search_fields = ("=id", "customer__user__email", "reference_id", "partner_reference")
    list_select_related = ("customer__user", "product", "reviewer")
    ordering = ["expires_at", "id"]
    action_form = ReviewActionForm
    actions = ["approve_applications", "decline_applications"]
    fields = (
        "customer",
        "product",
        "promotion",
        "reference_type",
        "reference_id",
        "amount_display",
        "payment_method",
        "status",
        "decided_by",
        "reviewer",
        "score",
        "reasons_display",
        "explanation_display",
        "lines",
        "terms",
        "partner_reference",
        "created_at",
        "expires_at",
        "decided_at",
    )
    readonly_fields = fields

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj: CreditApplication) -> str:
        return str(obj.amount_money)

    @admin.display(description="Reasons")
    def reason_codes(self, obj: CreditApplication) -> str:
        return ", ".join(r.get("code", "") for r in obj.reasons) or "—"

    @admin.display(description="Reasons")
    def reasons_display(self, obj: CreditApplication):
        if not obj.reasons:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><code>{}</code> {}</li>",
                ((r.get("code", ""), r.get("message", "")) for r in obj.reasons),
            ),
        )

    @admin.display(description="Score and inputs")
    def explanation_display(self, obj: CreditApplication):
        explanation = obj.explanation or {}
        score = explanation.get("score", {})
        components = format_html_join(
            "",
            "<li>{}: {} → {}</li>",
            (
                (c.get("name", ""), c.get("count", 0), f"{int(c.get('points', 0)):+d}")
                for c in score.get("components", [])
            ),
        )
        facts = format_html_join(
            "",
            "<li>{}: {}</li>",
            (
                (key, value)
                for key, value in sorted(explanation.items())
                if key not in ("score", "rules")
            ),
        )
        return format_html(
            "<p>Score {} (base {})</p><ul>{}</ul><ul>{}</ul>",
            score.get("value", obj.score if obj.score is not None else "—"),
            score.get("base", "—"),
            components,
            facts,
        )

    def _review(self, request, queryset, *, approve: bool) -> None:
        note = request.POST.get("note", "")
        done = 0
        for application_id in queryset.values_list("id", flat=True):
            try:
                applications.application_review(
                    application_id=application_id,
                    approve=approve,
                    reviewer=request.user,
                    note=note,
                )
            except ApplicationError as exc:
                self.message_user(
                    request, f"Application #{application_id}: {exc.message}", messages.ERROR
                )
            else:
                done += 1
        if done:
            verb = "Approved" if approve else "Declined"
            self.message_user(request, f"{verb} {done} application(s).", messages.SUCCESS)

    @admin.action(
        description="Approve (the order is released, the plan created)", permissions=["change"]
    )
    def approve_applications(self, request, queryset) -> None:
        self._review(request, queryset, approve=True)

    @admin.action(
        description="Decline (the order is cancelled; note above)", permissions=["change"]
    )
    def decline_applications(self, request, queryset) -> None:
        self._review(request, queryset, approve=False)
