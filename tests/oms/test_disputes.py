"""Disputes are records on the order: opened and closed by the card processor's signed
notifications and by staff; while one is open, the financing plan's debits wait.

Real commits, the card processor in the payment sandbox, notifications over real HTTP.
"""

from __future__ import annotations

import json

import pytest
import requests
from celery import current_app
from django.test import Client
from django.urls import reverse

from core import clock
from core.models import AuditEntry
from core.money import Money
from ledger.models import Account, JournalEntry
from oms.models import Dispute, DisputeStatus
from oms.services import order_fulfil
from payments import crypto
from payments.models import PaymentTransaction, Provider, ProviderAccount, WebhookEvent
from payments.processing import gateway_for
from payments.services import provider_webhook_secret_rotate
from tests.factories import line, make_customer, money, saved_card, token_for
from tests.oms.dispute_helpers import (
    close_at_processor,
    deliver,
    dispute_at_processor,
    dispute_data,
    down_payment_charge,
    place_financed_order,
    plan_of,
    wire_card_notifications,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wired(sandbox, card_processor, live_server):
    yield from wire_card_notifications(sandbox, card_processor, live_server)


@pytest.fixture
def financed(customer, customer_api, stock, card_processor):
    return place_financed_order(customer, customer_api, stock)


def audit_actions(dispute: Dispute) -> list[str]:
    return list(
        AuditEntry.objects.filter(target_type="oms.dispute", target_id=str(dispute.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


# --- the card processor's notifications ----------------------------------------------------


def test_a_chargeback_notification_opens_a_dispute_and_pauses_the_plan_until_it_closes(
    financed, wired, sandbox, customer_api
):
    charge = down_payment_charge(financed)
    opened = dispute_at_processor(
        sandbox, charge.provider_reference, reason="product_not_received", amount=5_000
    )

    dispute = Dispute.objects.get()
    assert (dispute.order_id, dispute.payment_id, dispute.provider) == (
        financed.pk,
        charge.pk,
        "card",
    )
    assert (dispute.provider_dispute_id, dispute.status) == (opened["id"], DisputeStatus.OPEN)
    assert (dispute.amount, dispute.currency, dispute.reason) == (5_000, "EUR", opened["reason"])
    assert dispute.opened_by is None
    assert dispute.opened_via.startswith("webhook:card:evt_")
    plan = plan_of(financed)
    assert (plan.debits_paused, plan.paused_reason) == (True, "product_not_received")

    shown = customer_api.get(f"/api/v1/orders/{financed.pk}").json()["disputes"]
    assert shown == [
        {
            "id": dispute.pk,
            "status": "open",
            "reason": "product_not_received",
            "amount": money("50.00"),
            "provider": "card",
            "opened_by": "provider",
            "opened_at": shown[0]["opened_at"],
            "closed_at": None,
        }
    ]

    close_at_processor(sandbox, opened["id"], "won")
    dispute = Dispute.objects.get(pk=dispute.pk)
    assert dispute.status == DisputeStatus.WON
    assert dispute.closed_at is not None
    assert plan_of(financed).debits_paused is False
    assert audit_actions(dispute) == ["oms.dispute_opened", "oms.dispute_closed"]
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}


def test_a_repeated_notification_changes_nothing(financed, wired):
    charge = down_payment_charge(financed)
    first = deliver(wired, "evt_d1", "dispute.opened", dispute_data(charge, "open"))
    again = deliver(wired, "evt_d1", "dispute.opened", dispute_data(charge, "open"))
    # The same dispute told again under another event id: still one record.
    retold = deliver(wired, "evt_d2", "dispute.opened", dispute_data(charge, "open"))
    assert [r.status_code for r in (first, again, retold)] == [200, 200, 200]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    dispute = Dispute.objects.get()
    assert audit_actions(dispute) == ["oms.dispute_opened"]
    assert WebhookEvent.objects.count() == 2
    assert plan_of(financed).debits_paused is True


def test_a_close_that_arrives_before_its_open_creates_the_dispute_closed(financed, wired):
    charge = down_payment_charge(financed)
    deliver(wired, "evt_c", "dispute.closed", dispute_data(charge, "lost"))
    dispute = Dispute.objects.get()
    assert (dispute.status, dispute.closed_at is not None) == (DisputeStatus.LOST, True)
    assert plan_of(financed).debits_paused is False

    assert not JournalEntry.objects.filter(kind="oms.chargeback").exists()  # an installment

    deliver(wired, "evt_o", "dispute.opened", dispute_data(charge, "open"))  # late
    dispute = Dispute.objects.get(pk=dispute.pk)
    assert dispute.status == DisputeStatus.LOST
    assert plan_of(financed).debits_paused is False
    assert Dispute.objects.count() == 1
    assert audit_actions(dispute) == ["oms.dispute_opened", "oms.dispute_closed"]
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}


def test_the_plan_resumes_only_when_the_last_open_dispute_closes(financed, wired):
    charge = down_payment_charge(financed)
    deliver(wired, "evt_1", "dispute.opened", dispute_data(charge, "open", "dp_1"))
    deliver(wired, "evt_2", "dispute.opened", dispute_data(charge, "open", "dp_2"))
    assert plan_of(financed).paused_reason == "product_not_received; product_not_received"
    deliver(wired, "evt_3", "dispute.closed", dispute_data(charge, "won", "dp_1"))
    assert plan_of(financed).debits_paused is True
    deliver(wired, "evt_4", "dispute.closed", dispute_data(charge, "closed", "dp_2"))
    assert plan_of(financed).debits_paused is False
    assert sorted(Dispute.objects.values_list("status", flat=True)) == ["closed", "won"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"payment_id": "ch_nope"}, "no transaction 'ch_nope'"),
        ({"amount": "75.00"}, "amount must be a positive integer"),
        ({"status": "open"}, "a dispute.closed notification cannot say open"),
    ],
)
def test_a_notification_that_cannot_be_applied_is_failed_and_writes_nothing(
    financed, wired, change, error
):
    charge = down_payment_charge(financed)
    answer = deliver(wired, "evt_x", "dispute.closed", {**dispute_data(charge, "won"), **change})
    assert answer.status_code == 200
    event = WebhookEvent.objects.get()
    assert event.status == "failed"
    assert error in event.last_error
    assert not Dispute.objects.exists()
    assert plan_of(financed).debits_paused is False


