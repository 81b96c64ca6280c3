from django.conf import settings
from django.db import models
from django_fsm import RETURN_VALUE, FSMField, transition

from core.money import Money


class ChannelKind(models.TextChoices):
    WEB = "web", "Web shop"
    APP = "app", "Mobile app"
    MARKETPLACE = "marketplace", "Marketplace"
    POS = "pos", "Point of sale"
    SUBSCRIPTIONS = "subscriptions", "Subscriptions"


class Channel(models.Model):
    """A sales channel. Its API key lets its servers act on a named customer's behalf."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=ChannelKind.choices)
    # The key is shown once; only its public prefix and its sha256 are stored.
    api_key_prefix = models.CharField(max_length=16, unique=True, null=True, blank=True)
    api_key_hash = models.CharField(max_length=64, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name

    @property
    def idempotency_scope(self) -> str:
        return f"channel:{self.pk}"

    # Its key acts for a named customer: it may place orders, never move wallet money
    # (core.api.permissions.IsCustomerInPerson).
    acts_for_customer = True


class LocationKind(models.TextChoices):
    WAREHOUSE = "warehouse", "Warehouse"
    STORE = "store", "Store"


class Location(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=LocationKind.choices)
    # Lower ships first when several locations hold a SKU.
    priority = models.PositiveIntegerField(default=100)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "code"]

    def __str__(self) -> str:
        return self.name


class StockItem(models.Model):
    """Units of one SKU at one location; ``reserved`` of them are promised to open orders."""

    sku = models.CharField(max_length=64)
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="stock")
    on_hand = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["sku", "location__priority"]
        constraints = [
            models.UniqueConstraint(
                fields=["sku", "location"], name="stock_one_row_per_sku_location"
            ),
            models.CheckConstraint(
                condition=models.Q(reserved__lte=models.F("on_hand")),
                name="stock_reserved_within_on_hand",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} @ {self.location.code}: {self.available} available"

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class PaymentMethod(models.TextChoices):
    WALLET = "wallet", "Store wallet (a short balance may use wallet BNPL)"
    WALLET_CARD = "wallet_card", "Wallet balance first, the rest authorized on a card"
    INSTALLMENTS = "installments", "Installment plan: a credit decision, then scheduled debits"
    KLARNA = "klarna", "Klarna: authorized at checkout, captured at fulfilment"
    AFTERPAY = "afterpay", "Afterpay / Clearpay: authorized at checkout, captured at fulfilment"

    @classmethod
    def held(cls) -> tuple[str, ...]:
        """The methods whose orders wait on hold for a credit or provider decision."""
        return (cls.INSTALLMENTS, cls.KLARNA, cls.AFTERPAY)


class OrderStatus(models.TextChoices):
    NEW = "new", "Placed, not yet paid"
    ON_HOLD = "on_hold", "Waiting for a credit decision; stock reserved, nothing captured"
    CONFIRMED = "confirmed", "Paid; stock reserved; awaiting fulfilment"
    FULFILLED = "fulfilled", "Shipped or handed over; stock consumed"
    CANCELLED = "cancelled", "Cancelled; stock released, payment returned"


class Order(models.Model):
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="orders"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="orders")
    # The channel's own order number; unique per channel.
    external_reference = models.CharField(max_length=100, null=True, blank=True)
    status = FSMField(
        default=OrderStatus.NEW, choices=OrderStatus.choices, protected=True, db_index=True
    )
    currency = models.CharField(max_length=3)
    # Minor units: sum of the lines' totals.
    total = models.BigIntegerField()
    payment_method = models.CharField(max_length=20, choices=PaymentMethod.choices)
    # A subscription's renewal points at the order it renews.
    renewal_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="renewals"
    )
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    cancel_reason = models.CharField(max_length=255, blank=True)
    # Minor units returned to the customer for returned lines (see OrderLine.refunded_quantity).
    refunded = models.BigIntegerField(default=0)
    # With installments: the credit decision behind the order (its plan, once approved).
    credit_application = models.OneToOneField(
        "bnpl.CreditApplication",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    created_at = models.DateTimeField(db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "external_reference"],
                condition=models.Q(external_reference__isnull=False),
                name="order_external_reference_unique_per_channel",
            ),
            models.CheckConstraint(condition=models.Q(total__gt=0), name="order_total_positive"),
            models.CheckConstraint(
                condition=models.Q(refunded__gte=0, refunded__lte=models.F("total")),
                name="order_refunded_within_total",
            ),
        ]
        indexes = [models.Index(fields=["customer", "-created_at"])]

    def __str__(self) -> str:
        return f"Order #{self.pk}"

    @property
    def total_money(self) -> Money:
        return Money(self.total, self.currency)

    @property
    def refunded_money(self) -> Money:
        return Money(self.refunded, self.currency)

    # Transitions change this row only; services lock, post, audit and release stock.
    @transition(field=status, source=OrderStatus.NEW, target=OrderStatus.CONFIRMED)
    def confirm(self, *, at) -> None:
        self.confirmed_at = at

    @transition(field=status, source=OrderStatus.NEW, target=OrderStatus.ON_HOLD)
    def hold(self) -> None:
        pass

    @transition(field=status, source=OrderStatus.ON_HOLD, target=OrderStatus.CONFIRMED)
    def release_hold(self, *, at) -> None:
        self.confirmed_at = at

    @transition(field=status, source=OrderStatus.CONFIRMED, target=OrderStatus.FULFILLED)
    def fulfil(self, *, at) -> None:
        self.fulfilled_at = at

    @transition(
        field=status,
        source=[OrderStatus.NEW, OrderStatus.ON_HOLD, OrderStatus.CONFIRMED],
        target=OrderStatus.CANCELLED,
    )
    def cancel(self, *, at, reason: str) -> None:
        self.cancelled_at = at
        self.cancel_reason = reason[:255]


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="lines")
    line_no = models.PositiveSmallIntegerField()
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField()
    # Minor units, in the order's currency.
    unit_price = models.BigIntegerField()
    tax = models.BigIntegerField(default=0)
    total = models.BigIntegerField()
    merchant_category = models.CharField(max_length=60, blank=True)
    # Units returned and refunded; never more than were bought.
    refunded_quantity = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "line_no"]
        constraints = [
            models.UniqueConstraint(fields=["order", "line_no"], name="order_line_unique_no"),
            models.CheckConstraint(
                condition=models.Q(quantity__gt=0), name="order_line_quantity_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(unit_price__gt=0), name="order_line_price_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(tax__gte=0), name="order_line_tax_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    total=models.F("quantity") * models.F("unit_price") + models.F("tax")
                ),
                name="order_line_total_consistent",
            ),
            models.CheckConstraint(
                condition=models.Q(refunded_quantity__lte=models.F("quantity")),
                name="order_line_refunded_within_quantity",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.sku}"

    @property
    def unit_price_money(self) -> Money:
        return Money(self.unit_price, self.order.currency)

    @property
    def tax_money(self) -> Money:
        return Money(self.tax, self.order.currency)

    @property
    def total_money(self) -> Money:
        return Money(self.total, self.order.currency)


class ReservationStatus(models.TextChoices):
    ACTIVE = "active", "Holding stock for an open order"
    RELEASED = "released", "Given back to stock (order cancelled)"
    CONSUMED = "consumed", "Left the building (order fulfilled)"


class StockReservation(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="reservations")
    line = models.ForeignKey(OrderLine, on_delete=models.PROTECT, related_name="reservations")
    stock_item = models.ForeignKey(StockItem, on_delete=models.PROTECT, related_name="reservations")
    quantity = models.PositiveIntegerField()
    status = models.CharField(
        max_length=10, choices=ReservationStatus.choices, default=ReservationStatus.ACTIVE
    )
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(quantity__gt=0), name="reservation_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.stock_item_id} for order {self.order_id} ({self.status})"


class DisputeStatus(models.TextChoices):
    OPEN = "open", "Opened: a financed order's debits wait until it closes"
    WON = "won", "Closed in the merchant's favour"
    LOST = "lost", "Closed in the customer's favour (a chargeback)"
    CLOSED = "closed", "Withdrawn or closed without a decision"


class Dispute(models.Model):
    """A customer's dispute of an order, opened by a provider's notification or by staff.

    While any dispute of an order is open, the order's installment plan (if any) takes no
    debits (``oms.disputes``). A provider's dispute is one row per (provider, its id).
    """

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="disputes")
    # The disputed payment, when a provider reported it; none for one staff opened.
    payment = models.ForeignKey(
        "payments.PaymentTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # Who reported it: a payments Provider value, or "" when staff opened it.
    provider = models.CharField(max_length=20, blank=True)
    provider_dispute_id = models.CharField(max_length=128, blank=True)
    reason = models.CharField(max_length=255)
    # Minor units disputed, in the order's currency.
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = FSMField(default=DisputeStatus.OPEN, choices=DisputeStatus.choices, protected=True)
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # What opened or closed it when no person did: "webhook:<provider>:<event id>".
    opened_via = models.CharField(max_length=200, blank=True)
    closed_via = models.CharField(max_length=200, blank=True)
    close_note = models.CharField(max_length=255, blank=True)
    # Minor units the processor took back when a card sale's dispute was lost, as booked in
    # the ledger (merchant → gateway clearing); never above what the payment kept.
    charged_back = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["opened_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_dispute_id"],
                condition=~models.Q(provider_dispute_id=""),
                name="dispute_one_per_provider_id",
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="dispute_amount_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(status=DisputeStatus.OPEN, closed_at__isnull=True)
                | (~models.Q(status=DisputeStatus.OPEN) & models.Q(closed_at__isnull=False)),
                name="dispute_closed_at_iff_closed",
            ),
            models.CheckConstraint(
                condition=models.Q(charged_back__gte=0, charged_back__lte=models.F("amount")),
                name="dispute_charged_back_within_amount",
            ),
        ]
        indexes = [models.Index(fields=["order", "status"], name="dispute_order_status")]

    def __str__(self) -> str:
        return f"Dispute #{self.pk} on order {self.order_id} ({self.status})"

    @property
    def amount_money(self) -> Money:
        return Money(self.amount, self.currency)

    @transition(
        field=status,
        source=DisputeStatus.OPEN,
        target=RETURN_VALUE(DisputeStatus.WON, DisputeStatus.LOST, DisputeStatus.CLOSED),
    )
    def close(self, *, outcome: str, at) -> str:
        self.closed_at = at
        return outcome

    @transition(
        field=status,
        source=(DisputeStatus.WON, DisputeStatus.CLOSED),
        target=DisputeStatus.LOST,
    )
    def provider_lost(self) -> None:
        """The provider's final word on a dispute staff closed otherwise."""
