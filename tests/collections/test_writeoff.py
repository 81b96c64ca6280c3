import pytest
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse

from bnpl.errors import PlanNotActive, PlanNotWrittenOff, RecoveryExceedsWriteOff
from bnpl.models import (
    BorrowerProfile,
    DebitRequestStatus,
    InstallmentStatus,
    PlanRecovery,
    PlanStatus,
)
from bnpl.services import installment_apply_payment, locked_plan_installment
from bnpl.writeoff import plan_recovery_record, plan_write_off
from core.models import AuditEntry
from core.money import Money
from ledger.models import Account, JournalEntry
from tests.collections.delinquency_helpers import (
    fresh,
    installments,
    pay_cash,
    plan_from,
    run_delinquency,
)
from tests.factories import make_customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(web_channel):
    return make_customer()


def balances(customer) -> dict[str, int]:
    codes = {
        "receivable": f"installments:{customer.pk}:EUR",
        "write_off": "write_off_expense:EUR",
        "cash": "cash_clearing:EUR",
        "fee_income": "fee_income:EUR",
    }
    found = dict(Account.objects.filter(code__in=codes.values()).values_list("code", "balance"))
    return {name: found.get(code, 0) for name, code in codes.items()}


@pytest.fixture
def late_plan(customer):
    """900.00 in 3 installments: the first paid at the cash desk; on 15 April the second is
    36 days late and the third 5 days late, each with a 15.00 late fee."""
    plan = plan_from(customer, late_fee_amount=1500, late_fee_grace_days=0)
    pay_cash(installments(plan)[0])
    run_delinquency("2026-04-15")  # installment 2: 36 days late, installment 3: 5 days
    return fresh(plan)


def test_write_off_moves_the_remaining_principal_to_the_expense(customer, late_plan, admin_user):
    assert balances(customer)["receivable"] == 60000
    assert [i.late_fee for i in installments(late_plan)] == [0, 1500, 1500]

    plan = plan_write_off(plan_id=late_plan.pk, actor=admin_user, note="uncollectable")

    assert plan.status == PlanStatus.WRITTEN_OFF
    assert (plan.written_off_amount, plan.recovered_amount) == (60000, 0)
    # Only principal was ever booked: the late fees are simply not collected (cash basis).
    assert balances(customer) == {
        "receivable": 0,
        "write_off": 60000,
        "cash": 30000,
        "fee_income": 0,
    }
    assert [i.status for i in installments(plan)] == [
        InstallmentStatus.PAID,
        InstallmentStatus.WRITTEN_OFF,
        InstallmentStatus.WRITTEN_OFF,
    ]
    assert [i.debit_request.status for i in installments(plan)] == [
        DebitRequestStatus.SETTLED,
        DebitRequestStatus.CANCELLED,
        DebitRequestStatus.CANCELLED,
    ]
    audit = AuditEntry.objects.get(action="bnpl.plan_write_off")
    assert (audit.actor, audit.target_id, audit.note) == (admin_user, str(plan.pk), "uncollectable")
    assert audit.changes["written_off"] == "600.00 EUR"
    assert audit.changes["late_fees"] == "30.00 EUR"
    assert audit.changes["installments"] == [2, 3]
    entry = JournalEntry.objects.get(kind="bnpl.write_off")
    assert (entry.reference_type, entry.reference_id) == ("bnpl.plan", str(plan.pk))
    call_command("ledger_verify")


def test_a_plan_is_written_off_once(late_plan, admin_user, unchanged_db):
    plan_write_off(plan_id=late_plan.pk, actor=admin_user)
    check = unchanged_db()
    with pytest.raises(PlanNotActive):
        plan_write_off(plan_id=late_plan.pk, actor=admin_user)
    check()


def test_the_delinquency_run_leaves_a_written_off_plan_and_its_block(
    customer, late_plan, admin_user
):
    assert BorrowerProfile.objects.get(customer=customer).blocked_at is not None
    plan_write_off(plan_id=late_plan.pk, actor=admin_user)
    run_delinquency("2026-04-16")
    plan = fresh(late_plan)
    assert (plan.status, plan.delinquency_bucket) == (PlanStatus.WRITTEN_OFF, "31-60")
    assert BorrowerProfile.objects.get(customer=customer).blocked_at is not None


# --- recovery -------------------------------------------------------------------------