# --- staff ---------------------------------------------------------------------------------


def test_staff_open_a_dispute_on_the_order_and_close_it_with_an_outcome(
    financed, admin_client, admin_user
):
    orders = reverse("admin:oms_order_changelist")
    blank = {"action": "open_disputes", "_selected_action": [financed.pk], "reason": ""}
    assert admin_client.post(orders, blank).status_code == 302
    assert not Dispute.objects.exists()  # a reason is required
    admin_client.post(orders, {**blank, "reason": "Customer called: not received", "amount": "40"})

    dispute = Dispute.objects.get()
    assert (dispute.status, dispute.amount, dispute.provider) == ("open", 4_000, "")
    assert (dispute.opened_by, dispute.opened_via) == (admin_user, "staff")
    assert plan_of(financed).paused_reason == "Customer called: not received"
    page = admin_client.get(reverse("admin:oms_order_change", args=[financed.pk]))
    assert b"Customer called: not received" in page.content

    admin_client.post(
        reverse("admin:oms_dispute_changelist"),
        {"action": "close_won", "_selected_action": [dispute.pk], "reason": "Tracking shows it"},
    )
    dispute = Dispute.objects.get(pk=dispute.pk)
    assert (dispute.status, dispute.closed_by, dispute.close_note) == (
        "won",
        admin_user,
        "Tracking shows it",
    )
    assert plan_of(financed).debits_paused is False
    audit = AuditEntry.objects.filter(target_type="oms.dispute").order_by("id")
    assert [(a.action, a.actor) for a in audit] == [
        ("oms.dispute_opened", admin_user),
        ("oms.dispute_closed", admin_user),
    ]
    assert audit[1].changes == {"status": {"old": "open", "new": "won"}}
    plan_audit = AuditEntry.objects.filter(target_type="bnpl.plan", action__startswith="bnpl.deb")
    assert list(plan_audit.order_by("id").values_list("action", flat=True)) == [
        "bnpl.debits_paused",
        "bnpl.debits_resumed",
    ]


