"""Stock reservations: checkout reserves what it sells, cancellation releases it.

Every function runs in its caller's transaction and touches all lines of an order in a
constant number of statements, so a 50-line order costs what a 1-line order costs. Stock
rows are locked in ascending id order, which is what keeps concurrent checkouts of the
same SKUs from deadlocking or overselling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from core import clock
from oms.errors import OutOfStock
from oms.models import Order, OrderLine, ReservationStatus, StockItem, StockReservation


@dataclass(frozen=True)
class Allocation:
    line_index: int
    stock_item: StockItem
    quantity: int


def stock_allocate(*, demands: Sequence[tuple[str, int]]) -> list[Allocation]:
    """Lock the SKUs' stock and decide where each line's units come from.

    ``demands`` are (sku, quantity) per line. Locations are drawn in priority order; a line
    may take units from several. Raises ``oms.out_of_stock`` naming every short line.
    """
    items = list(
        StockItem.objects.select_for_update(no_key=True, of=("self",))
        .select_related("location")
        .filter(sku__in={sku for sku, _ in demands}, location__active=True)
        .order_by("pk")
    )
    by_sku: dict[str, list[StockItem]] = defaultdict(list)
    for item in sorted(items, key=lambda i: (i.location.priority, i.location.code)):
        by_sku[item.sku].append(item)
    left = {item.pk: item.available for item in items}

    allocations: list[Allocation] = []
    short: dict[str, list[str]] = {}
    for index, (sku, quantity) in enumerate(demands):
        need = quantity
        for item in by_sku.get(sku, []):
            take = min(need, left[item.pk])
            if take > 0:
                allocations.append(Allocation(index, item, take))
                left[item.pk] -= take
                need -= take
            if need == 0:
                break
        if need:
            available = quantity - need
            short[f"lines.{index}.quantity"] = [
                f"Only {available} of {sku} available; {quantity} requested."
            ]
    if short:
        raise OutOfStock(fields=short)
    return allocations


def stock_reserve(
    *, order: Order, lines: Sequence[OrderLine], allocations: Sequence[Allocation]
) -> list[StockReservation]:
    """Record the allocations as reservations and raise the stock rows' ``reserved``."""
    now = clock.now()
    reserved: dict[int, int] = defaultdict(int)
    items: dict[int, StockItem] = {}
    for allocation in allocations:
        reserved[allocation.stock_item.pk] += allocation.quantity
        items[allocation.stock_item.pk] = allocation.stock_item
    for pk, quantity in reserved.items():
        items[pk].reserved += quantity
    StockItem.objects.bulk_update(list(items.values()), ["reserved"])
    return StockReservation.objects.bulk_create(
        StockReservation(
            order=order,
            line=lines[a.line_index],
            stock_item=a.stock_item,
            quantity=a.quantity,
            created_at=now,
        )
        for a in allocations
    )


def _settle(*, order: Order, to: ReservationStatus, consume: bool) -> None:
    reservations = list(
        StockReservation.objects.filter(order=order, status=ReservationStatus.ACTIVE)
        .order_by("stock_item_id")
        .values_list("stock_item_id", "quantity")
    )
    per_item: dict[int, int] = defaultdict(int)
    for item_id, quantity in reservations:
        per_item[item_id] += quantity
    items = list(
        StockItem.objects.select_for_update(no_key=True).filter(pk__in=per_item).order_by("pk")
    )
    for item in items:
        item.reserved -= per_item[item.pk]
        if consume:
            item.on_hand -= per_item[item.pk]
    StockItem.objects.bulk_update(items, ["reserved", "on_hand"])
    StockReservation.objects.filter(order=order, status=ReservationStatus.ACTIVE).update(status=to)


def stock_release(*, order: Order) -> None:
    """Give an order's active reservations back to stock."""
    _settle(order=order, to=ReservationStatus.RELEASED, consume=False)


def stock_consume(*, order: Order) -> None:
    """The goods left: take the reserved units off the shelf for good."""
    _settle(order=order, to=ReservationStatus.CONSUMED, consume=True)


def stock_adjust(*, stock_item_id: int, on_hand: int) -> tuple[StockItem, int]:
    """Set the counted units on hand; never below what is reserved.

    Returns the row and the units on hand before, both read under the row lock.
    """
    item = StockItem.objects.select_for_update(no_key=True).get(pk=stock_item_id)
    before = item.on_hand
    if on_hand < item.reserved:
        raise OutOfStock(
            f"{item.reserved} units are reserved; on hand cannot be {on_hand}.",
            code="oms.stock_below_reserved",
            fields={"on_hand": [f"At least {item.reserved}."]},
        )
    StockItem.objects.filter(pk=item.pk).update(on_hand=on_hand)
    item.on_hand = on_hand
    return item, before
