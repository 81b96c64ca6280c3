from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.utils.html import format_html

from core import clock
from core.admin import ActionsOnlyAdmin, AuditedAdmin, ReadOnlyAdmin
from core.forms import MoneyFormMixin
from core.money import Money
from payments import crypto, services
from payments.models import (
    PartnerApplication,
    PaymentEvent,
    PaymentTransaction,
    ProviderAccount,
    SavedPaymentMethod,
    WebhookEvent,
)
from payments.selectors import payment_amounts, webhook_url


class ProviderAccountForm(MoneyFormMixin, forms.ModelForm):
    """Credentials are write-only: blank keeps what is stored; nothing is ever shown. The
    order limits are typed in the account's currency."""

    money_fields = ("min_order", "max_order")
    money_notes = {
        "min_order": "; smaller orders are not offered this provider; blank: no minimum",
        "max_order": "; larger orders are not offered this provider; blank: no maximum",
    }

    credential_id = forms.CharField(
        required=False,
        label="API username / merchant id",
        help_text="Leave blank to keep the stored one.",
    )
    credential_secret = forms.CharField(
        required=False,
        label="API password / secret key",
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave blank to keep the stored one. Stored encrypted.",
    )

    base_url = forms.URLField(
        assume_scheme="https", help_text="The provider's API root (or the payment sandbox)"
    )

    class Meta:
        model = ProviderAccount
        fields = (
            "provider",
            "enabled",
            "mode",
            "region",
            "base_url",
            "currency",
            "min_order",
            "max_order",
            "merchant_categories",
            "rotation_overlap_hours",
        )

    def save(self, commit: bool = True):
        account = super().save(commit=False)
        stored = crypto.decrypt(account.credentials_encrypted) or {}
        for field, key in (("credential_id", "id"), ("credential_secret", "secret")):
            if self.cleaned_data.get(field):
                stored[key] = self.cleaned_data[field]
        account.credentials_encrypted = crypto.encrypt(stored)
        now = clock.now()
        account.created_at = account.created_at or now
        account.updated_at = now
        if commit:
            account.save()
        return account


@admin.register(ProviderAccount)
class ProviderAccountAdmin(AuditedAdmin):
    form = ProviderAccountForm
    list_display = (
        "provider",
        "enabled",
        "mode",
        "region",
        "base_url",
        "health_ok",
        "health_checked_at",
        "webhook_url",
    )
    readonly_fields = (
        "stored_credentials",
        "webhook_secret",
        "webhook_url",
        "previous_secret_valid_until",
        "health_ok",
        "health_checked_at",
        "health_detail",
    )
    fieldsets = [
        (None, {"fields": ("provider", "enabled", "mode", "region", "base_url")}),
        ("Health", {"fields": ("health_ok", "health_checked_at", "health_detail")}),
        ("Credentials", {"fields": ("stored_credentials", "credential_id", "credential_secret")}),
        (
            "Webhooks",
            {
                "fields": (
                    "webhook_url",
                    "webhook_secret",
                    "rotation_overlap_hours",
                    "previous_secret_valid_until",
                )
            },
        ),
        ("Limits", {"fields": ("currency", "min_order", "max_order", "merchant_categories")}),
    ]
    actions = ["rotate_webhook_secret"]

    @admin.display(description="Stored credentials")
    def stored_credentials(self, obj: ProviderAccount) -> str:
        stored = crypto.decrypt(obj.credentials_encrypted) or {}
        return f"id {crypto.mask(stored.get('id'))}, secret {crypto.mask(stored.get('secret'))}"

    @admin.display(description="Webhook signing secret")
    def webhook_secret(self, obj: ProviderAccount) -> str:
        return crypto.mask(crypto.decrypt(obj.webhook_secret_encrypted))

    @admin.display(description="Webhook URL to register with the provider")
    def webhook_url(self, obj: ProviderAccount) -> str:
        if obj.pk is None or not obj.provider:  # the add form: no provider chosen yet
            return "—"
        return format_html("<code>{}</code>", webhook_url(obj.provider))

    @admin.action(description="Rotate the webhook secret (shown once)", permissions=["change"])
    def rotate_webhook_secret(self, request, queryset: QuerySet[ProviderAccount]):
        # Shown on this response only: a message could sit in a (signed, not encrypted)
        # cookie.
        rotated = [
            (
                account,
                services.provider_webhook_secret_rotate(account_id=account.pk, actor=request.user),
            )
            for account in queryset
        ]
        return TemplateResponse(
            request,
            "admin/payments/rotated_secrets.html",
            {
                **self.admin_site.each_context(request),
                "title": "New webhook secrets",
                "rotated": rotated,
                "opts": self.model._meta,
            },
        )