def test_the_plan_admins_dispute_actions_go_through_the_orders_dispute_records(
    financed, admin_client, admin_user
):
    plan = plan_of(financed)
    plans = reverse("admin:bnpl_plan_changelist")
    admin_client.post(
        plans, {"action": "open_dispute", "_selected_action": [plan.pk], "note": "Chargeback 4711"}
    )
    dispute = Dispute.objects.get()
    assert (dispute.order_id, dispute.reason, dispute.opened_by) == (
        financed.pk,
        "Chargeback 4711",
        admin_user,
    )
    assert dispute.amount == financed.total
    paused = plan_of(financed)
    assert (paused.debits_paused, paused.paused_reason) == (True, "Chargeback 4711")

    admin_client.post(plans, {"action": "close_dispute", "_selected_action": [plan.pk]})
    dispute = Dispute.objects.get(pk=dispute.pk)
    assert dispute.status == DisputeStatus.CLOSED
    assert plan_of(financed).debits_paused is False


def test_a_closed_dispute_cannot_be_closed_again(financed, admin_client):
    from oms.disputes import dispute_close, dispute_open
    from oms.errors import DisputeAlreadyClosed

    dispute = dispute_open(order_id=financed.pk, reason="Damaged")
    dispute_close(dispute_id=dispute.pk, outcome="lost")
    with pytest.raises(DisputeAlreadyClosed):
        dispute_close(dispute_id=dispute.pk, outcome="won")
    assert Dispute.objects.get().status == DisputeStatus.LOST


# --- who sees them ---------------------------------------------------------------------------


