from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from core import clock
from core.admin import ActionsOnlyAdmin, AuditedAdmin, ReadOnlyAdmin
from core.errors import ApplicationError
from core.money import Money
from oms import disputes, services
from oms.models import (
    Channel,
    Dispute,
    DisputeStatus,
    Location,
    Order,
    OrderLine,
    StockItem,
    StockReservation,
)


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    fields = (
        "line_no",
        "sku",
        "name",
        "quantity",
        "unit_price",
        "tax",
        "total",
        "merchant_category",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class ReservationInline(admin.TabularInline):
    model = StockReservation
    extra = 0
    can_delete = False
    fields = ("line", "stock_item", "quantity", "status", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class DisputeInline(admin.TabularInline):
    model = Dispute
    extra = 0
    can_delete = False
    fields = (
        "id",
        "status",
        "reason",
        "amount_display",
        "provider",
        "provider_dispute_id",
        "opened_at",
        "opened_by",
        "opened_via",
        "closed_at",
        "closed_by",
        "closed_via",
        "close_note",
        "charged_back",
    )
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="Amount")
    def amount_display(self, obj: Dispute) -> str:
        return str(obj.amount_money)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class OrderActionForm(ActionForm):
    """Inputs of the order actions, next to the action menu."""

    reason = forms.CharField(required=False, max_length=255, help_text="Dispute: what about")
    amount = forms.DecimalField(
        required=False,
        min_value=0,
        decimal_places=3,
        help_text="Dispute: in the order's currency; empty for the whole order",
    )


@admin.register(Order)
class OrderAdmin(ActionsOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "customer",
        "channel",
        "external_reference",
        "status",
        "total_display",
        "refunded_display",
        "payment_method",
    )
    list_filter = ("status", "channel", "payment_method", "currency")
    search_fields = ("id", "external_reference", "customer__user__email")
    date_hierarchy = "created_at"
    list_select_related = ("customer__user", "channel")
    inlines = [OrderLineInline, ReservationInline, DisputeInline]
    action_form = OrderActionForm
    actions = ["fulfil_orders", "cancel_orders", "refund_orders", "open_disputes"]

    @admin.display(description="Total", ordering="total")
    def total_display(self, obj: Order) -> str:
        return str(obj.total_money)

    @admin.display(description="Refunded", ordering="refunded")
    def refunded_display(self, obj: Order) -> str:
        return str(obj.refunded_money) if obj.refunded else "—"

    def _run(self, request, queryset, verb: str, call) -> None:
        done = 0
        for order_id in queryset.values_list("id", flat=True):
            try:
                call(order_id)
            except ApplicationError as exc:
                self.message_user(request, f"Order #{order_id}: {exc.message}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"{verb} {done} order(s).", messages.SUCCESS)

    @admin.action(description="Mark selected orders fulfilled", permissions=["change"])
    def fulfil_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        self._run(
            request,
            queryset,
            "Fulfilled",
            lambda pk: services.order_fulfil(order_id=pk, actor=request.user),
        )

    @admin.action(
        description="Cancel selected orders (release stock, refund)", permissions=["change"]
    )
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        self._run(
            request,
            queryset,
            "Cancelled",
            lambda pk: services.order_cancel(
                order_id=pk, reason="Cancelled by staff", actor=request.user
            ),
        )

    @admin.action(
        description="Refund selected fulfilled orders in full (all lines returned)",
        permissions=["change"],
    )
    def refund_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        self._run(
            request,
            queryset,
            "Refunded",
            lambda pk: services.order_refund(
                order_id=pk, reason="Returned: refunded by staff", actor=request.user
            ),
        )

    @admin.action(
        description="Open a dispute (reason and amount above): a financed order's debits pause",
        permissions=["change"],
    )
    def open_disputes(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        form = OrderActionForm(request.POST)
        form.is_valid()
        reason, amount = form.cleaned_data.get("reason", ""), form.cleaned_data.get("amount")
        currencies = dict(queryset.values_list("id", "currency"))
        self._run(
            request,
            queryset,
            "Opened a dispute on",
            lambda pk: disputes.dispute_open(
                order_id=pk,
                reason=reason,
                amount=None if amount is None else Money.parse(str(amount), currencies[pk]),
                actor=request.user,
            ),
        )


@admin.register(Dispute)
class DisputeAdmin(ActionsOnlyAdmin):
    """Disputes of orders; staff close an open one with its outcome (audited).

    Closing a provider's dispute resumes the plan's debits now; the provider's final word
    still counts: if it says lost later, the dispute turns lost and the chargeback is booked.
    """

    list_display = (
        "id",
        "order",
        "status",
        "reason",
        "amount_display",
        "provider",
        "provider_dispute_id",
        "opened_at",
        "closed_at",
        "closed_via",
        "charged_back",
    )
    list_filter = ("status", "provider", "currency")
    search_fields = ("=id", "=order__id", "provider_dispute_id")
    list_select_related = ("order",)
    actions = ["close_won", "close_lost", "close_withdrawn"]
    action_form = OrderActionForm

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj: Dispute) -> str:
        return str(obj.amount_money)

    def _close(self, request, queryset, outcome: str) -> None:
        note = request.POST.get("reason", "")
        done = 0
        for dispute_id, provider in queryset.values_list("id", "provider"):
            try:
                disputes.dispute_close(
                    dispute_id=dispute_id, outcome=outcome, note=note, actor=request.user
                )
            except ApplicationError as exc:
                self.message_user(request, f"Dispute #{dispute_id}: {exc.message}", messages.ERROR)
            else:
                done += 1
                if provider:
                    self.message_user(
                        request,
                        f"Dispute #{dispute_id} is {provider}'s: if {provider} decides it "
                        "lost later, it turns lost and the chargeback is booked then.",
                        messages.WARNING,
                    )
        if done:
            self.message_user(request, f"Closed {done} dispute(s) as {outcome}.", messages.SUCCESS)

    @admin.action(description="Close: won (note in the reason field)", permissions=["change"])
    def close_won(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> None:
        self._close(request, queryset, DisputeStatus.WON)

    @admin.action(description="Close: lost (a chargeback)", permissions=["change"])
    def close_lost(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> None:
        self._close(request, queryset, DisputeStatus.LOST)

    @admin.action(description="Close: withdrawn", permissions=["change"])
    def close_withdrawn(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> None:
        self._close(request, queryset, DisputeStatus.CLOSED)


@admin.register(Channel)
class ChannelAdmin(AuditedAdmin):
    list_display = ("code", "name", "kind", "active", "api_key_prefix", "created_at")
    list_filter = ("kind", "active")
    fields = ("code", "name", "kind", "active", "api_key_prefix")
    readonly_fields = ("api_key_prefix",)
    actions = ["rotate_keys"]

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_at = clock.now()
        super().save_model(request, obj, form, change)

    @admin.action(description="Issue a new API key (shown once)", permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        for channel in queryset:
            key = services.channel_rotate_key(channel_id=channel.pk, actor=request.user)
            self.message_user(
                request,
                f"{channel.code}: new API key {key} — copy it now, it is not stored.",
                messages.WARNING,
            )


@admin.register(Location)
class LocationAdmin(AuditedAdmin):
    list_display = ("code", "name", "kind", "priority", "active")
    list_filter = ("kind", "active")


class StockItemForm(forms.ModelForm):
    class Meta:
        model = StockItem
        fields = ("sku", "location", "on_hand")

    def clean_on_hand(self) -> int:
        on_hand = self.cleaned_data["on_hand"]
        if self.instance.pk:
            reserved = StockItem.objects.values_list("reserved", flat=True).get(pk=self.instance.pk)
            if on_hand < reserved:
                raise forms.ValidationError(
                    f"{reserved} units are reserved for open orders; on hand cannot be less."
                )
        return on_hand


@admin.register(StockItem)
class StockItemAdmin(AuditedAdmin):
    form = StockItemForm
    list_display = ("sku", "location", "on_hand", "reserved", "available")
    list_filter = ("location",)
    search_fields = ("sku",)
    list_select_related = ("location",)
    fields = ("sku", "location", "on_hand", "reserved")
    readonly_fields = ("reserved",)

    def get_readonly_fields(self, request, obj=None):
        return ("sku", "location", "reserved") if obj else ("reserved",)

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        try:
            services.stock_set_on_hand(
                stock_item_id=obj.pk, on_hand=obj.on_hand, actor=request.user
            )
        except ApplicationError as exc:  # an order reserved units since the form was checked
            self.message_user(request, exc.message, messages.ERROR)


@admin.register(StockReservation)
class StockReservationAdmin(ReadOnlyAdmin):
    list_display = ("id", "order", "stock_item", "quantity", "status", "created_at")
    list_filter = ("status",)
