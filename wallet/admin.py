import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from core.errors import ApplicationError
from core.money import Money
from wallet import services
from wallet.models import TransactionKind, Wallet, WalletTransaction


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
        raw_amount = request.POST.get("amount")
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