def test_another_customer_cannot_see_the_orders_disputes(financed, customer_api):
    from oms.disputes import dispute_open

    dispute_open(order_id=financed.pk, reason="Not as described")
    own = customer_api.get(f"/api/v1/orders/{financed.pk}")
    assert [d["reason"] for d in own.json()["disputes"]] == [""]  # staff notes are internal
    assert "Not as described" not in own.content.decode()
    stranger = make_customer()
    client = Client(HTTP_AUTHORIZATION=f"Token {token_for(stranger)}")
    answer = client.get(f"/api/v1/orders/{financed.pk}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "oms.order_not_found"
    assert "Not as described" not in answer.content.decode()


# --- Klarna's dispute webhooks ---------------------------------------------------------------


@pytest.fixture
def klarna_shipped(customer, customer_api, stock, sandbox, live_server):
    """A 120.00 Klarna order, shipped (captured at Klarna); Klarna's webhooks go to the app."""
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.KLARNA,
        enabled=True,
        base_url=f"{sandbox}/klarna",
        credentials_encrypted=crypto.encrypt({"id": "merchant-1", "secret": "pw"}),
        created_at=now,
        updated_at=now,
    )
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    requests.post(
        f"{sandbox}/klarna/sandbox/webhooks",
        json={"webhook_url": f"{live_server.url}/webhooks/klarna/", "signing_key": secret},
        timeout=5,
    )
    stock("A", 10)
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    response = customer_api.post(
        "/api/v1/orders",
        {"payment_method": "klarna", "authorization_token": "tok_ok_9", "lines": [line("A")]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    order = order_fulfil(order_id=response.json()["id"])
    yield order, secret
    current_app.conf.task_always_eager = previous


def test_klarnas_signed_dispute_webhooks_open_and_close_a_dispute_on_the_order(
    klarna_shipped, sandbox, customer_api
):
    order, _ = klarna_shipped
    klarna_order = PaymentTransaction.objects.get(
        reference_type="oms.order", reference_id=str(order.pk)
    ).provider_reference
    opened = requests.post(
        f"{sandbox}/klarna/sandbox/orders/{klarna_order}/dispute",
        json={"reason": "PRODUCTS_OR_SERVICES_NOT_RECEIVED", "amount": 600},
        timeout=15,
    ).json()
    assert opened["webhook_status"] == 200, opened
    dispute = Dispute.objects.get()
    assert (dispute.order_id, dispute.provider, dispute.status, dispute.amount) == (
        order.pk,
        "klarna",
        "open",
        600,
    )
    assert dispute.provider_dispute_id == opened["dispute"]["payment_dispute_id"]

    closed = requests.post(
        f"{sandbox}/klarna/sandbox/disputes/{opened['id']}/close",
        json={"outcome": "LOST"},
        timeout=15,
    ).json()
    assert closed["webhook_status"] == 200, closed
    assert Dispute.objects.get().status == DisputeStatus.LOST
    assert not JournalEntry.objects.filter(kind="oms.chargeback").exists()  # Klarna bears it
    shown = customer_api.get(f"/api/v1/orders/{order.pk}").json()["disputes"]
    assert [(d["status"], d["provider"], d["amount"]) for d in shown] == [
        ("lost", "klarna", money("6.00"))
    ]


def test_a_klarna_webhook_with_a_wrong_signature_is_refused_and_nothing_stored(klarna_shipped):
    body = json.dumps(
        {"metadata": {"event_id": "e1", "event_type": "payment.dispute.state-change.initiated"}}
    ).encode()
    answer = Client().post(
        "/webhooks/klarna/",
        body,
        content_type="application/json",
        HTTP_KLARNA_SIGNATURE="0" * 64,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "webhooks.signature_invalid"
    assert not WebhookEvent.objects.exists()


# --- Afterpay's dispute notifications -------------------------------------------------------


def test_afterpays_signed_notifications_are_read_back_and_open_then_close_a_dispute(
    customer, customer_api, stock, sandbox, live_server, settings
):
    settings.PUBLIC_BASE_URL = live_server.url  # where Afterpay sends them
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.AFTERPAY,
        enabled=True,
        base_url=f"{sandbox}/afterpay",
        credentials_encrypted=crypto.encrypt({"id": "merchant-1", "secret": "pw"}),
        created_at=now,
        updated_at=now,
    )
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    requests.post(
        f"{sandbox}/afterpay/sandbox/webhooks",
        json={"webhook_url": f"{live_server.url}/webhooks/afterpay/", "hmac_key": secret},
        timeout=5,
    )
    stock("A", 10)
    token = gateway_for(account).create_checkout(
        amount=Money.parse("10.00", "EUR"),
        reference="cart:1",
        confirm_url="https://shop.example/confirm",
        cancel_url="https://shop.example/cancel",
    )["token"]
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    try:
        body = customer_api.post(
            "/api/v1/orders",
            {"payment_method": "afterpay", "authorization_token": token, "lines": [line("A")]},
            format="json",
        ).json()
        order = order_fulfil(order_id=body["id"])
        payment = PaymentTransaction.objects.get(
            reference_type="oms.order", reference_id=str(order.pk)
        )
        opened = requests.post(
            f"{sandbox}/afterpay/sandbox/payments/{payment.provider_reference}/dispute",
            json={"reason": "product_not_received", "amount": "4.00"},
            timeout=15,
        ).json()
        assert opened["webhook_status"] == 200, opened
        dispute = Dispute.objects.get()
        assert (dispute.order_id, dispute.provider, dispute.status, dispute.amount) == (
            order.pk,
            "afterpay",
            "open",
            400,
        )
        closed = requests.post(
            f"{sandbox}/afterpay/sandbox/disputes/{opened['dispute']['id']}/close",
            json={"outcome": "won"},
            timeout=15,
        ).json()
        assert closed["webhook_status"] == 200, closed
    finally:
        current_app.conf.task_always_eager = previous
    assert Dispute.objects.get().status == DisputeStatus.WON
    assert set(WebhookEvent.objects.values_list("event_type", "status")) == {
        ("dispute.created", "processed"),
        ("dispute.updated", "processed"),
    }


# --- a lost dispute's money --------------------------------------------------------------------


def ledger_balance(code: str) -> int:
    account = Account.objects.filter(code=code).first()
    return account.balance if account else 0


def test_a_lost_card_dispute_on_a_sale_books_the_chargeback_once_and_a_won_one_nothing(
    customer, customer_api, stock, wired, sandbox
):
    stock("A", 10)
    saved_card(customer, "pm_card")
    body = customer_api.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": "pm_card",
            "lines": [line("A", 1, "650.00")],
        },
        format="json",
    ).json()
    order_fulfil(order_id=body["id"])  # the card's 150.00 is captured
    charge = PaymentTransaction.objects.get(reference_type="oms.order", reference_id=body["id"])
    merchant, clearing = ledger_balance("merchant:EUR"), ledger_balance("gateway_clearing:EUR")

    won = dispute_at_processor(sandbox, charge.provider_reference, amount=5_000)
    close_at_processor(sandbox, won["id"], "won")
    lost = dispute_at_processor(sandbox, charge.provider_reference, amount=12_000)
    close_at_processor(sandbox, lost["id"], "lost")
    # A second lost dispute takes back at most what the sale still kept (3,000).
    again = dispute_at_processor(sandbox, charge.provider_reference, amount=15_000)
    close_at_processor(sandbox, again["id"], "lost")

    booked = dict(Dispute.objects.values_list("provider_dispute_id", "charged_back"))
    assert booked == {won["id"]: 0, lost["id"]: 12_000, again["id"]: 3_000}
    entries = JournalEntry.objects.filter(kind="oms.chargeback")
    assert entries.count() == 2
    assert ledger_balance("merchant:EUR") == merchant - 15_000
    assert ledger_balance("gateway_clearing:EUR") == clearing - 15_000


