import uuid
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from core import clock
from core.admin import ActionsOnlyAdmin, AuditedAdmin, ReadOnlyAdmin
from core.errors import ApplicationError
from core.forms import MoneyFormMixin
from core.money import Money, MoneyError
from customers.models import Customer, Feature
from customers.selectors import kyc_required_features
from customers.services import kyc_requirement_set
from wallet import selectors, services
from wallet.bnpl import bnpl_eligibility, bnpl_settings
from wallet.models import (
    BnplCustomerProfile,
    BnplSettings,
    BnplWhitelistEntry,
    DebtStatus,
    InterestType,
    TransactionKind,
    Wallet,
    WalletDebt,
    WalletTransaction,
)


class CreditActionForm(ActionForm):
    """Extra fields next to the action menu: what to credit and why."""

    amount = forms.DecimalField(
        required=False,
        min_value=0,
        decimal_places=3,
        help_text="In the wallet's currency, e.g. 50.00",
    )
    kind = forms.ChoiceField(
        required=False,
        choices=[
            (TransactionKind.TOP_UP, "Top-up (money received)"),
            (TransactionKind.GOODWILL, "Goodwill credit"),
        ],
    )
    note = forms.CharField(required=False, max_length=200)
    # A fresh key per rendered page: a double-submitted form credits once.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, initial=lambda: uuid.uuid4().hex)


class WalletTransactionInline(admin.TabularInline):
    model = WalletTransaction
    extra = 0
    can_delete = False
    fields = (
        "created_at",
        "kind",
        "direction",
        "amount",
        "balance_after",
        "reference_type",
        "reference_id",
        "actor",
        "note",
    )
    readonly_fields = fields
    ordering = ["-created_at", "-id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = ("id", "customer", "currency", "balance_display", "created_at")
    list_filter = ("currency",)
    search_fields = ("customer__user__email",)
    list_select_related = ("customer__user", "account")
    fields = ("customer", "currency")
    autocomplete_fields = ("customer",)
    inlines = [WalletTransactionInline]
    action_form = CreditActionForm
    actions = ["credit_wallets"]

    def get_readonly_fields(self, request, obj=None):
        return ("customer", "currency") if obj else ()

    def get_inlines(self, request, obj=None):
        return self.inlines if obj else []  # a new wallet has no activity yet

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Balance", ordering="account__balance")
    def balance_display(self, obj: Wallet) -> str:
        return str(obj.balance)

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            wallet = services.wallet_get_or_create(customer=obj.customer, currency=obj.currency)
            obj.pk, obj.account_id, obj.created_at = wallet.pk, wallet.account_id, wallet.created_at

    @admin.action(
        description="Credit selected wallets (amount, kind, note above)", permissions=["change"]
    )
    def credit_wallets(self, request: HttpRequest, queryset: QuerySet[Wallet]) -> None:
        raw_amount = (request.POST.get("amount") or "").strip()  # as the form field cleans it
        kind = request.POST.get("kind") or TransactionKind.TOP_UP
        note = request.POST.get("note", "")
        key = request.POST.get("idempotency_key") or uuid.uuid4().hex
        if not raw_amount:
            self.message_user(request, "Enter an amount to credit.", messages.ERROR)
            return
        done = 0
        for wallet in queryset:
            try:
                amount = Money.parse(raw_amount, wallet.currency)
                services.wallet_credit(
                    customer_id=wallet.customer_id,
                    amount=amount,
                    kind=kind,
                    idempotency_key=f"admin:{key}",
                    actor=request.user,
                    note=note or "Credited in the admin",
                )
            except ApplicationError as exc:
                self.message_user(request, f"{wallet}: {exc.message}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(
                request, f"Credited {done} wallet(s) with {raw_amount}.", messages.SUCCESS
            )


@admin.register(WalletTransaction)
class WalletTransactionAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "wallet",
        "kind",
        "direction",
        "amount",
        "balance_after",
        "reference_type",
        "reference_id",
        "actor",
    )
    list_filter = ("kind", "direction")
    search_fields = ("wallet__customer__user__email", "reference_id")
    list_select_related = ("wallet__customer__user", "actor")