def test_recoveries_reduce_the_expense_up_to_what_was_written_off(
    customer, late_plan, admin_user, unchanged_db
):
    plan_write_off(plan_id=late_plan.pk, actor=admin_user)
    recovery = plan_recovery_record(
        plan_id=late_plan.pk,
        amount=Money.parse("250.00", "EUR"),
        key="bank:TR-1",
        actor=admin_user,
        note="bank transfer TR-1",
    )
    assert (recovery.amount, recovery.source, recovery.recorded_by) == (
        25000,
        "cash_clearing:EUR",
        admin_user,
    )
    assert fresh(late_plan).recovered_amount == 25000
    assert balances(customer) == {
        "receivable": 0,
        "write_off": 35000,
        "cash": 55000,
        "fee_income": 0,
    }

    again = plan_recovery_record(
        plan_id=late_plan.pk, amount=Money.parse("250.00", "EUR"), key="bank:TR-1", actor=admin_user
    )
    assert again.pk == recovery.pk
    assert fresh(late_plan).recovered_amount == 25000

    check = unchanged_db()
    with pytest.raises(RecoveryExceedsWriteOff) as refused:
        plan_recovery_record(
            plan_id=late_plan.pk,
            amount=Money.parse("350.01", "EUR"),
            key="bank:TR-2",
            actor=admin_user,
        )
    assert refused.value.fields == {"amount": ["A positive amount in EUR, at most 350.00."]}
    check()

    plan_recovery_record(
        plan_id=late_plan.pk, amount=Money.parse("350.00", "EUR"), key="bank:TR-3", actor=admin_user
    )
    assert fresh(late_plan).recovered_amount == 60000
    assert balances(customer)["write_off"] == 0
    assert PlanRecovery.objects.count() == 2
    call_command("ledger_verify")


def test_no_recovery_on_a_plan_that_is_not_written_off(late_plan, admin_user, unchanged_db):
    check = unchanged_db()
    with pytest.raises(PlanNotWrittenOff):
        plan_recovery_record(
            plan_id=late_plan.pk, amount=Money.parse("1.00", "EUR"), key="k", actor=admin_user
        )
    check()


# --- the admin ------------------------------------------------------------------------


def test_staff_write_off_in_the_admin_after_a_confirmation_page(late_plan, admin_client):
    url = reverse("admin:collections_delinquentplan_changelist")
    page = admin_client.post(url, {"action": "write_off", "_selected_action": [late_plan.pk]})
    assert page.status_code == 200
    assert b"Write off plans?" in page.content
    assert b"600.00 EUR" in page.content
    assert fresh(late_plan).status == PlanStatus.ACTIVE

    done = admin_client.post(
        url,
        {
            "action": "write_off",
            "_selected_action": [late_plan.pk],
            "confirm": "yes",
            "note": "no contact for 60 days",
        },
    )
    assert done.status_code == 302
    assert fresh(late_plan).status == PlanStatus.WRITTEN_OFF
    assert AuditEntry.objects.get(action="bnpl.plan_write_off").note == "no contact for 60 days"


def test_staff_record_a_recovery_in_the_admin_once_per_form(late_plan, admin_client, admin_user):
    plan_write_off(plan_id=late_plan.pk, actor=admin_user)
    url = reverse("admin:collections_delinquentplan_changelist")
    form = admin_client.post(url, {"action": "record_recovery", "_selected_action": [late_plan.pk]})
    assert form.status_code == 200
    assert b"600.00 EUR of the write-off is left" in form.content
    submit = {
        "action": "record_recovery",
        "_selected_action": [late_plan.pk],
        "amount": "100.00",
        "note": "cash desk",
        "key": "form-1",
    }
    assert admin_client.post(url, submit).status_code == 302
    assert admin_client.post(url, submit).status_code == 302  # a double submit
    assert fresh(late_plan).recovered_amount == 10000
    too_much = admin_client.post(url, {**submit, "amount": "600.00", "key": "form-2"})
    assert too_much.status_code == 200
    assert b"at most 500.00" in too_much.content
    assert fresh(late_plan).recovered_amount == 10000


def test_a_card_charge_that_lands_after_the_write_off_is_a_recovery(
    customer, late_plan, admin_user
):
    """An attempt in flight at the write-off may still be captured: the settlement books
    the money against the write-off expense instead of the (closed) installment."""
    plan_write_off(plan_id=late_plan.pk, actor=admin_user)
    second = installments(late_plan)[1]
    with transaction.atomic():
        plan, inst = locked_plan_installment(second.pk)
        installment_apply_payment(
            plan=plan,
            installment=inst,
            amount=Money.parse("315.00", "EUR"),
            source="gateway_clearing:EUR",
            kind="bnpl.installment_paid",
            reference_type="payments.transaction",
            reference_id="late-capture",
        )
    assert fresh(late_plan).recovered_amount == 31500
    assert balances(customer)["write_off"] == 60000 - 31500
    assert installments(late_plan)[1].status == InstallmentStatus.WRITTEN_OFF
    assert JournalEntry.objects.filter(kind="bnpl.recovery").count() == 1
    call_command("ledger_verify")


def test_the_delinquency_screens_list_the_late_plan(late_plan, admin_client):
    plans = admin_client.get(
        reverse("admin:collections_delinquentplan_changelist"), {"standing": "late"}
    )
    assert plans.status_code == 200
    assert plans.context["cl"].result_count == 1
    assert b"31-60" in plans.content
    assert reverse("reports-collections-admin").encode() in plans.content
    moves = admin_client.get(reverse("admin:collections_delinquencytransition_changelist"))
    assert moves.context["cl"].result_count == 1
    fees = admin_client.get(reverse("admin:collections_latefeecharge_changelist"))
    assert fees.context["cl"].result_count == 2
    assert b"15.00 EUR" in fees.content