# --- a lost dispute on an installment's charge (issue 12, review 8) ---------------------------


def test_a_lost_dispute_on_an_installments_charge_makes_it_owed_again_once(
    financed, wired, sandbox
):
    from bnpl.models import InstallmentStatus

    charge = down_payment_charge(financed)
    plan = plan_of(financed)
    installment = plan.installments.get(number=0)
    assert installment.status == InstallmentStatus.PAID
    receivable = f"installments:{plan.customer_id}:EUR"
    before = {code: ledger_balance(code) for code in (receivable, "gateway_clearing:EUR")}

    # The processor takes back more than the 75.00 charge: at most 75.00 is booked.
    data = {**dispute_data(charge, "lost", "dp_inst"), "amount": 9_000}
    deliver(wired, "evt_lost", "dispute.closed", data)
    deliver(wired, "evt_lost_again", "dispute.closed", data)  # a repeat changes nothing

    dispute = Dispute.objects.get()
    assert (dispute.status, dispute.charged_back) == (DisputeStatus.LOST, 7_500)
    installment.refresh_from_db()
    assert installment.status == InstallmentStatus.SCHEDULED  # due today: owed again
    assert (installment.paid_principal, installment.paid_at) == (0, None)
    assert installment.outstanding == 7_500
    entries = JournalEntry.objects.filter(kind="bnpl.installment_charged_back")
    assert list(entries.values_list("reference_type", "reference_id")) == [
        ("oms.dispute", str(dispute.pk))
    ]
    assert ledger_balance(receivable) == before[receivable] + 7_500
    assert ledger_balance("gateway_clearing:EUR") == before["gateway_clearing:EUR"] - 7_500
    assert AuditEntry.objects.filter(
        action="bnpl.installment_charged_back",
        target_type="bnpl.installment",
        target_id=str(installment.pk),
    ).exists()
    assert plan_of(financed).debits_paused is False  # closed: collections may debit it


def test_a_lost_dispute_on_a_debited_installment_schedules_its_debit_again(
    financed, wired, django_capture_on_commit_callbacks
):
    from bnpl.models import DebitRequestStatus, InstallmentStatus
    from bnpl.services import due_moment
    from tests.collections.debit_helpers import run_day

    first = plan_of(financed).installments.get(number=1)
    run_day(first.due_date, django_capture_on_commit_callbacks)  # debited on its due date
    first.refresh_from_db()
    assert first.status == InstallmentStatus.PAID
    paid = PaymentTransaction.objects.get(
        reference_type="bnpl.installment", reference_id=str(first.pk)
    )
    owed = first.principal + first.interest + first.fee

    deliver(wired, "evt_first", "dispute.closed", {**dispute_data(paid, "lost"), "amount": owed})

    first.refresh_from_db()
    assert (first.status, first.outstanding, first.paid_at) == (
        InstallmentStatus.SCHEDULED,
        owed,
        None,
    )
    request = first.debit_request
    assert (request.status, request.next_attempt_at) == (
        DebitRequestStatus.SCHEDULED,
        due_moment(first.due_date),
    )
    assert Dispute.objects.get().charged_back == owed


# --- the provider's word after staff closed its dispute ------------------------------------


