"""Installment plan test data, built through the real services."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from celery import current_app
from django.db import transaction
from django.test import TestCase

from bnpl.models import ApplicationStatus, CreditApplication, Decider, Plan, PlanProduct
from bnpl.services import plan_create
from core import clock
from core.money import Money
from customers.models import Customer
from payments.models import SavedPaymentMethod
from tests.factories import saved_card

_seq = itertools.count(1)


def make_product(**overrides: Any) -> PlanProduct:
    """A 3-month 0% product by default; ``overrides`` sets any field."""
    now = clock.now()
    fields: dict[str, Any] = {
        "code": f"plan-{next(_seq)}",
        "name": "Pay in 3",
        "currency": "EUR",
        "installment_count": 3,
        "frequency": "monthly",
        "min_amount": 1_000,
        "max_amount": 1_000_000,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    fields.setdefault("name", fields["code"])
    return PlanProduct.objects.create(**fields)


def make_application(
    *,
    customer: Customer,
    product: PlanProduct,
    amount: str = "1000.00",
    payment_method: str = "pm_card_visa",
    reference_id: str | None = None,
    status: str = ApplicationStatus.PENDING,
) -> CreditApplication:
    now = clock.now()
    money = Money.parse(amount, product.currency)
    return CreditApplication.objects.create(
        customer=customer,
        product=product,
        reference_type="test.order",
        reference_id=reference_id or str(next(_seq)),
        currency=money.currency,
        amount=money.minor,
        terms=product.terms().to_json(),
        payment_method=payment_method,
        status=status,
        created_at=now,
        expires_at=now + timedelta(hours=24),
    )


def make_plan(
    *,
    customer: Customer,
    product: PlanProduct | None = None,
    amount: str = "1000.00",
    start_date: date | None = None,
    payment_method: str | None = None,
    **product_overrides: Any,
) -> Plan:
    """An approved application and its plan, created by ``bnpl.services.plan_create``, on
    one of the customer's saved cards: ``payment_method`` is saved for the customer here
    when nobody has it (another customer's token fails, as in ``plan_create``). By default
    ``pm_card_visa``, or a token of the customer's own when another customer has that."""
    if payment_method is None:
        payment_method = "pm_card_visa"
        if (
            SavedPaymentMethod.objects.filter(token=payment_method)
            .exclude(customer=customer)
            .exists()
        ):
            payment_method = f"pm_card_visa_{customer.pk}"
    if not SavedPaymentMethod.objects.filter(token=payment_method).exists():
        saved_card(customer, payment_method)
    product = product or make_product(**product_overrides)
    application = make_application(
        customer=customer, product=product, amount=amount, payment_method=payment_method
    )
    with transaction.atomic():
        application.approve(at=clock.now(), decided_by=Decider.INTERNAL)
        application.save(update_fields=["status", "decided_at", "decided_by"])
        plan = plan_create(application=application, start_date=start_date or clock.business_date())
    return plan


@contextlib.contextmanager
def after_commit_tasks(*, run: bool = True) -> Iterator[None]:
    """Inside a test's transaction: the after-commit hooks registered in the block run as
    it ends (``run=False``: they are lost, as in a crash), their Celery tasks in-process."""
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    try:
        with TestCase.captureOnCommitCallbacks(execute=run):
            yield
    finally:
        current_app.conf.task_always_eager = previous