class PaymentEventInline(admin.TabularInline):
    model = PaymentEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "outcome", "amount", "currency", "source", "idempotency_key")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PaymentTransaction)
class PaymentTransactionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "reference_type",
        "reference_id",
        "provider_reference",
        "amount",
        "currency",
        "status",
        "flagged",
        "created_at",
    )
    list_filter = ("account", "flagged", "currency")
    search_fields = ("reference_id", "provider_reference")
    readonly_fields = ("amounts",)
    inlines = [PaymentEventInline]

    @admin.display(description="Status")
    def status(self, obj: PaymentTransaction) -> str:
        return payment_amounts(obj).status

    @admin.display(description="Authorized / captured / refunded / cancelled")
    def amounts(self, obj: PaymentTransaction) -> str:
        a = payment_amounts(obj)
        return f"{a.authorized} / {a.captured} / {a.refunded} / {a.cancelled}"


@admin.register(PartnerApplication)
class PartnerApplicationAdmin(ReadOnlyAdmin):
    """Applications sent to a lending partner and its decisions, as recorded."""

    list_display = (
        "id",
        "account",
        "reference_type",
        "reference_id",
        "partner_reference",
        "status",
        "amount_display",
        "flagged",
        "funded_without_plan",
        "cancel_state",
        "created_at",
        "decided_at",
    )
    list_filter = ("status", "flagged", "funded_without_plan", "cancel_state", "account")
    search_fields = ("reference_id", "partner_reference", "idempotency_key")
    date_hierarchy = "created_at"
    list_select_related = ("account",)

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj: PartnerApplication) -> str:
        return str(Money(obj.amount, obj.currency))


@admin.register(SavedPaymentMethod)
class SavedPaymentMethodAdmin(ReadOnlyAdmin):
    """Customers' saved cards as the processor tokenized them (no card number exists here);
    removed ones stay for the history of the plans that used them."""

    list_display = (
        "id",
        "customer",
        "processor",
        "token",
        "brand",
        "last4",
        "expiry",
        "created_at",
        "removed_at",
    )
    list_filter = ("processor", "brand", ("removed_at", admin.EmptyFieldListFilter))
    search_fields = ("token", "last4", "customer__user__email", "fingerprint")
    date_hierarchy = "created_at"
    list_select_related = ("customer__user",)
    raw_id_fields = ("customer",)

    @admin.display(description="Expires")
    def expiry(self, obj: SavedPaymentMethod) -> str:
        return f"{obj.exp_month:02d}/{obj.exp_year}" if obj.exp_month and obj.exp_year else ""


@admin.register(WebhookEvent)
class WebhookEventAdmin(ActionsOnlyAdmin):
    list_display = (
        "received_at",
        "provider",
        "event_type",
        "event_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
    )
    list_filter = (
        "provider",
        "status",
        "event_type",
        ("next_attempt_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("event_id",)
    actions = ["process_again"]

    @admin.action(description="Process selected events again", permissions=["change"])
    def process_again(self, request, queryset: QuerySet[WebhookEvent]) -> None:
        from payments.tasks import process_webhook_event

        # Called in process, the way the task would run it (unsigned ones read back).
        results = [process_webhook_event(pk) for pk in queryset.values_list("pk", flat=True)]
        self.message_user(request, f"Processed {results.count('processed')} of {len(results)}.")