def card_sale(customer, customer_api, stock) -> PaymentTransaction:
    """A fulfilled 650.00 order paid 500.00 from the wallet and 150.00 by card."""
    stock("A", 10)
    saved_card(customer, "pm_card")
    body = customer_api.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": "pm_card",
            "lines": [line("A", 1, "650.00")],
        },
        format="json",
    ).json()
    order_fulfil(order_id=body["id"])  # the card's 150.00 is captured
    return PaymentTransaction.objects.get(reference_type="oms.order", reference_id=body["id"])


def test_the_processors_lost_after_staff_closed_its_dispute_still_books_the_chargeback(
    customer, customer_api, stock, wired, sandbox, admin_client
):
    charge = card_sale(customer, customer_api, stock)
    opened = dispute_at_processor(sandbox, charge.provider_reference, amount=12_000)
    dispute = Dispute.objects.get()
    answer = admin_client.post(
        reverse("admin:oms_dispute_changelist"),
        {"action": "close_withdrawn", "_selected_action": [dispute.pk], "reason": "withdrawn?"},
        follow=True,
    )
    shown = [str(m) for m in answer.context["messages"]]
    assert any(f"Dispute #{dispute.pk} is card's: if card decides it lost" in m for m in shown)
    close_at_processor(sandbox, opened["id"], "lost")  # the processor takes 120.00 back

    dispute = Dispute.objects.get(pk=dispute.pk)
    assert (dispute.status, dispute.charged_back) == (DisputeStatus.LOST, 12_000)
    assert JournalEntry.objects.filter(kind="oms.chargeback").count() == 1
    assert audit_actions(dispute) == [
        "oms.dispute_opened",
        "oms.dispute_closed",
        "oms.dispute_outcome_from_provider",
    ]
    repeat = {**dispute_data(charge, "lost", opened["id"]), "amount": 12_000}
    deliver(wired, "evt_repeat", "dispute.closed", repeat)  # a repeat changes nothing
    assert JournalEntry.objects.filter(kind="oms.chargeback").count() == 1


# --- a notice in another currency -----------------------------------------------------------


def test_a_dispute_in_another_currency_than_its_payment_is_failed_and_books_nothing(
    customer, customer_api, stock, wired
):
    charge = card_sale(customer, customer_api, stock)
    data = {**dispute_data(charge, "lost"), "amount": 9_000, "currency": "JPY"}  # ¥9,000
    deliver(wired, "evt_jpy", "dispute.closed", data)
    event = WebhookEvent.objects.get()
    assert event.status == "failed"
    assert event.last_error.startswith("payments.dispute_currency_mismatch")
    assert event.next_attempt_at is None  # it will not pass: a person looks at it
    assert not Dispute.objects.exists()
    assert not JournalEntry.objects.filter(kind="oms.chargeback").exists()


# --- notifications that failed for a passing reason -----------------------------------------


def test_a_failed_dispute_notification_is_applied_on_its_redelivery(financed, wired):
    charge = down_payment_charge(financed)
    real = charge.provider_reference
    PaymentTransaction.objects.filter(pk=charge.pk).update(provider_reference="ch_not_yet")
    deliver(wired, "evt_r", "dispute.opened", dispute_data(charge, "open"))
    assert WebhookEvent.objects.get().status == "failed"
    PaymentTransaction.objects.filter(pk=charge.pk).update(provider_reference=real)

    again = deliver(wired, "evt_r", "dispute.opened", dispute_data(charge, "open"))
    assert again.json()["duplicate"] is True
    assert WebhookEvent.objects.get().status == "processed"
    assert plan_of(financed).debits_paused is True  # the chargeback is open at the processor


def test_a_failed_dispute_notification_is_tried_again_later_with_backoff(financed, wired):
    from datetime import timedelta

    from payments.disputes import dispute_events_retry

    charge = down_payment_charge(financed)
    real = charge.provider_reference
    PaymentTransaction.objects.filter(pk=charge.pk).update(provider_reference="ch_not_yet")
    deliver(wired, "evt_b", "dispute.opened", dispute_data(charge, "open"))
    event = WebhookEvent.objects.get()
    assert (event.status, event.attempts) == ("failed", 1)
    first = event.next_attempt_at
    assert timedelta(minutes=1) <= first - event.received_at < timedelta(minutes=2)
    assert dispute_events_retry() == {}  # not due yet
    with clock.travel_to(first + timedelta(seconds=1)):
        assert dispute_events_retry() == {"failed": 1}  # still no such payment
    event.refresh_from_db()
    assert timedelta(minutes=5) < event.next_attempt_at - first < timedelta(minutes=6)

    PaymentTransaction.objects.filter(pk=charge.pk).update(provider_reference=real)
    with clock.travel_to(event.next_attempt_at + timedelta(seconds=1)):
        assert dispute_events_retry() == {"processed": 1}
    event.refresh_from_db()
    assert (event.status, event.attempts, event.next_attempt_at) == ("processed", 3, None)
    assert plan_of(financed).debits_paused is True