# --- Wallet BNPL ----------------------------------------------------------------------


class BnplSettingsForm(MoneyFormMixin, forms.ModelForm):
    """Amounts in the units of the BNPL currency; KYC-gated features as checkboxes."""

    money_fields = ("max_debt_per_user", "min_order")
    kyc_required_features = forms.MultipleChoiceField(
        choices=Feature.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="KYC-required features",
        help_text="These features need an approved KYC.",
    )

    class Meta:
        model = BnplSettings
        fields = (
            "enabled",
            "currency",
            "eligibility_mode",
            "eligible_roles",
            "max_debt_per_user",
            "min_order",
            "repayment_days",
            "interest_type",
            "interest_amount",
            "fixed_recurrence",
            "grace_days",
            "block_withdrawal_while_in_debt",
        )
        labels = {"max_debt_per_user": "Max debt per user", "min_order": "Min order to qualify"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kyc_required_features"].initial = kyc_required_features()

    def clean(self) -> dict:
        """A flat interest is money: no more decimals than the currency has (never rounded)."""
        data = super().clean()
        flat = data.get("interest_amount")
        if data.get("interest_type") == InterestType.FIXED and flat is not None:
            try:
                Money.parse(flat, self.form_currency(data))
            except MoneyError as exc:
                self.add_error("interest_amount", exc.message)
        return data


@admin.register(BnplSettings)
class BnplSettingsAdmin(admin.ModelAdmin):
    """One settings record: the list goes straight to it; every change is audited."""

    form = BnplSettingsForm
    fieldsets = [
        (None, {"fields": ("enabled", "currency")}),
        (
            "Who may use it",
            {"fields": ("eligibility_mode", "eligible_roles", "kyc_required_features")},
        ),
        ("Limits", {"fields": ("max_debt_per_user", "min_order", "repayment_days")}),
        (
            "Interest",
            {"fields": ("interest_type", "interest_amount", "fixed_recurrence", "grace_days")},
        ),
        ("Withdrawals", {"fields": ("block_withdrawal_while_in_debt",)}),
    ]
    filter_horizontal = ("eligible_roles",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        conf = bnpl_settings()
        return HttpResponseRedirect(reverse("admin:wallet_bnplsettings_change", args=[conf.pk]))

    @staticmethod
    def _snapshot(conf: BnplSettings) -> dict:
        values = {
            f.name: getattr(conf, f.name)
            for f in conf._meta.concrete_fields
            if f.name not in {"id", "updated_at"}
        }
        values["eligible_roles"] = sorted(conf.eligible_roles.values_list("name", flat=True))
        values["kyc_required_features"] = kyc_required_features()
        return values

    def save_model(self, request, obj, form, change) -> None:
        request._bnpl_before = self._snapshot(BnplSettings.objects.get(pk=obj.pk))
        obj.updated_at = clock.now()
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        wanted = set(form.cleaned_data["kyc_required_features"])
        for feature in Feature:
            kyc_requirement_set(feature=feature, required=feature in wanted, actor=request.user)
        services.bnpl_settings_changed(
            before=request._bnpl_before, after=self._snapshot(form.instance), actor=request.user
        )


@admin.register(BnplWhitelistEntry)
class BnplWhitelistAdmin(AuditedAdmin):
    list_display = ("user", "added_by", "added_at")
    search_fields = ("user__username", "user__email")
    autocomplete_fields = ("user",)
    fields = ("user",)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        obj.added_by, obj.added_at = request.user, clock.now()
        super().save_model(request, obj, form, change)


class BnplCustomerProfileForm(MoneyFormMixin, forms.ModelForm):
    """The override is typed in the units of the wallet BNPL currency, like the settings' cap."""

    money_fields = ("max_debt_override",)
    currency_field = None
    money_notes = {"max_debt_override": "; replaces the settings' max debt per user; blank: none"}

    class Meta:
        model = BnplCustomerProfile
        fields = ("customer", "auto_deduct", "max_debt_override")

    def form_currency(self, data=None) -> str:
        return bnpl_settings().currency


@admin.register(BnplCustomerProfile)
class BnplCustomerProfileAdmin(AuditedAdmin):
    form = BnplCustomerProfileForm
    list_display = ("customer", "auto_deduct", "max_debt_override_display")
    list_filter = ("auto_deduct",)
    search_fields = ("customer__user__email",)
    autocomplete_fields = ("customer",)

    def get_queryset(self, request):
        currency = BnplSettings.objects.filter(pk=1).values("currency")[:1]
        return super().get_queryset(request).annotate(bnpl_currency=Subquery(currency))

    @admin.display(description="Max debt override", ordering="max_debt_override")
    def max_debt_override_display(self, obj: BnplCustomerProfile):
        if obj.max_debt_override is None:
            return "—"
        return Money(obj.max_debt_override, obj.bnpl_currency or bnpl_settings().currency)


class OverdueFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", "Overdue"), ("no", "Not overdue")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(status=DebtStatus.OVERDUE)
        if self.value() == "no":
            return queryset.exclude(status=DebtStatus.OVERDUE)
        return queryset


class ExplainForm(forms.Form):
    customer = forms.ModelChoiceField(queryset=Customer.objects.select_related("user"))
    amount = forms.DecimalField(
        min_value=Decimal("0.01"), decimal_places=3, help_text="The cart total"
    )


@admin.register(WalletDebt)
class WalletDebtAdmin(ActionsOnlyAdmin):
    change_list_template = "admin/wallet/walletdebt/change_list.html"
    change_form_template = "admin/wallet/walletdebt/change_form.html"
    list_display = (
        "id",
        "customer",
        "principal_display",
        "due_today",
        "status",
        "resolution",
        "created_at",
        "due_date",
        "overdue_since",
    )
    list_filter = ("status", OverdueFilter, "resolution", "due_date", "created_at")
    search_fields = ("wallet__customer__user__email", "reference_id", "id")
    date_hierarchy = "created_at"
    list_select_related = ("wallet__customer__user",)
    actions = ["write_off"]

    @admin.display(description="Customer")
    def customer(self, obj: WalletDebt):
        return obj.wallet.customer

    @admin.display(description="Principal", ordering="principal")
    def principal_display(self, obj: WalletDebt) -> str:
        return str(Money(obj.principal, obj.wallet.currency))

    @admin.display(description="Owed today")
    def due_today(self, obj: WalletDebt) -> str:
        return str(selectors.debt_views([obj])[0].total_due)

    @admin.action(description="Write off selected debts…", permissions=["change"])
    def write_off(self, request: HttpRequest, queryset: QuerySet[WalletDebt], cancel_url="."):
        """Confirm, then write off each open debt selected (``services.debt_write_off``)."""
        debts = list(
            queryset.exclude(status=DebtStatus.REPAID).select_related("wallet__customer__user")
        )
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                "admin/wallet/walletdebt/write_off_confirm.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Write off debts?",
                    "debts": selectors.debt_views(debts),
                    "queryset": debts,
                    "opts": self.model._meta,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                    "cancel_url": cancel_url,
                },
            )
        note = request.POST.get("note", "").strip() or "Written off in the admin"
        done = 0
        for debt in debts:
            try:
                services.debt_write_off(debt_id=debt.pk, actor=request.user, note=note)
            except ApplicationError as exc:
                self.message_user(request, f"Debt #{debt.pk}: {exc.message}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"Wrote off {done} debt(s).", messages.SUCCESS)
        return None

    def write_off_view(self, request: HttpRequest, object_id: str):
        """The list action for this one debt, from its own page: same confirmation, same
        permission, same service."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        debt = self.get_object(request, object_id)
        if debt is None:
            raise Http404
        page = reverse("admin:wallet_walletdebt_change", args=[debt.pk])
        queryset = self.get_queryset(request).filter(pk=debt.pk)
        return self.write_off(request, queryset, cancel_url=page) or HttpResponseRedirect(page)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        debt = self.get_object(request, object_id)
        if debt is not None and debt.is_open and self.has_change_permission(request):
            extra_context = {
                **(extra_context or {}),
                "write_off_url": reverse("admin:wallet_walletdebt_write_off", args=[debt.pk]),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path(
                "explain/",
                self.admin_site.admin_view(self.explain_view),
                name="wallet_walletdebt_explain",
            ),
            path(
                "<path:object_id>/write-off/",
                self.admin_site.admin_view(self.write_off_view),
                name="wallet_walletdebt_write_off",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        conf = bnpl_settings()
        extra_context = extra_context or {}
        if conf.enabled:
            totals = selectors.debt_totals()
            extra_context["dashboard"] = {
                "outstanding": Money(totals["outstanding"], conf.currency),
                "overdue": Money(totals["overdue"], conf.currency),
                "customers": totals["customers"],
                "average_days_to_repay": selectors.average_days_to_repay(),
                "chart": _chart(selectors.debt_history(90), conf.currency),
            }
        return super().changelist_view(request, extra_context)

    def explain_view(self, request: HttpRequest):
        """Why was this customer not offered BNPL for this cart?"""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ExplainForm(request.GET or None)
        verdict = self._explain(form) if form.is_valid() else None
        return TemplateResponse(
            request,
            "admin/wallet/walletdebt/explain.html",
            {
                **self.admin_site.each_context(request),
                "title": "Why was BNPL not offered?",
                "form": form,
                "verdict": verdict,
                "opts": self.model._meta,
            },
        )

    @staticmethod
    def _explain(form: ExplainForm) -> dict | None:
        """The eligibility verdict for the form's customer and cart; ``None`` and a form
        error when the amount is not an amount of the BNPL currency."""
        customer = form.cleaned_data["customer"]
        conf = bnpl_settings()
        try:
            amount = Money.parse(form.cleaned_data["amount"], conf.currency)
        except MoneyError as exc:  # more decimals than the currency has, or too large
            form.add_error("amount", exc.message)
            return None
        wallet = next(
            (
                w
                for w in selectors.wallets_for_customer(customer=customer)
                if w.currency == conf.currency
            ),
            None,
        )
        balance = wallet.balance if wallet else Money.zero(conf.currency)
        shortfall = amount - balance if amount > balance else Money.zero(conf.currency)
        return {
            "result": bnpl_eligibility(customer=customer, cart_total=amount, shortfall=shortfall),
            "balance": balance,
            "shortfall": shortfall,
            "amount": amount,
        }


def _chart(history, currency: str) -> dict | None:
    """An inline SVG line chart of outstanding and overdue totals (no JavaScript)."""
    if not history:
        return None
    width, height, pad = 720, 200, 30
    peak = max(max(s.outstanding, s.overdue) for s in history) or 1
    step = (width - 2 * pad) / max(len(history) - 1, 1)

    def y(value: int) -> float:
        return height - pad - value / peak * (height - 2 * pad)

    def points(attr: str) -> str:
        return " ".join(
            f"{pad + i * step:.1f},{y(getattr(s, attr)):.1f}" for i, s in enumerate(history)
        )

    return {
        "width": width,
        "height": height,
        "outstanding": points("outstanding"),
        "overdue": points("overdue"),
        "first": history[0].business_date,
        "last": history[-1].business_date,
        "peak": Money(peak, currency),
        "pad": pad,
        "baseline": height - pad,
    }
