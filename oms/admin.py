from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core import clock
from core.admin import ActionsOnlyAdmin, AuditedAdmin, ReadOnlyAdmin
from core.errors import ApplicationError
from oms import services
from oms.models import Channel, Location, Order, OrderLine, StockItem, StockReservation


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
    inlines = [OrderLineInline, ReservationInline]
    actions = ["fulfil_orders", "cancel_orders", "refund_orders"]

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