def test_an_unreadable_dispute_notification_is_not_tried_again(financed, wired):
    charge = down_payment_charge(financed)
    deliver(wired, "evt_u", "dispute.opened", {**dispute_data(charge, "open"), "amount": -1})
    event = WebhookEvent.objects.get()
    assert (event.status, event.next_attempt_at) == ("failed", None)


# --- lock order ------------------------------------------------------------------------------


def locked_tables(queries) -> list[str]:
    """The tables locked (FOR [NO KEY] UPDATE) or written to the ledger, in order."""
    seen = []
    for query in queries:
        sql = query["sql"]
        table = sql.split(" FROM ", 1)[-1].split()[0].strip('"') if " FROM " in sql else ""
        if "FOR NO KEY UPDATE" in sql or "FOR UPDATE" in sql:
            seen.append(table)
        elif sql.startswith('INSERT INTO "ledger_'):
            seen.append("ledger insert")
    return seen


@pytest.mark.postgres  # reads the row-lock statements; SQLite takes no row locks
@pytest.mark.parametrize("sale", ["card", "installment"])
def test_a_lost_dispute_locks_order_then_plan_then_payment_before_the_ledger(
    sale, customer, customer_api, stock, card_processor
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from oms.disputes import dispute_notice_apply
    from payments.events import DisputeNotice

    if sale == "card":
        charge = card_sale(customer, customer_api, stock)
        order_id = int(charge.reference_id)
    else:
        order = place_financed_order(customer, customer_api, stock)
        charge, order_id = down_payment_charge(order), order.pk
    notice = DisputeNotice(
        provider="card",
        dispute_id="dp_lock",
        payment_id=charge.pk,
        reference_id=charge.reference_id,
        status="lost",
        reason="fraudulent",
        amount=Money(5_000, "EUR"),
        via="webhook:card:evt_lock",
    )
    with CaptureQueriesContext(connection) as queries:
        dispute_notice_apply(order_id=order_id, notice=notice)
    assert Dispute.objects.get().charged_back == 5_000
    order = locked_tables(queries.captured_queries)
    assert order[0] == "oms_order"
    payment = order.index("payments_paymenttransaction")
    ledger = min(i for i, table in enumerate(order) if table.startswith("ledger"))
    assert payment < ledger
    if sale == "installment":
        assert order.index("bnpl_plan") < order.index("bnpl_installment") < payment


# --- Afterpay's signature, and bad signatures ------------------------------------------------


@pytest.fixture
def afterpay_secret(sandbox):
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.AFTERPAY,
        enabled=True,
        base_url=f"{sandbox}/afterpay",
        credentials_encrypted=crypto.encrypt({"id": "merchant-1", "secret": "pw"}),
        created_at=now,
        updated_at=now,
    )
    return provider_webhook_secret_rotate(account_id=account.pk)


def afterpay_post(secret: str, url: str, *, date: int | None = None, signature: str = ""):
    import base64
    import hashlib
    import hmac
    import time

    body = json.dumps(
        {
            "webhook_event_id": "we_1",
            "webhook_event_type": "created",
            "dispute_id": "dp_1",
            "merchant_reference": "order-1",
        }
    ).encode()
    date = int(time.time()) if date is None else date
    message = f"{url}\n{date}\n".encode() + body
    signed = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    return Client().post(
        "/webhooks/afterpay/",
        body,
        content_type="application/json",
        HTTP_X_AFTERPAY_REQUEST_DATE=str(date),
        HTTP_X_AFTERPAY_REQUEST_SIGNATURE=signature or signed.decode(),
    )


