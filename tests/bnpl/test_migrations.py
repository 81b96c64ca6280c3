"""bnpl data migrations, run forward and back against stored plans."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from bnpl.models import Plan
from tests.bnpl.factories import make_plan, make_product
from tests.factories import make_customer

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())


@pytest.fixture
def latest_schema_after():
    yield
    migrate()


def checkout_covers_the_amount() -> Plan:
    """8.00 in 2, the first at checkout with a 4.00 fee: the checkout pays 8.00."""
    product = make_product(
        code="fee-400",
        installment_count=2,
        down_payment="first_installment",
        origination_fee_flat=400,
        min_amount=100,
    )
    return make_plan(
        customer=make_customer(), product=product, amount="8.00", start_date=date(2026, 1, 10)
    )


def test_0005_says_an_old_0_with_a_cost_had_no_finite_rate(latest_schema_after):
    plan = checkout_covers_the_amount()
    Plan.objects.filter(pk=plan.pk).update(apr=0, apr_status="rate")  # as 0004 stored it
    migrate(("bnpl", "0004_updates_in_place"))
    migrate(("bnpl", "0005_plan_apr_status"))

    plan = Plan.objects.get(pk=plan.pk)
    assert (plan.apr, plan.apr_status) == (None, "no_finite_rate")


def above_the_ceiling() -> Plan:
    """1.00 over 4 weeks with a 5.00 fee: a rate beyond 9,999.99 % a year."""
    product = make_product(
        installment_count=4, frequency="weekly", origination_fee_flat=500, min_amount=100
    )
    return make_plan(
        customer=make_customer(), product=product, amount="1.00", start_date=date(2026, 1, 10)
    )


def stored_apr(plan: Plan) -> Decimal:
    with connection.cursor() as cursor:
        cursor.execute("SELECT apr FROM bnpl_plan WHERE id = %s", [plan.pk])
        value = cursor.fetchone()[0]
    return Decimal(str(value))  # SQLite answers a float, PostgreSQL a Decimal


def test_0005_reverses_to_what_0004_showed_for_plans_without_a_rate(latest_schema_after):
    no_rate, above = checkout_covers_the_amount(), above_the_ceiling()
    assert (no_rate.apr, no_rate.apr_status) == (None, "no_finite_rate")
    assert (above.apr, above.apr_status) == (None, "above_ceiling")

    migrate(("bnpl", "0004_updates_in_place"))
    assert (stored_apr(no_rate), stored_apr(above)) == (Decimal(0), Decimal("9999.99"))

    migrate(("bnpl", "0005_plan_apr_status"))
    assert [
        Plan.objects.values_list("apr", "apr_status").get(pk=p.pk) for p in (no_rate, above)
    ] == [
        (None, "no_finite_rate"),
        (None, "above_ceiling"),
    ]