def test_afterpays_signature_is_checked_against_the_registered_public_url(
    afterpay_secret, settings
):
    # Behind a TLS proxy the app sees http://testserver/…; Afterpay signed the public URL.
    settings.PUBLIC_BASE_URL = "https://shop.example"
    answer = afterpay_post(afterpay_secret, "https://shop.example/webhooks/afterpay/")
    assert answer.status_code == 200, answer.json()
    assert WebhookEvent.objects.get().event_id == "we_1"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"signature": "c2lnbmVk"}, "webhooks.signature_invalid"),
        ({"date": 1_000_000_000}, "webhooks.timestamp_out_of_tolerance"),
        ({"signature": "\u00e9t\u00e9"}, "webhooks.signature_invalid"),
    ],
)
def test_an_afterpay_notification_badly_signed_or_stale_is_refused_and_nothing_stored(
    afterpay_secret, settings, change, code
):
    settings.PUBLIC_BASE_URL = "https://shop.example"
    answer = afterpay_post(afterpay_secret, "https://shop.example/webhooks/afterpay/", **change)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code
    assert not WebhookEvent.objects.exists()


def test_a_non_ascii_card_signature_on_a_dispute_notification_is_a_400(wired):
    import time

    body = b'{"id": "e", "type": "dispute.opened", "data": {}}'
    answer = Client(raise_request_exception=False).post(
        "/webhooks/card/",
        body,
        content_type="application/json",
        HTTP_WEBHOOK_SIGNATURE=f"t={int(time.time())},v1=\u00e9",
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "webhooks.signature_malformed"
    assert not WebhookEvent.objects.exists()


# --- the dispute's records --------------------------------------------------------------------


def test_a_notification_naming_another_orders_dispute_is_refused(
    customer, customer_api, stock, wired, sandbox
):
    first = card_sale(customer, customer_api, stock)
    second = card_sale(customer, customer_api, stock)
    deliver(wired, "evt_1", "dispute.opened", dispute_data(first, "open", "dp_same"))
    deliver(wired, "evt_2", "dispute.closed", dispute_data(second, "lost", "dp_same"))

    dispute = Dispute.objects.get()
    assert (dispute.order_id, dispute.status) == (int(first.reference_id), DisputeStatus.OPEN)
    event = WebhookEvent.objects.get(event_id="evt_2")
    assert event.status == "failed"
    assert "oms.dispute_on_another_order" in event.last_error
    assert not JournalEntry.objects.filter(kind="oms.chargeback").exists()


def test_what_a_dispute_charged_back_stays_within_its_amount(financed):
    from django.db import IntegrityError, transaction

    from oms.disputes import dispute_open

    dispute = dispute_open(order_id=financed.pk, reason="Damaged", amount=money_of("40.00"))
    for wrong in (-1, 4_001):
        with pytest.raises(IntegrityError), transaction.atomic():
            Dispute.objects.filter(pk=dispute.pk).update(charged_back=wrong)
    Dispute.objects.filter(pk=dispute.pk).update(charged_back=4_000)


def money_of(amount: str) -> Money:
    return Money.parse(amount, "EUR")


def test_plans_paused_before_dispute_records_get_a_staff_dispute_so_they_stay_paused(
    financed, wired
):
    from importlib import import_module

    from django.apps import apps

    from bnpl.models import Plan

    forwards = import_module("oms.migrations.0008_dispute_for_paused_plans").forwards
    plan = plan_of(financed)
    Plan.objects.filter(pk=plan.pk).update(debits_paused=True, paused_reason="Chargeback 4711")
    forwards(apps, None)
    forwards(apps, None)  # again: nothing new
    dispute = Dispute.objects.get()
    assert (dispute.order_id, dispute.provider, dispute.reason, dispute.status) == (
        financed.pk,
        "",
        "Chargeback 4711",
        DisputeStatus.OPEN,
    )
    assert dispute.amount == financed.total

    # A provider's dispute opened and closed meanwhile leaves the plan paused.
    charge = down_payment_charge(financed)
    deliver(wired, "evt_o", "dispute.opened", dispute_data(charge, "open", "dp_new"))
    deliver(wired, "evt_c", "dispute.closed", dispute_data(charge, "won", "dp_new"))
    paused = plan_of(financed)
    assert (paused.debits_paused, paused.paused_reason) == (True, "Chargeback 4711")
